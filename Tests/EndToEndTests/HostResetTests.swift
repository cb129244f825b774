import Foundation
import Logging
import SFAgent
import SFFirewall
import SFLibvirt
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

/// `sfnode host reset` against what an agent leaves on a host, made here in a test namespace
/// standing for the host: it refuses while a guest of sfnode's runs, and with --force takes off
/// sfnode's domain, network namespace, links and firewall chains, and nothing that is not sfnode's.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root and libvirtd"))
struct HostResetTests {
    static let logger = Logger(label: "sfnode.test.reset", factory: { _ in SwiftLogNoOpLogHandler() })

    @Test func aResetTakesOffWhatSfnodeMadeAndRefusesWhileItsGuestsRun() async throws {
        let id = TestNames.unique("")
        let teardown = Teardown()
        let hostNamespace = id + "host"
        let directory = TestGuest.runDirectory + "/\(id)-reset"
        let layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let libvirt = try LibvirtConnection(logger: Self.logger)
        teardown.add("domains") {
            for domain in (try? await libvirt.domains()) ?? [] where domain.identity.name.hasPrefix(id) {
                try? await libvirt.destroy(.uuid(domain.identity.uuid))
                try? await libvirt.undefine(.uuid(domain.identity.uuid))
            }
            await libvirt.close()
        }
        teardown.add("directory") { try? FileManager.default.removeItem(atPath: directory) }
        let networkNamespace = layout.namespace(of: UUID())
        teardown.add("network namespace") { try? NetworkNamespace.delete(named: networkNamespace) }
        try teardown.createNamespaces([hostNamespace])
        do {
            // What an agent leaves: a network's namespace, its devices and a tap in the host
            // namespace, the egress bridge, sfnode's chains, and a guest of sfnode's (marked as such),
            // beside a link and a domain that only look like sfnode's.
            try FileManager.default.createDirectory(atPath: directory + "/storage", withIntermediateDirectories: true)
            try NetworkNamespace.create(named: networkNamespace)
            let host = try NetlinkSession(namespace: hostNamespace, logger: Self.logger)
            let made = [layout.egressBridge, layout.bridge(0x4242), layout.tap(of: UUID())]
            for link in made + ["keep" + id.suffix(4)] { try await host.createBridge(name: link) }
            let firewall = try Firewall(namespace: hostNamespace, logger: Self.logger)
            try await firewall.apply(FirewallState(rules: [.masquerade(source: IPv4Prefix("10.99.0.0/24")!, outInterface: "eth9")]))
            let guest = UUID()
            _ = try await libvirt.define(
                DomainSpec(name: layout.namespacePrefix + guest.lowercasedString, uuid: guest, type: .qemu, memoryMiB: 32, vcpus: 1, instanceUUID: guest))
            try await libvirt.start(.uuid(guest))
            let lookalike = UUID()
            _ = try await libvirt.define(
                DomainSpec(name: layout.namespacePrefix + lookalike.lowercasedString, uuid: lookalike, type: .qemu, memoryMiB: 32, vcpus: 1))

            let environment = AgentProcess.environment(
                directory: directory, storage: directory + "/storage", hostNamespace: hostNamespace, nodeName: id + "-node", prefix: id,
                floatingRange: "192.0.2.0/24", leaseSeconds: 5)
            let executable = try AgentProcess.executable()
            let refused = try ChildProcess.run(AgentProcess.command(executable, ["host", "reset"], environment: environment))
            #expect(refused.status != 0 && refused.stderr.contains("1 of sfnode's guests run here"), "\(refused.stderr)")
            #expect(refused.stderr.contains("--force") && refused.stderr.contains("nothing was changed"))
            #expect(try await libvirt.state(of: .uuid(guest)) == .on)
            #expect(Set(try await host.links().map(\.name)).isSuperset(of: made))

            let reset = try ChildProcess.run(AgentProcess.command(executable, ["host", "reset", "--force", "--json"], environment: environment))
            #expect(reset.status == 0, "\(reset.stderr)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(reset.stdout.utf8)) as? [String: Any], "\(reset.stdout)")
            #expect(report["domains"] as? [String] == [layout.namespacePrefix + guest.lowercasedString])
            #expect(report["namespaces"] as? [String] == [networkNamespace] && report["firewallChains"] as? Bool == true, "\(report)")
            #expect(try await libvirt.lookup(uuid: guest) == nil)
            #expect(try await libvirt.lookup(uuid: lookalike) != nil, "a domain without sfnode's mark is not sfnode's")
            #expect(!NetworkNamespace.list().contains(networkNamespace))
            #expect(try await host.links().map(\.name).filter { $0 != "lo" } == ["keep" + id.suffix(4)])
            #expect(try await firewall.currentState().rules.isEmpty)
            // Again: nothing left to remove, and no error.
            let again = try ChildProcess.run(AgentProcess.command(executable, ["host", "reset"], environment: environment))
            #expect(again.status == 0 && again.stdout.contains("removed 0 domains"), "\(again.stdout)\(again.stderr)")
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
    }
}
