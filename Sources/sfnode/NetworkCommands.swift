import ArgumentParser
import Foundation
import SFControl
import SFStore

/// `sfnode network …`: sf-client's network verbs.
struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "Create, list, show, delete and ping networks.",
        subcommands: [Create.self, List.self, Show.self, Delete.self, Ping.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a network (NAT and DHCP unless turned off).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The network's name.") var name: String
        @Argument(help: "Its range, such as 10.0.0.0/24 (host bits clear, /8 to /29, IPv4 only).") var netblock: String
        @Flag(help: "Do not run DHCP on it.") var noDHCP = false
        @Flag(help: "Do not give it outside access through NAT.") var noNAT = false
        @Flag(inversion: .prefixedNo, help: "Answer DNS for its instances' names on the router address.") var dns = false

        func run() async throws {
            let network = try await options.control().createNetwork(
                name: name, netblock: netblock, provideDHCP: !noDHCP, provideNAT: !noNAT, provideDNS: dns, namespace: options.namespace)
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

    struct Ping: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ping an address on a network from inside its namespace (10 requests, 1 s apart), on the network node.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The network's UUID or name.") var network: String
        @Argument(help: "The address to ping, within the network's range.") var address: String

        func run() async throws {
            let report = try await options.control().ping(network: network, address: address, namespace: options.namespace)
            if options.json { return try Output(json: true).printJSON(["stdout": report.lines + [""], "stderr": [""]]) }
            for line in report.lines { print(line) }
        }
    }

    static func show(_ network: Network, _ options: ClientOptions) throws {
        let output = Output(json: options.json)
        if options.json { return try output.printJSON(network) }
        output.printFields([
            ("uuid", network.uuid.lowercasedString), ("name", network.name), ("namespace", network.namespace),
            ("netblock", network.netblock.description), ("provide dhcp", "\(network.provideDHCP)"),
            ("provide nat", "\(network.provideNAT)"), ("provide dns", "\(network.provideDNS)"), ("vxlan id", "\(network.vxid)"), ("state", network.state.rawValue),
            ("floating gateway", network.floatingGateway.orNone),
        ])
    }
}

private func show(_ network: Network, _ options: ClientOptions) throws { try NetworkCommand.show(network, options) }
