import Foundation
import Logging
import SFAgent
import SFFirewall
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hairpin NAT, on the real kernel, with the agent's own plumbing: two "guest" namespaces behind
/// filtered veths (standing in for taps) on a node bridge, the network namespace holding the router
/// and the firewall state ``NetworkPlan/firewallState(layout:)`` makes. A guest reaches the other's
/// floating address, and its own, from inside the network.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root"))
struct SpoofingTests {
    static let netblock = IPv4Prefix("10.79.0.0/24")!
    static let first = (address: IPv4Address("10.79.0.10")!, floating: IPv4Address("192.0.2.10")!)  // not floated
    static let second = (address: IPv4Address("10.79.0.11")!, floating: IPv4Address("192.0.2.11")!)

    @Test func aGuestReachesFloatingAddressesOfItsOwnNetworkThroughTheRouter() async throws {
        let logger = Logger(label: "sfnode.test.hairpin")
        let id = TestNames.unique("")
        let names = (node: id + "node", network: id + "net", first: id + "g1", second: id + "g2")
        let layout = HostLayout()
        let vxid: UInt32 = 4343
        let plan = NetworkPlan(
            uuid: UUID(), vxid: vxid, netblock: Self.netblock, provideNAT: true,
            floatingGateway: IPv4Prefix("192.0.2.2/24")!, egressRouter: IPv4Address("192.0.2.1")!,
            // Only the second guest is floated: a floated sender's own SNAT would already bring the
            // answer back through the router, the hairpin is what serves the others.
            floats: [.init(floating: Self.second.floating, privateAddress: Self.second.address)])
        let teardown = Teardown()
        do {
            try teardown.createNamespaces([names.node, names.network, names.first, names.second])
            let node = try NetlinkSession(namespace: names.node, logger: logger)
            let network = try NetlinkSession(namespace: names.network, logger: logger)
            let bridge = layout.bridge(vxid)
            let inner = layout.routerInner(vxid)
            try await node.createBridge(name: bridge, up: true)
            try await node.createVethPair(
                name: layout.routerOuter(vxid), peer: inner, peerNamespace: names.network, master: bridge, up: true)
            try await network.addAddress(plan.router, to: inner)
            for link in ["lo", inner] { try await network.setLinkUp(link, true) }
            try await network.setSysctl("net/ipv4/ip_forward", "1")
            for scope in ["all", inner] { try await network.setSysctl("net/ipv4/conf/\(scope)/send_redirects", "0") }

            for (index, (namespace, guest)) in [(names.first, Self.first), (names.second, Self.second)].enumerated() {
                let session = try NetlinkSession(namespace: namespace, logger: logger)
                let tap = id + "t\(index)"
                let mac = try MACAddress(octets: [0x02, 0, 0, 0x79, 0, UInt8(index + 1)])
                try await node.createVethPair(name: tap, peer: "eth0", peerNamespace: namespace)
                // The filter the agent gives a tap: the guest's traffic must pass it.
                try await node.applyTapFilter(device: tap, policy: TapFilterPolicy(mac: mac, address: guest.address))
                try await node.setMaster(tap, master: bridge)
                try await node.setLinkUp(tap, true)
                try await session.setMAC("eth0", mac)
                try await session.addAddress(try IPv4Prefix(address: guest.address, length: 24), to: "eth0")
                for link in ["lo", "eth0"] { try await session.setLinkUp(link, true) }
                try await session.replaceRoute(.defaultRoute(via: plan.router.address, device: "eth0"))
            }

            let firewall = try Firewall(namespace: names.network, logger: logger)
            var withoutHairpin = plan.firewallState(layout: layout)
            withoutHairpin.rules.removeAll { if case .hairpin = $0 { return true } else { return false } }
            try await firewall.apply(withoutHairpin)
            // Without the hairpin the other guest answers straight from its private address, which the
            // caller never asked: no connection. (A timeout, not a speed assertion.)
            await #expect(throws: (any Error).self) {
                _ = try await connect(from: names.first, to: Self.second.floating, listener: (names.second, Self.second.address), port: 9100, timeout: 3)
            }

            try await firewall.apply(plan.firewallState(layout: layout))
            #expect(try await firewall.currentState() == plan.firewallState(layout: layout))
            #expect(try await firewall.apply(plan.firewallState(layout: layout)) == .unchanged)
            // The other guest's floating address, and its own, both answered through the router.
            let other = try await connect(from: names.first, to: Self.second.floating, listener: (names.second, Self.second.address), port: 9101)
            #expect(other == plan.router.address)
            let own = try await connect(from: names.second, to: Self.second.floating, listener: (names.second, Self.second.address), port: 9102)
            #expect(own == plan.router.address)
        } catch {
            try? await teardown.run()
            throw error
        }
        try await teardown.run()
    }

    /// Connects from `namespace` to `address:port`, where `listener` listens; returns the address the
    /// listener saw the connection come from.
    private func connect(
        from namespace: String, to address: IPv4Address, listener: (namespace: String, address: IPv4Address), port: UInt16,
        timeout: Int = 10
    ) async throws -> IPv4Address {
        let socket = try await TestListener.open(in: listener.namespace, address: listener.address, port: port)
        async let accepted = socket.acceptOne(timeoutSeconds: timeout)
        // The listener closes without an HTTP answer; only the connection matters.
        _ = try? await NamespaceSockets.httpGet(from: namespace, host: address, port: port, timeoutSeconds: timeout)
        return try await accepted.peer
    }
}
