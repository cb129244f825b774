import ArgumentParser
import Foundation
import Logging
import SFFirewall
import SFDaemonSupport
import SFLibvirt
import SFNetlink
import SFSystem

/// The one sfnode executable: the agent daemon (the default) and the operator's commands.
@main
struct SFNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sfnode",
        abstract: "The node agent of a Shaken Fist-style cloud.",
        version: SFNodeVersion.current,
        subcommands: [
            AgentCommand.self, ServeCommand.self, APICommand.self, NetworkCommand.self, InstanceCommand.self, InterfaceCommand.self, EventsCommand.self,
            StateCommand.self, HostCommand.self, DoctorCommand.self, JobCommand.self, NamespaceCommand.self, NodeCommand.self,
            ArtifactCommand.self, BlobCommand.self, LabelCommand.self,
        ],
        defaultSubcommand: AgentCommand.self)
}

/// `sfnode host`: what libvirt, netlink and the firewall see on this host. Changes nothing.
struct HostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host", abstract: "Show what sfnode's host plumbing sees on this machine (read-only).")

    @Option(help: "The libvirt connection URI.")
    var libvirtURI = "qemu:///system"

    @Option(help: "The virtualization type: kvm, qemu or auto.")
    var virtType: VirtualizationType = .auto

    @Option(help: "The network namespace sfnode treats as the host's (default: the process's own).")
    var hostNamespace: String?

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let logger = Logger(label: "sfnode")
        print("virtualization type: \(virtType.resolved(logger: logger).rawValue) (configured: \(virtType.rawValue))")

        let libvirt = try LibvirtConnection(uri: libvirtURI, logger: logger)
        do {
            let domains = try await libvirt.domains()
            print("libvirt \(libvirtURI): \(domains.count) domains")
            for domain in domains { print("  \(domain.identity) \(domain.powerState.rawValue)") }
        } catch {
            // Unknown is not gone: say that libvirt could not be read, and carry on with the rest.
            print("libvirt \(libvirtURI): unreadable: \(error)")
        }

        let thread = try NamespaceExecutor(namespace: hostNamespace)
        let links = try await NetlinkSession(thread: thread, logger: logger).links()
        print("links in \(hostNamespace ?? "the process's namespace"): \(links.count)")
        for link in links { print("  \(link.index) \(link.name) \(link.kind) mtu \(link.mtu) \(link.isUp ? "up" : "down")") }
        let rules = try await Firewall(thread: thread, logger: logger).currentState().rules
        print("firewall rules in sfnode's chains: \(rules.count)")
        for rule in rules { print("  \(rule)") }
        print("network namespaces: \(NetworkNamespace.list().joined(separator: " "))")
    }
}

extension VirtualizationType: ExpressibleByArgument {}
