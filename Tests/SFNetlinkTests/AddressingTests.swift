import Foundation
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

@Suite(.enabled(if: runningAsRoot, "netlink changes need root"))
struct AddressingTests {
    @Test func addressesAreAddedOnceListedAndDeletedIdempotently() async throws {
        try await withSession("addr") { ns, session in
            let bridge = TestNames.unique("br")
            try await session.createBridge(name: bridge)
            let address = try IPv4Prefix.parse("10.77.3.1/24")
            try await session.addAddress(address, to: bridge)
            try await session.addAddress(address, to: bridge)
            #expect(try await session.addresses(of: bridge) == [address])
            let shown = try inspect(["ip", "-n", ns, "-4", "addr", "show", "dev", bridge]).output
            #expect(shown.contains("inet 10.77.3.1/24 brd 10.77.3.255 "))
            #expect(shown.components(separatedBy: "inet ").count == 2)

            try await session.deleteAddress(address, from: bridge)
            try await session.deleteAddress(address, from: bridge)
            #expect(try await session.addresses(of: bridge).isEmpty)
            #expect(!(try inspect(["ip", "-n", ns, "-4", "addr", "show", "dev", bridge]).output.contains("inet ")))
            // Absent device: nothing to delete.
            try await session.deleteAddress(address, from: TestNames.unique("gone"))

            let missing = TestNames.unique("gone")
            let error = await #expect(throws: NetlinkError.self) { try await session.addAddress(address, to: missing) }
            #expect(error?.description.contains(missing) == true)
            #expect(error?.description.contains("10.77.3.1/24") == true)
        }
    }

    @Test func defaultRouteIsAddedReplacedAndDeleted() async throws {
        try await withSession("rt") { ns, session in
            let bridge = TestNames.unique("br")
            try await session.createBridge(name: bridge)
            try await session.addAddress(try IPv4Prefix.parse("10.77.4.1/24"), to: bridge)
            try await session.setLinkUp(bridge, true)
            let first = try #require(IPv4Address("10.77.4.254"))
            let second = try #require(IPv4Address("10.77.4.253"))

            let route = Route.defaultRoute(via: first, device: bridge)
            try await session.addRoute(route)
            try await session.addRoute(route)
            let defaults = try await session.routes().filter(\.isDefault)
            #expect(defaults == [route])
            #expect(try inspect(["ip", "-n", ns, "route", "show", "default"]).output.contains("default via 10.77.4.254 dev \(bridge)"))

            let conflict = await #expect(throws: NetlinkError.self) {
                try await session.addRoute(.defaultRoute(via: second, device: bridge))
            }
            #expect(conflict?.code == NetlinkError.exists)

            try await session.replaceRoute(.defaultRoute(via: second))
            #expect(try await session.routes().filter(\.isDefault) == [.defaultRoute(via: second, device: bridge)])
            #expect(try inspect(["ip", "-n", ns, "route", "show", "default"]).output.contains("default via 10.77.4.253 dev \(bridge)"))

            try await session.deleteRoute(.defaultRoute(via: second, device: bridge))
            try await session.deleteRoute(.defaultRoute(via: second, device: bridge))
            #expect(try await session.routes().filter(\.isDefault).isEmpty)
            #expect(try inspect(["ip", "-n", ns, "route", "show", "default"]).output.isEmpty)
        }
    }

    @Test func networkRoutesAndConnectedRoutesAreListed() async throws {
        try await withSession("rt2") { ns, session in
            let bridge = TestNames.unique("br")
            try await session.createBridge(name: bridge)
            try await session.addAddress(try IPv4Prefix.parse("10.77.5.1/24"), to: bridge)
            try await session.setLinkUp(bridge, true)
            // Host bits in the destination are ignored, as `ip route` ignores them.
            let route = Route(destination: try IPv4Prefix.parse("10.88.1.7/16"), gateway: IPv4Address("10.77.5.9"))
            try await session.addRoute(route)
            let routes = try await session.routes()
            #expect(routes.contains(Route(destination: try IPv4Prefix.parse("10.88.0.0/16"), gateway: IPv4Address("10.77.5.9"), device: bridge)))
            #expect(routes.contains(Route(destination: try IPv4Prefix.parse("10.77.5.0/24"), device: bridge)))
            #expect(try inspect(["ip", "-n", ns, "route", "show", "10.88.0.0/16"]).output.contains("via 10.77.5.9"))
            try await session.deleteRoute(route)
            #expect(!(try await session.routes().contains { $0.destination.length == 16 }))
        }
    }

    @Test func floodEntriesAreAppendedOnceListedAndDeleted() async throws {
        try await withSession("fdb") { ns, session in
            let vxlan = TestNames.unique("vx")
            try await session.createVXLAN(name: vxlan, id: 100, underlay: nil, local: IPv4Address("192.0.2.1"))
            let remoteA = try #require(IPv4Address("192.0.2.2"))
            let remoteB = try #require(IPv4Address("192.0.2.3"))

            try await session.appendFloodEntry(device: vxlan, remote: remoteA)
            try await session.appendFloodEntry(device: vxlan, remote: remoteA)
            #expect(try await session.floodEntries(device: vxlan) == [remoteA])
            var shown = try inspect(["bridge", "-n", ns, "fdb", "show", "dev", vxlan]).output
            #expect(shown.components(separatedBy: "00:00:00:00:00:00 dst 192.0.2.2 self permanent").count == 2)

            try await session.appendFloodEntry(device: vxlan, remote: remoteB)
            #expect(Set(try await session.floodEntries(device: vxlan)) == [remoteA, remoteB])

            try await session.deleteFloodEntry(device: vxlan, remote: remoteA)
            try await session.deleteFloodEntry(device: vxlan, remote: remoteA)
            #expect(try await session.floodEntries(device: vxlan) == [remoteB])
            shown = try inspect(["bridge", "-n", ns, "fdb", "show", "dev", vxlan]).output
            #expect(!shown.contains("dst 192.0.2.2 "))
            #expect(shown.contains("00:00:00:00:00:00 dst 192.0.2.3 self permanent"))

            // Entries of another device are not listed as this one's.
            let other = TestNames.unique("vx")
            try await session.createVXLAN(name: other, id: 101, underlay: nil, local: nil)
            #expect(try await session.floodEntries(device: other).isEmpty)

            // A VXLAN that is a bridge port (as every network's is) lists its own entries, and only
            // those, among its bridge's and its neighbours' (the dump asks for that one device).
            let bridge = TestNames.unique("br")
            try await session.createBridge(name: bridge, up: true)
            try await session.setMaster(vxlan, master: bridge)
            try await session.setMaster(other, master: bridge)
            try await session.appendFloodEntry(device: other, remote: remoteA)
            #expect(try await session.floodEntries(device: vxlan) == [remoteB])
            #expect(try await session.floodEntries(device: other) == [remoteA])

            // One dump of the whole namespace, as a reconciliation pass reads it, says the same for
            // each device; a device made after it has an empty list.
            let listing = try await session.allFloodEntries()
            func listed(_ device: String) async throws -> [IPv4Address] {
                listing.remotes(ofIndex: try #require(try await session.link(named: device)).index)
            }
            #expect(try await listed(vxlan) == [remoteB])
            #expect(try await listed(other) == [remoteA])
            let later = TestNames.unique("vx")
            try await session.createVXLAN(name: later, id: 102, underlay: nil, local: nil)
            try await session.appendFloodEntry(device: later, remote: remoteA)
            #expect(try await listed(later).isEmpty)
            #expect(try await session.floodEntries(device: later) == [remoteA])
        }
    }

    @Test func sysctlChangesOnlyTheSessionsNamespace() async throws {
        try await withSession("sys") { ns, session in
            let rootValue = try readRootFile("/proc/sys/net/ipv4/ip_forward")
            let wanted = rootValue == "1" ? "0" : "1"
            try await session.setSysctl("net/ipv4/ip_forward", wanted)
            #expect(try await session.sysctl("net.ipv4.ip_forward") == wanted)
            #expect(try inspect(["ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward"]).output.hasPrefix(wanted))
            #expect(try readRootFile("/proc/sys/net/ipv4/ip_forward") == rootValue)

            let bridge = TestNames.unique("br")
            try await session.createBridge(name: bridge)
            try await session.setSysctl("net.ipv4.conf.\(bridge).arp_notify", "1")
            #expect(try await session.sysctl("net/ipv4/conf/\(bridge)/arp_notify") == "1")

            for bad in ["kernel.hostname", "net/../kernel/hostname", "net/ipv4/ip_forward;x", "/net/ipv4/ip_forward", "net"] {
                let error = await #expect(throws: NetlinkError.self) { try await session.setSysctl(bad, "1") }
                #expect(error?.code == NetlinkError.invalid)
            }
            let missing = await #expect(throws: NetlinkError.self) { try await session.sysctl("net/ipv4/no_such_knob") }
            #expect(missing?.description.contains("/proc/sys/net/ipv4/no_such_knob") == true)
        }
    }
}
