import Foundation
import Logging
import SFDaemonSupport
import SFFirewall
import SFLibvirt
import SFNetlink
import SFSystem

/// Takes off this host everything sfnode made on it (`sfnode host reset`; removing the Debian
/// package runs it): its domains, the networks' dnsmasq servers and namespaces, the links it made in
/// the host namespace (the egress bridge, the networks' devices, taps) and its firewall chains with
/// the jumps into them. Only what sfnode's names and marks say is its own: a domain must carry
/// sfnode's metadata as well as its name prefix. The store and the blobs stay (they are data, not
/// plumbing); so does anything another program made.
///
/// While any of sfnode's guests runs, it refuses and changes nothing, unless `force` (the guests
/// are then destroyed). Stop the agent first, or it builds everything again.
public enum HostReset {
    /// What a reset removed.
    public struct Report: Sendable, Equatable, Encodable {
        public var domains: [String] = []
        public var dnsmasqDirectories: [String] = []
        public var namespaces: [String] = []
        public var links: [String] = []
        public var firewallChains = false
    }

    public static func run(settings: NodeConfiguration, force: Bool, logger: Logger) async throws -> Report {
        let layout = hostLayout(settings: settings)
        var report = Report()

        let libvirt = try LibvirtConnection(uri: settings.libvirtURI, logger: logger)
        defer { Task { await libvirt.close() } }
        var ours: [DomainStatus] = []
        for domain in try await libvirt.domains() where domain.identity.name.hasPrefix(layout.namespacePrefix) {
            if try await libvirt.instanceUUID(of: .uuid(domain.identity.uuid)) != nil { ours.append(domain) }
        }
        let running = ours.filter { $0.powerState == .on || $0.powerState == .paused }
        if !running.isEmpty && !force {
            throw HostResetRefused(running: running.map(\.identity.name))
        }
        for domain in ours {
            try await libvirt.destroy(.uuid(domain.identity.uuid))
            try await libvirt.undefine(.uuid(domain.identity.uuid))
            report.domains.append(domain.identity.name)
        }

        // The networks' dnsmasq, which would otherwise keep their namespaces alive.
        let dhcp = settings.storagePath + "/dhcp"
        let root = try await NamespaceExecutor.start(namespace: nil)
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: dhcp)) ?? []).sorted() {
            try await DHCPServer.stop(directory: dhcp + "/" + name, thread: root, logger: logger)
            report.dnsmasqDirectories.append(name)
        }
        for namespace in NetworkNamespace.list().sorted() where namespace.hasPrefix(layout.namespacePrefix) {
            try NetworkNamespace.delete(named: namespace)
            report.namespaces.append(namespace)
        }
        let host = try NetlinkSession(namespace: settings.hostNamespace, logger: logger)
        for link in try await host.links().map(\.name).sorted() where layout.isAgentLink(link) {
            try await host.deleteLink(link)
            report.links.append(link)
        }
        let firewall = try Firewall(namespace: settings.hostNamespace, logger: logger)
        report.firewallChains = try await firewall.removeAll()
        logger.notice(
            "host reset", metadata: ["reset.domains": "\(report.domains.count)", "reset.namespaces": "\(report.namespaces.count)",
                "reset.links": "\(report.links.count)"])
        return report
    }
}

/// A reset refused because sfnode's guests run here.
public struct HostResetRefused: Error, CustomStringConvertible {
    public let running: [String]
    public var description: String {
        "\(running.count) of sfnode's guests run here (\(running.joined(separator: ", "))): delete their instances first, "
            + "or run sfnode host reset --force to destroy them; nothing was changed"
    }
}
