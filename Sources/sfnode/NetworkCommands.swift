import ArgumentParser
import Foundation
import SFControl
import SFStore

/// `sfnode network …`: sf-client's network verbs.
struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "Create, list, show and delete networks.",
        subcommands: [Create.self, List.self, Show.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a network (NAT and DHCP unless turned off).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The network's name.") var name: String
        @Argument(help: "Its range, such as 10.0.0.0/24.") var netblock: String
        @Flag(help: "Do not run DHCP on it.") var noDHCP = false
        @Flag(help: "Do not give it outside access through NAT.") var noNAT = false

        func run() async throws {
            let network = try await options.control().createNetwork(
                name: name, netblock: netblock, provideDHCP: !noDHCP, provideNAT: !noNAT, namespace: options.namespace)
            try show(network, options)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List networks.")
        @OptionGroup var options: ClientOptions
        @Flag(help: "Include deleted networks.") var all = false

        func run() async throws {
            let networks = try await options.control().networks(namespace: options.namespace, includeDeleted: all)
            let output = Output(json: options.json)
            if options.json { return try output.printJSON(networks) }
            output.printTable(
                ["uuid", "name", "namespace", "netblock", "state"],
                networks.map { [$0.uuid.lowercasedString, $0.name, $0.namespace, $0.netblock.description, $0.state.rawValue] })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a network and its interfaces.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The network's UUID or name.") var network: String

        func run() async throws {
            let control = try options.control()
            try show(try await control.network(network, namespace: options.namespace), options)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a network (it waits in delete-wait while instances still use it).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The network's UUID or name.") var network: String

        func run() async throws {
            let deleted = try await options.control().deleteNetwork(network, namespace: options.namespace)
            if options.json { return try Output(json: true).printJSON(deleted) }
            print("deleting network \(deleted.uuid.lowercasedString) (\(deleted.name))")
        }
    }

    static func show(_ network: Network, _ options: ClientOptions) throws {
        let output = Output(json: options.json)
        if options.json { return try output.printJSON(network) }
        output.printFields([
            ("uuid", network.uuid.lowercasedString), ("name", network.name), ("namespace", network.namespace),
            ("netblock", network.netblock.description), ("provide dhcp", "\(network.provideDHCP)"),
            ("provide nat", "\(network.provideNAT)"), ("vxlan id", "\(network.vxid)"), ("state", network.state.rawValue),
            ("floating gateway", network.floatingGateway.orNone),
        ])
    }
}

private func show(_ network: Network, _ options: ClientOptions) throws { try NetworkCommand.show(network, options) }
