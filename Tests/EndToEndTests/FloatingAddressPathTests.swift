import Foundation
import Logging
import SFAgent
import SFFirewall
import SFLibvirt
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The whole path a floating address takes, on the real kernel with a real guest:
///
///     outside ns ── egress veth ── network ns (router, dnsmasq, NAT) ── veth ── node ns (bridge, VXLAN) ── tap ── guest
///
/// Every namespace, device, rule, domain and process is the test's own, and all of it is gone afterwards.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct FloatingAddressPathTests {
    static let privateNetwork = IPv4Prefix("10.77.0.0/24")!
    static let router = IPv4Prefix("10.77.0.1/24")!
    static let guestAddress = IPv4Address("10.77.0.10")!
    static let floatingGateway = IPv4Prefix("192.0.2.1/24")!
    static let floatingAddress = IPv4Address("192.0.2.10")!
    static let outsideAddress = IPv4Prefix("192.0.2.254/24")!

    @Test func floatingAddressReachesTheGuestAndItsConnectionsLeaveFromIt() async throws {
        let logger = Logger(label: "sfnode.test.e2e")
        let id = TestNames.unique("")
        let names = (
            node: id + "node", network: id + "net", outside: id + "out", bridge: id + "br", vxlan: id + "vx",
            vethBridge: id + "vb", vethRouter: id + "vr", egress: id + "eg", outsideLink: id + "ex", tap: id + "tap",
            domain: id + "vm"
        )
        let mac = try MACAddress(octets: [0x02, 0x00, 0x00] + (0..<3).map { _ in UInt8.random(in: 0...255) })
        let teardown = Teardown()
        let libvirt = try LibvirtConnection(logger: logger)

        do {
            let baseImage = TestGuest.baseImage
            try #require(FileManager.default.fileExists(atPath: baseImage), "run scripts/build-test-image first")
            try teardown.createNamespaces([names.node, names.network, names.outside])
            let node = try NetlinkSession(namespace: names.node, logger: logger)
            let network = try NetlinkSession(namespace: names.network, logger: logger)
            let outside = try NetlinkSession(namespace: names.outside, logger: logger)
            let host = try NetlinkSession(namespace: nil, logger: logger)

            // Node: a bridge and a VXLAN on it.
            try await node.createBridge(name: names.bridge, mtu: 1450)
            try await node.createVXLAN(name: names.vxlan, id: 4242, underlay: nil, local: nil, mtu: 1450)
            try await node.setMaster(names.vxlan, master: names.bridge)
            // Network: a veth into the bridge holding the router address, and an egress veth to the outside.
            try await node.createVethPair(
                name: names.vethBridge, peer: names.vethRouter, peerNamespace: names.network, mtu: 1450)
            try await node.setMaster(names.vethBridge, master: names.bridge)
            for link in [names.bridge, names.vxlan, names.vethBridge] { try await node.setLinkUp(link, true) }
            try await network.createVethPair(
                name: names.egress, peer: names.outsideLink, peerNamespace: names.outside, mtu: 1500)
            try await network.addAddress(Self.router, to: names.vethRouter)
            try await network.addAddress(Self.floatingGateway, to: names.egress)
            // The floating address lives on the egress side so that the network namespace answers ARP for it.
            try await network.addAddress(IPv4Prefix(address: Self.floatingAddress, length: 32), to: names.egress)
            for link in ["lo", names.vethRouter, names.egress] { try await network.setLinkUp(link, true) }
            try await network.setSysctl("net/ipv4/ip_forward", "1")
            try await outside.addAddress(Self.outsideAddress, to: names.outsideLink)
            for link in ["lo", names.outsideLink] { try await outside.setLinkUp(link, true) }

            // DHCP for the guest, inside the network namespace, with no DNS at all.
            // The agent's own dnsmasq manager, spawning from a thread inside the namespace.
            let dhcp = DHCPServer(
                directory: TestGuest.runDirectory + "/\(id)-dhcp", interface: names.vethRouter, router: Self.router,
                thread: try await NamespaceExecutor.start(namespace: names.network), logger: logger)
            teardown.add("dnsmasq") { try await dhcp.stop() }
            #expect(try await dhcp.ensure(hosts: [DHCPHost(mac: mac, address: Self.guestAddress)]) == .started)

            // The guest: a tap made through netlink in the root namespace, the one thing a test makes there
            // (libvirtd opens an unmanaged tap by name in its own namespace), moved into the node namespace
            // once QEMU holds it, and enslaved to the bridge there. No address or rule ever goes on it.
            teardown.add("tap \(names.tap)") { try await host.deleteLink(names.tap) }
            try await host.createTap(name: names.tap)
            let overlay = try TestGuest.makeOverlay(named: names.domain)
            let serial = TestGuest.runDirectory + "/\(names.domain).serial"
            teardown.add("guest files") {
                try? FileManager.default.removeItem(atPath: overlay)
                try? FileManager.default.removeItem(atPath: serial)
            }
            let spec = DomainSpec(
                name: names.domain, type: .qemu, memoryMiB: 256, vcpus: 1,
                disks: [.init(path: overlay)], interfaces: [.init(tapDevice: names.tap, mac: mac)],
                serialLogPath: serial)
            try await libvirt.define(spec)
            teardown.add("domain \(names.domain)") {
                try await libvirt.destroy(.name(names.domain))
                try await libvirt.undefine(.name(names.domain))
            }
            try await libvirt.start(.name(names.domain))
            try await host.moveLink(names.tap, toNamespace: names.node)
            try await node.setMaster(names.tap, master: names.bridge)
            try await node.setLinkUp(names.tap, true)

            let console = try await TestGuest.waitForSerial(path: serial, containing: "SFNODE-GUEST-READY", timeout: .seconds(180))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == Self.guestAddress.description)

            // Float: DNAT in, SNAT out, masquerade for the rest of the network, forwarding both ways.
            let firewall = try Firewall(namespace: names.network, logger: logger)
            let floated = FirewallState(rules: [
                .dnat(floating: Self.floatingAddress, to: Self.guestAddress),
                .snat(source: Self.guestAddress, to: Self.floatingAddress),
                .masquerade(source: Self.privateNetwork, outInterface: names.egress),
                .forwardAccept(inInterface: names.vethRouter, outInterface: names.egress),
                .forwardAccept(inInterface: names.egress, outInterface: names.vethRouter),
            ])
            try await firewall.apply(floated)

            // In: the outside reaches the guest's web server through the floating address.
            let body = try await NamespaceSockets.httpGet(from: names.outside, host: Self.floatingAddress)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)

            // Out: a connection the guest opens to the outside arrives from the floating address (SNAT), not
            // from the network's gateway (which is what MASQUERADE alone would give).
            let outsideListener = IPv4Address(Self.outsideAddress.address.value)
            let listener = try await TestListener.open(in: names.outside, address: outsideListener, port: 9000)
            async let accepted = listener.acceptOne()
            _ = try await NamespaceSockets.httpGet(
                from: names.outside, host: Self.floatingAddress, path: TestGuest.probePath(to: outsideListener, port: 9000),
                timeoutSeconds: 15)
            let connection = try await accepted
            #expect(connection.peer == Self.floatingAddress)
            #expect(connection.line.contains("sfnode-probe"))

            // Defloat: with the rules gone, the floating address no longer serves the guest.
            try await firewall.apply(FirewallState())
            // Without the DNAT the namespace itself owns the address and refuses; a timeout would also do.
            let refused = await #expect(throws: SystemError.self) {
                _ = try await NamespaceSockets.httpGet(from: names.outside, host: Self.floatingAddress, timeoutSeconds: 3)
            }
            #expect([ECONNREFUSED, ETIMEDOUT, EAGAIN, EINPROGRESS].contains(refused?.code ?? 0), "\(String(describing: refused))")
            try await firewall.removeAll()
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()

        // Nothing of the test remains: namespaces, devices, domain, dnsmasq.
        for namespace in [names.node, names.network, names.outside] {
            #expect(!NetworkNamespace.exists(named: namespace))
        }
        let host = try NetlinkSession(namespace: nil, logger: logger)
        #expect(try await host.links().filter { $0.name.hasPrefix(id) }.isEmpty)
        #expect(try await libvirt.lookup(name: names.domain) == nil)
        #expect(dnsmasqProcesses(mentioning: id).isEmpty)
    }
}
