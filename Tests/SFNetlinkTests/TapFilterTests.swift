import Foundation
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

/// A veth pair stands in for a tap: the "guest" end in a namespace of its own, the host end (which
/// gets the filter) on a bridge with a listener's veth, so a frame that passes the filter is seen
/// by the listener and one that is dropped is not, and counted.
@Suite(.enabled(if: runningAsRoot, "tc filters need root"))
struct TapFilterTests {
    static let guestMAC = MACAddress(0x02, 0x00, 0x00, 0x77, 0x00, 0x02)
    static let otherMAC = MACAddress(0x02, 0x00, 0x00, 0x77, 0x00, 0x99)
    static let guestAddress = IPv4Address(0x0a4d_0002)  // 10.77.0.2
    static let neighbour = IPv4Address(0x0a4d_0003)  // 10.77.0.3
    static let router = IPv4Address(0x0a4d_0001)  // 10.77.0.1
    static let broadcastAddress = IPv4Address(UInt32.max)

    @Test func forgedFramesAreDroppedAndCountedWhileOwnTrafficAndDHCPPass() async throws {
        try await withTap { lab in
            let guest = Self.guestMAC
            let sent: [(marker: String, passes: Bool, frame: [UInt8])] = [
                ("own-ipv4", true, RawFrame.udp(
                    from: guest, source: Self.guestAddress, destination: Self.router, sourcePort: 4000, destinationPort: 4000,
                    marker: "own-ipv4")),
                ("dhcp-discover", true, RawFrame.udp(
                    from: guest, source: IPv4Address(0), destination: Self.broadcastAddress, sourcePort: 68, destinationPort: 67,
                    marker: "dhcp-discover")),
                ("own-arp", true, RawFrame.arp(
                    from: guest, operation: 1, senderMAC: guest, senderAddress: Self.guestAddress, targetAddress: Self.router,
                    marker: "own-arp")),
                ("arp-probe", true, RawFrame.arp(
                    from: guest, operation: 1, senderMAC: guest, senderAddress: IPv4Address(0), targetAddress: Self.guestAddress,
                    marker: "arp-probe")),
                ("forged-mac", false, RawFrame.udp(
                    from: Self.otherMAC, source: Self.guestAddress, destination: Self.router, sourcePort: 4000,
                    destinationPort: 4000, marker: "forged-mac")),
                ("forged-ip", false, RawFrame.udp(
                    from: guest, source: Self.neighbour, destination: Self.router, sourcePort: 4000, destinationPort: 4000,
                    marker: "forged-ip")),
                ("forged-arp-reply", false, RawFrame.arp(
                    from: guest, operation: 2, senderMAC: guest, senderAddress: Self.router, targetAddress: Self.neighbour,
                    marker: "forged-arp-reply")),
                ("forged-arp-sender-mac", false, RawFrame.arp(
                    from: guest, operation: 2, senderMAC: Self.otherMAC, senderAddress: Self.guestAddress,
                    targetAddress: Self.neighbour, marker: "forged-arp-sender-mac")),
                ("zero-source-not-dhcp", false, RawFrame.udp(
                    from: guest, source: IPv4Address(0), destination: Self.broadcastAddress, sourcePort: 68, destinationPort: 53,
                    marker: "zero-source-not-dhcp")),
                ("ipv6", false, RawFrame.ipv6(from: guest, marker: "ipv6-link-local")),
            ]
            let before = try #require(try await lab.host.tapFilterCounters(device: lab.tap))
            let arrived = try await lab.exchange(sent.map(\.frame))
            for item in sent {
                #expect(arrived.contains { $0.contains(marker: item.marker) } == item.passes, "\(item.marker) passes: \(item.passes)")
            }
            let after = try #require(try await lab.host.tapFilterCounters(device: lab.tap))
            #expect(after.dropped - before.dropped == UInt64(sent.filter { !$0.passes }.count))
            #expect(after.packets - before.packets == UInt64(sent.count))
        }
    }

    @Test func reapplyingReplacesTheFilterAndTheDeviceTakesItAway() async throws {
        try await withTap { lab in
            try await lab.host.applyTapFilter(device: lab.tap, policy: TapFilterPolicy(mac: Self.guestMAC, address: Self.guestAddress))
            #expect(try await lab.host.tapFilterCount(device: lab.tap) == 1)
            // The guest is given another address: its old one is now a forgery.
            try await lab.host.applyTapFilter(device: lab.tap, policy: TapFilterPolicy(mac: Self.guestMAC, address: Self.neighbour))
            #expect(try await lab.host.tapFilterCount(device: lab.tap) == 1)
            let fromOld = RawFrame.udp(
                from: Self.guestMAC, source: Self.guestAddress, destination: Self.router, sourcePort: 1, destinationPort: 1,
                marker: "old-address")
            let fromNew = RawFrame.udp(
                from: Self.guestMAC, source: Self.neighbour, destination: Self.router, sourcePort: 1, destinationPort: 1,
                marker: "new-address")
            let arrived = try await lab.exchange([fromOld, fromNew])
            #expect(!arrived.contains { $0.contains(marker: "old-address") })
            #expect(arrived.contains { $0.contains(marker: "new-address") })

            try await lab.host.deleteLink(lab.tap)
            try await lab.host.createVethPair(name: lab.tap, peer: TestNames.unique("g2"), up: true)
            #expect(try await lab.host.tapFilterCount(device: lab.tap) == 0)
            #expect(try await lab.host.tapFilterCounters(device: lab.tap) == nil)
            try await lab.host.removeTapFilter(device: lab.tap)
        }
    }

    @Test func movingTheDeviceToAnotherNamespaceDropsItsFilter() async throws {
        // Why the agent filters a tap again after moving it into the host namespace.
        try await withTap { lab in
            try await withTestNamespace("mv") { elsewhere in
                try await lab.host.setLinkUp(lab.tap, false)
                try await lab.host.moveLink(lab.tap, toNamespace: elsewhere)
                let there = try NetlinkSession(namespace: elsewhere, logger: testLogger)
                #expect(try await there.tapFilterCount(device: lab.tap) == 0)
                try await there.applyTapFilter(device: lab.tap, policy: TapFilterPolicy(mac: Self.guestMAC, address: nil))
                #expect(try await there.tapFilterCount(device: lab.tap) == 1)
                try await there.removeTapFilter(device: lab.tap)
                try await there.removeTapFilter(device: lab.tap)
                #expect(try await there.tapFilterCount(device: lab.tap) == 0)
            }
        }
    }

    @Test func aMissingDeviceIsNamedInTheError() async throws {
        try await withSession("tf") { _, session in
            let error = await #expect(throws: NetlinkError.self) {
                try await session.applyTapFilter(device: "sftnotthere", policy: TapFilterPolicy(mac: Self.guestMAC, address: nil))
            }
            #expect(error?.code == NetlinkError.noDevice)
            #expect(error?.description.contains("sftnotthere") == true)
        }
    }

    @Test func everyJumpOfTheProgramGoesForwardToARet() {
        for address in [Self.guestAddress, nil] {
            let program = TapFilter.program(for: TapFilterPolicy(mac: Self.guestMAC, address: address))
            #expect(program.count < 64)
            let returns = program.indices.filter { program[$0].code == 0x06 }
            #expect(returns.count == 2 && returns.last == program.count - 1)
            for (position, instruction) in program.enumerated() where instruction.code & 0x07 == 0x05 {
                #expect(position + 1 + Int(instruction.jt) < program.count)
                #expect(position + 1 + Int(instruction.jf) < program.count)
            }
        }
    }
}

/// The namespaces of one filter test: `host` holds the filtered end `tap` on a bridge with the
/// listener's veth; `guest` holds the guest's end; `listener` sees what got through.
struct TapLab {
    let host: NetlinkSession
    let tap: String
    let sender: PacketSocket
    let receiver: PacketSocket

    /// Sends the frames from the guest and returns the frames the listener received.
    func exchange(_ frames: [[UInt8]]) async throws -> [[UInt8]] {
        // The receiver's socket is bound from its opening and queues what arrives: send first, so
        // its quiet window cannot end before anything was sent.
        for frame in frames { try sender.send(frame) }
        return try await receiver.receiveUntilQuiet()
    }
}

func withTap(_ body: (TapLab) async throws -> Void) async throws {
    let teardown = Teardown()
    do {
        let names = [TestNames.unique("h"), TestNames.unique("g"), TestNames.unique("l")]
        try teardown.createNamespaces(names)
        let (hostNamespace, guestNamespace, listenerNamespace) = (names[0], names[1], names[2])
        let host = try NetlinkSession(namespace: hostNamespace, logger: testLogger)
        let guest = try NetlinkSession(namespace: guestNamespace, logger: testLogger)
        let listener = try NetlinkSession(namespace: listenerNamespace, logger: testLogger)
        // No IPv6 chatter (router solicitations, DAD) from the test's own kernel: it would count as drops.
        for session in [guest, listener] {
            try await session.setSysctl("net/ipv6/conf/all/disable_ipv6", "1")
            try await session.setSysctl("net/ipv6/conf/default/disable_ipv6", "1")
        }
        let bridge = TestNames.unique("br")
        let tap = TestNames.unique("tap")
        let guestEnd = TestNames.unique("ge")
        let listenerEnd = TestNames.unique("le")
        try await host.createBridge(name: bridge, up: true)
        try await host.createVethPair(name: tap, peer: guestEnd, peerNamespace: guestNamespace)
        try await guest.setMAC(guestEnd, TapFilterTests.guestMAC)
        try await guest.setLinkUp(guestEnd, true)
        try await host.applyTapFilter(
            device: tap, policy: TapFilterPolicy(mac: TapFilterTests.guestMAC, address: TapFilterTests.guestAddress))
        try await host.setMaster(tap, master: bridge)
        try await host.setLinkUp(tap, true)
        try await host.createVethPair(
            name: TestNames.unique("lh"), peer: listenerEnd, peerNamespace: listenerNamespace, master: bridge, up: true)
        try await listener.setLinkUp(listenerEnd, true)
        let sender = try await PacketSocket.open(in: guestNamespace, device: guestEnd, receiving: false)
        let receiver = try await PacketSocket.open(in: listenerNamespace, device: listenerEnd, receiving: true)
        // The bridge forwards on a port once the kernel has noted its link up, which it does in the
        // background: a frame the filter passes is sent until one arrives, so the lab is ready (and
        // quiet) before the test sends anything.
        let probe = RawFrame.udp(
            from: TapFilterTests.guestMAC, source: TapFilterTests.guestAddress, destination: TapFilterTests.router, sourcePort: 4000,
            destinationPort: 4000, marker: "lab-ready")
        let ready = await eventually(timeout: .seconds(15)) {
            try? sender.send(probe)
            return ((try? await receiver.receiveUntilQuiet(quietMilliseconds: 200)) ?? []).contains { $0.contains(marker: "lab-ready") }
        }
        try #require(ready, "no frame crossed the lab's bridge")
        try await body(TapLab(host: host, tap: tap, sender: sender, receiver: receiver))
    } catch {
        try? await teardown.run()
        throw error
    }
    try await teardown.run()
}
