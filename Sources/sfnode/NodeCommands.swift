import ArgumentParser
import Foundation
import SFAPI
import SFControl
import SFStore

/// `sfnode node`: the cluster's nodes, as sf-client's `node list` and `node delete` show them.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "List the cluster's nodes, or delete one that is gone.", subcommands: [List.self, Delete.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the nodes: created, missing (not checked in lately) or deleted.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            let control = try options.control()
            let nodes = try await control.nodes()
            if options.json {
                var views: [JSONValue] = []
                for node in nodes { views.append(try await view(node, control)) }
                return try Output(json: true).printJSON(JSONValue.array(views))
            }
            let now = try await control.clock()
            Output(json: false).printTable(
                ["name", "state", "last seen", "roles"],
                nodes.map { node in
                    [node.name, control.state(of: node, now: now), node.lastSeen.map { "\($0)" } ?? "never", node.roles.map(\.rawValue).sorted().joined(separator: ",")]
                })
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a node that is gone for good, with its instances (their addresses are freed).",
            discussion: "A node that only stopped checking in is missing, not gone: delete it only when it will not come back.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The node's name.") var name: String

        func run() async throws {
            let control = try options.control()
            let node: Node
            do {
                node = try await control.deleteNode(named: name)
            } catch let error as ControlError where error.code == .notFound {
                throw CommandFailure("there is no node \(name); see sfnode node list")
            }
            if options.json { return print(try await view(node, control).jsonText()) }
            print("node \(name) deleted; its instances were deleted with it")
        }
    }
}

private func view(_ node: Node, _ control: Control) async throws -> JSONValue {
    try JSONValue.parse(WireJSON.node(node, metadata: try await control.metadata(.node(node.name)), state: control.state(of: node, now: try await control.clock())))
}
