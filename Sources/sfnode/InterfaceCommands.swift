import ArgumentParser
import Foundation
import SFControl
import SFStore

/// `sfnode interface …`: floating addresses. An interface is named by its UUID or its MAC address.
struct InterfaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "interface", abstract: "Show interfaces and give them floating addresses.",
        subcommands: [Show.self, Float.self, Defloat.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an interface.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The interface's UUID or MAC address.") var interface: String

        func run() async throws {
            try InterfaceCommand.show(try await options.control().interface(interface, namespace: options.namespace), options)
        }
    }

    struct Float: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give an interface a floating address and wait for it.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The interface's UUID or MAC address.") var interface: String
        @Option(help: "How long to wait, in seconds.") var timeout = 120

        func run() async throws {
            let control = try options.control()
            let queued = try await control.float(interface, namespace: options.namespace)
            let floated = try await InterfaceCommand.wait(for: queued, control, timeout: timeout) { $0.floating != nil }
            try InterfaceCommand.show(floated, options)
        }
    }

    struct Defloat: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release an interface's floating address and wait for it.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The interface's UUID or MAC address.") var interface: String
        @Option(help: "How long to wait, in seconds.") var timeout = 120

        func run() async throws {
            let control = try options.control()
            let queued = try await control.defloat(interface, namespace: options.namespace)
            let defloated = try await InterfaceCommand.wait(for: queued, control, timeout: timeout) { $0.floating == nil }
            try InterfaceCommand.show(defloated, options)
        }
    }

    /// Waits until `done` holds for the interface, then a moment for its job to finish (the
    /// address is stored before the rules are programmed).
    static func wait(for interface: Interface, _ control: Control, timeout: Int, until done: (Interface) -> Bool) async throws -> Interface {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while ContinuousClock.now < deadline {
            let current = try await control.interface(interface.uuid.lowercasedString)
            if done(current), try await !control.hasPendingJobs(.interface(interface.uuid)) { return current }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ValidationError("interface \(interface.uuid.lowercasedString) did not change within \(timeout) s; see sfnode job list for its job's error")
    }

    static func show(_ interface: Interface, _ options: ClientOptions) throws {
        let output = Output(json: options.json)
        if options.json { return try output.printJSON(interface) }
        output.printFields([
            ("uuid", interface.uuid.lowercasedString), ("instance", interface.instanceUUID.lowercasedString), ("network", interface.networkUUID.lowercasedString),
            ("macaddr", interface.macaddr.description), ("ipv4", interface.ipv4.orNone), ("floating", interface.floating.orNone),
            ("model", interface.model), ("order", "\(interface.order)"), ("state", interface.state.rawValue),
        ])
    }
}
