import Foundation
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

@Suite(.enabled(if: runningAsRoot, "netlink changes need root"))
struct LinkTests {
    @Test func bridgeIsCreatedOnceWithSTPOffAndNoForwardDelay() async throws {
        try await withSession("br") { ns, session in
            let name = TestNames.unique("br")
            try await session.createBridge(name: name, mtu: 1400)
            try await session.createBridge(name: name, mtu: 1400)
            let link = try #require(try await session.link(named: name))
            #expect(link.kind == .bridge)
            #expect(link.mtu == 1400)
            #expect(link.name == name)
            #expect(try await session.links().filter { $0.name == name }.count == 1)

            let shown = try ipLink(ns, name)
            #expect(shown.status == 0)
            #expect(shown.output.contains("mtu 1400"))
            #expect(shown.output.contains("bridge forward_delay 0 "))
            #expect(shown.output.contains("stp_state 0 "))

            try await session.deleteLink(name)
            try await session.deleteLink(name)
            #expect(try await session.link(named: name) == nil)
            #expect(try ipLink(ns, name).status != 0)
        }
    }

    @Test func linksCreatedEnslavedAndUpConvergeWhenCreatedAgain() async throws {
        try await withSession("mu") { ns, session in
            let bridge = TestNames.unique("br")
            let vxlan = TestNames.unique("vx")
            let veth = TestNames.unique("ve")
            try await session.createBridge(name: bridge, up: true)
            try await session.createVXLAN(name: vxlan, id: 77, underlay: nil, local: nil, master: bridge, up: true)
            try await session.createVethPair(name: veth, peer: TestNames.unique("vp"), master: bridge, up: true)
            let bridgeInfo = try #require(try await session.link(named: bridge))
            #expect(bridgeInfo.isUp)
            for name in [vxlan, veth] {
                let info = try #require(try await session.link(named: name))
                #expect(info.isUp, "\(name) is up")
                #expect(info.masterIndex == bridgeInfo.index, "\(name) is enslaved to the bridge")
                #expect(try ipLink(ns, name).output.contains("master \(bridge)"))
            }
            // A listing says so too, as a pass reads it: each holds as its create left it.
            let listed = LinkListing(try await session.links())
            #expect(listed[vxlan]?.vxlanID == 77)
            #expect(listed[bridge]?.vxlanID == nil)
            #expect(listed.holds(bridge, kind: .bridge, up: true))
            #expect(listed.holds(vxlan, kind: .vxlan, vxlanID: 77, master: bridge, up: true))
            #expect(listed.holds(veth, kind: .veth, master: bridge, up: true))
            #expect(!listed.holds(vxlan, kind: .vxlan, vxlanID: 78, master: bridge, up: true), "another VNI")
            #expect(!listed.holds(veth, kind: .bridge, up: true), "another kind")
            #expect(!listed.holds(veth, kind: .veth, master: "absent", up: true), "a master the listing lacks")
            #expect(!listed.holds("absent", kind: .veth, up: false))
            // Knocked down and released by hand, a second create puts them back.
            for name in [vxlan, veth] {
                try await session.setMaster(name, master: nil)
                try await session.setLinkUp(name, false)
            }
            try await session.setLinkUp(bridge, false)
            let drifted = LinkListing(try await session.links())
            #expect(!drifted.holds(bridge, kind: .bridge, up: true))
            #expect(drifted.holds(bridge, kind: .bridge, up: false))
            #expect(!drifted.holds(vxlan, kind: .vxlan, vxlanID: 77, master: bridge, up: false), "off its bridge")
            try await session.createBridge(name: bridge, up: true)
            try await session.createVXLAN(name: vxlan, id: 77, underlay: nil, local: nil, master: bridge, up: true)
            try await session.createVethPair(name: veth, peer: TestNames.unique("vp"), master: bridge, up: true)
            #expect(try await session.link(named: bridge)?.isUp == true)
            for name in [vxlan, veth] {
                let info = try #require(try await session.link(named: name))
                #expect(info.isUp)
                #expect(info.masterIndex == bridgeInfo.index)
            }
        }
    }

    @Test func creatingOverALinkOfAnotherKindNamesBothKinds() async throws {
        try await withSession("kind") { _, session in
            let name = TestNames.unique("kind")
            try await session.createBridge(name: name)
            let asVXLAN = await #expect(throws: NetlinkError.self) {
                try await session.createVXLAN(name: name, id: 7, underlay: nil, local: nil)
            }
            #expect(asVXLAN?.code == NetlinkError.exists)
            #expect(asVXLAN?.message.contains("kind bridge, not vxlan") == true)
            #expect(asVXLAN?.description.contains(name) == true)
            let asTap = await #expect(throws: NetlinkError.self) { try await session.createTap(name: name) }
            #expect(asTap?.message.contains("kind bridge, not tun") == true)
            let asVeth = await #expect(throws: NetlinkError.self) {
                try await session.createVethPair(name: name, peer: TestNames.unique("p"))
            }
            #expect(asVeth?.message.contains("kind bridge, not veth") == true)
            // Still the bridge it was.
            #expect(try await session.link(named: name)?.kind == .bridge)
        }
    }

    @Test func vxlanCarriesItsIdUnderlayLocalAndPort() async throws {
        try await withSession("vx") { ns, session in
            let underlay = TestNames.unique("u")
            let name = TestNames.unique("vx")
            try await session.createBridge(name: underlay)
            let local = try #require(IPv4Address("192.0.2.10"))
            try await session.createVXLAN(name: name, id: 4242, underlay: underlay, local: local, port: 4790, mtu: 1450)
            try await session.createVXLAN(name: name, id: 4242, underlay: underlay, local: local, port: 4790, mtu: 1450)

            let link = try #require(try await session.link(named: name))
            #expect(link.kind == .vxlan)
            #expect(link.mtu == 1450)
            let shown = try ipLink(ns, name).output
            #expect(shown.contains("vxlan id 4242 "))
            #expect(shown.contains("local 192.0.2.10 "))
            #expect(shown.contains("dev \(underlay) "))
            #expect(shown.contains("dstport 4790 "))

            let otherID = await #expect(throws: NetlinkError.self) {
                try await session.createVXLAN(name: name, id: 4243, underlay: underlay, local: local)
            }
            #expect(otherID?.code == NetlinkError.exists)
            #expect(otherID?.message.contains("id 4242, not 4243") == true)
            let asBridge = await #expect(throws: NetlinkError.self) { try await session.createBridge(name: name) }
            #expect(asBridge?.message.contains("kind vxlan, not bridge") == true)

            // Default port is the IANA one.
            let plain = TestNames.unique("vx")
            try await session.createVXLAN(name: plain, id: 9, underlay: nil, local: nil)
            #expect(try ipLink(ns, plain).output.contains("dstport 4789 "))
        }
    }

    @Test func vethPeerIsCreatedDirectlyInTheOtherNamespaceWithTheSameMTU() async throws {
        try await withSession("va") { nsA, sessionA in
            try await withTestNamespace("vb") { nsB in
                let sessionB = try NetlinkSession(namespace: nsB, logger: testLogger)
                let name = TestNames.unique("v")
                let peer = TestNames.unique("p")
                try await sessionA.createVethPair(name: name, peer: peer, peerNamespace: nsB, mtu: 1450)
                try await sessionA.createVethPair(name: name, peer: peer, peerNamespace: nsB, mtu: 1450)

                let local = try #require(try await sessionA.link(named: name))
                #expect(local.kind == .veth)
                #expect(local.mtu == 1450)
                #expect(try await sessionA.link(named: peer) == nil)
                let remote = try #require(try await sessionB.link(named: peer))
                #expect(remote.kind == .veth)
                #expect(remote.mtu == 1450)
                #expect(try ipLink(nsB, peer).output.contains("mtu 1450"))
                #expect(try ipLink(nsA, name).output.contains("mtu 1450"))

                // Deleting one end takes the other with it, wherever it is.
                try await sessionA.deleteLink(name)
                #expect(try await sessionB.link(named: peer) == nil)
                try await sessionA.deleteLink(name)
            }
        }
    }

    @Test func vethPairInOneNamespace() async throws {
        try await withSession("v1") { ns, session in
            let name = TestNames.unique("v")
            let peer = TestNames.unique("p")
            try await session.createVethPair(name: name, peer: peer)
            #expect(try await session.link(named: peer)?.kind == .veth)
            #expect(try ipLink(ns, peer).output.contains("\(peer)@\(name)"))
        }
    }

    @Test func tapIsCreatedOnceAndMovesBetweenNamespaces() async throws {
        // Three test namespaces, so the tap never passes through the process's own.
        try await withSession("ta") { nsA, sessionA in
            try await withSession("tb") { nsB, sessionB in
                try await withSession("tc") { nsC, sessionC in
                    let name = TestNames.unique("tap")
                    try await sessionA.createTap(name: name, mtu: 1400)
                    try await sessionA.createTap(name: name, mtu: 1400)
                    let tap = try #require(try await sessionA.link(named: name))
                    #expect(tap.kind == .tun)
                    #expect(tap.mtu == 1400)
                    #expect(try ipLink(nsA, name).output.contains("tun type tap"))

                    try await sessionA.moveLink(name, toNamespace: nsB)
                    #expect(try await sessionA.link(named: name) == nil)
                    #expect(try await sessionB.link(named: name)?.kind == .tun)
                    #expect(try ipLink(nsB, name).status == 0)

                    try await sessionB.moveLink(name, toNamespace: nsC)
                    #expect(try await sessionB.link(named: name) == nil)
                    #expect(try await sessionC.link(named: name)?.kind == .tun)
                    #expect(try ipLink(nsC, name).status == 0)

                    try await sessionC.moveLink(name, toNamespace: nsA)
                    #expect(try await sessionC.link(named: name) == nil)
                    #expect(try await sessionA.link(named: name)?.mtu == 1400)
                }
            }
        }
    }

    @Test func creatingAnExistingTapAppliesTheMTU() async throws {
        try await withSession("tm") { _, session in
            let name = TestNames.unique("tap")
            try await session.createTap(name: name)
            let index = try #require(try await session.link(named: name)).index
            try await session.createTap(name: name, mtu: 1300)
            let tap = try #require(try await session.link(named: name))
            #expect(tap.index == index)
            #expect(tap.mtu == 1300)
            // Without an MTU the existing one is kept.
            try await session.createTap(name: name)
            #expect(try await session.link(named: name)?.mtu == 1300)
        }
    }

    @Test func movingAMissingLinkNamesIt() async throws {
        try await withSession("mv") { ns, session in
            let name = TestNames.unique("gone")
            let error = await #expect(throws: NetlinkError.self) { try await session.moveLink(name, toNamespace: ns) }
            #expect(error?.object == name)
            #expect(error?.code == NetlinkError.noDevice)
        }
    }

    @Test func linkSettersChangeWhatTheKernelReports() async throws {
        try await withSession("set") { ns, session in
            let bridge = TestNames.unique("br")
            let port = TestNames.unique("v")
            let peer = TestNames.unique("p")
            try await session.createBridge(name: bridge)
            try await session.createVethPair(name: port, peer: peer)
            let bridgeIndex = try #require(try await session.link(named: bridge)).index

            try await session.setMTU(port, 1300)
            #expect(try await session.link(named: port)?.mtu == 1300)
            #expect(try ipLink(ns, port).output.contains("mtu 1300"))

            try await session.setLinkUp(port, true)
            #expect(try await session.link(named: port)?.isUp == true)
            #expect(try linkFlags(ns, port).contains("UP"))
            try await session.setLinkUp(port, false)
            #expect(try await session.link(named: port)?.isUp == false)
            #expect(!(try linkFlags(ns, port).contains("UP")))

            try await session.setMaster(port, master: bridge)
            #expect(try await session.link(named: port)?.masterIndex == bridgeIndex)
            #expect(try ipLink(ns, port).output.contains("master \(bridge)"))
            try await session.setMaster(port, master: nil)
            #expect(try await session.link(named: port)?.masterIndex == nil)
            #expect(!(try ipLink(ns, port).output.contains("master ")))

            let mac = try #require(MACAddress("02:5f:00:12:34:56"))
            try await session.setMAC(port, mac)
            #expect(try await session.link(named: port)?.mac == mac)
            #expect(try ipLink(ns, port).output.contains("link/ether 02:5f:00:12:34:56"))
        }
    }

    @Test func changingAMissingDeviceNamesItWithLibnlsText() async throws {
        try await withSession("miss") { _, session in
            let name = TestNames.unique("gone")
            let error = await #expect(throws: NetlinkError.self) { try await session.setMTU(name, 1400) }
            #expect(error?.object == name)
            #expect(error?.operation == "set MTU")
            #expect(error?.code == NetlinkError.noDevice)
            #expect(error?.message.contains("No such device") == true)
            #expect(error?.description.contains(name) == true)
            let master = await #expect(throws: NetlinkError.self) {
                try await session.setMaster(TestNames.unique("x"), master: name)
            }
            #expect(master?.description.contains(name) == true)
        }
    }

    @Test func invalidNamesAreRefusedBeforeTheKernelSeesThem() async throws {
        try await withSession("bad") { _, session in
            for bad in ["", "has space", "a/b", String(repeating: "x", count: 16)] {
                let error = await #expect(throws: NetlinkError.self) { try await session.createBridge(name: bad) }
                #expect(error?.code == NetlinkError.invalid)
            }
            let mtu = await #expect(throws: NetlinkError.self) {
                try await session.createBridge(name: TestNames.unique("m"), mtu: 10)
            }
            #expect(mtu?.message.contains("MTU 10") == true)
        }
    }

    @Test func listingLinksShowsLoopbackAndWhatWasMade() async throws {
        try await withSession("ls") { _, session in
            let bridge = TestNames.unique("br")
            try await session.createBridge(name: bridge)
            let links = try await session.links()
            let loopback = try #require(links.first { $0.name == "lo" })
            #expect(loopback.kind == .none)
            #expect(links.contains { $0.name == bridge && $0.kind == .bridge })
            #expect(links.count == 2)
        }
    }
}
