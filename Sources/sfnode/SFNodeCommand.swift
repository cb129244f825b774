import ArgumentParser
import Foundation
import Logging
import SFFirewall
import SFDaemonSupport
import SFLibvirt
import SFAgent
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

/// `sfnode host`: what sfnode's plumbing sees on this host (`show`, the default), and `reset`.
struct HostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host", abstract: "Show what sfnode's host plumbing sees on this machine, or take it all off.",
        subcommands: [HostShowCommand.self, HostResetCommand.self], defaultSubcommand: HostShowCommand.self)
}

/// `sfnode host show`: what libvirt, netlink and the firewall see on this host. Changes nothing.
struct HostShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show what sfnode's host plumbing sees on this machine (read-only).")

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

/// `sfnode host reset`: everything sfnode made on this host, taken off (see ``HostReset``).
struct HostResetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Remove everything sfnode made on this host: its domains, network namespaces, dnsmasq, links and firewall chains.",
        discussion: """
            Stop the agent first (systemctl stop sfnode-agent), or it builds everything again. The store and the blobs \
            stay. While any of sfnode's guests runs, nothing is changed unless --force, which destroys them.
            """)

    @Option(help: "The configuration file (default: $SFNODE_CONFIG, else /etc/sfnode/agent.json).")
    var config: String?
    @Flag(help: "Destroy sfnode's running guests too.") var force = false
    @Flag(help: "Print what was removed as JSON, for scripts.") var json = false

    func run() async throws {
        let settings = try NodeConfiguration.load(commandLinePath: config)
        var logger = Logger(label: "sfnode.host-reset")
        logger.logLevel = .warning
        let report: HostReset.Report
        do {
            report = try await HostReset.run(settings: settings, force: force, logger: logger)
        } catch let refused as HostResetRefused {
            throw ValidationError(refused.description)
        }
        if json {
            print(String(decoding: try Output.encoder(pretty: true).encode(report), as: UTF8.self))
            return
        }
        print("removed \(report.domains.count) domains, \(report.dnsmasqDirectories.count) dnsmasq servers, \(report.namespaces.count) network namespaces, \(report.links.count) links"
            + (report.firewallChains ? ", and sfnode's firewall chains" : ""))
    }
}

extension VirtualizationType: ExpressibleByArgument {}
