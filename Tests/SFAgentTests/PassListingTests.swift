import Foundation
import Logging
import SFAgent
import SFNetlink
import SFSystem
import SFTestSupport
import Synchronization
import Testing

/// A reconciliation pass checks each network's devices against one listing of the host's links
/// (and one of each namespace's) instead of asking about each: what drifted is still repaired, and
/// a host that matches sees no change at all.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root"))
struct PassListingTests {
    @Test func aPassRepairsWhatDriftedAndChangesNothingWhenTheHostMatches() async throws {
        let logger = Logger.testWarnings("sfnode.test.pass-listing")
        let id = TestNames.unique("")
        let hostNamespace = id + "host"
        let layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let plan = NetworkPlan(uuid: UUID(), vxid: 0x5300, netblock: IPv4Prefix("10.89.30.0/24")!, provideNAT: false)
        let teardown = Teardown()
        do {
            try teardown.createNamespaces([hostNamespace])
            let host = try NetlinkSession(namespace: hostNamespace, logger: logger)
            let networks = NetworkRealizer(layout: layout, host: host, logger: logger)
            teardown.add("network") { try await networks.remove(plan) }
            func pass() async throws {
                try await networks.withPassSnapshot { _ in
                    try await networks.ensureOnNode(plan, underlay: nil, local: nil)
                    try await networks.ensureOnNetworkNode(plan)
                }
            }
            try await networks.ensureOnNode(plan, underlay: nil, local: nil)
            try await networks.ensureOnNetworkNode(plan)

            let (bridge, vxlan, outer, inner) = (
                layout.bridge(plan.vxid), layout.vxlan(plan.vxid), layout.routerOuter(plan.vxid), layout.routerInner(plan.vxid)
            )
            // The host matches: the pass changes no link of the host namespace. The first change
            // seen is the one made after it, by hand, to show the watch was listening.
            // Subscribed before the pass (the stream listens from its making), not inside the task.
            let seen = Mutex<[LinkChange]>([])
            let changes = try await host.linkChanges()
            let watching = Task {
                for await change in changes { seen.withLock { $0.append(change) } }
            }
            try await pass()
            try await host.setLinkUp(vxlan, false)
            #expect(await eventually { !seen.withLock { $0 }.isEmpty })
            watching.cancel()
            let first = seen.withLock { $0.first }
            if case .changed(let link) = first {
                #expect(link.name == vxlan && !link.isUp)
            } else {
                Issue.record("the first change seen is \(String(describing: first)), not the VXLAN going down")
            }

            // Drift on both sides: the VXLAN down (above) and off its bridge, the router's outer end
            // off its bridge; inside, the router's end down with another MAC and without its address,
            // and the loopback down.
            try await host.setMaster(vxlan, master: nil)
            try await host.setMaster(outer, master: nil)
            let inside = try NetlinkSession(namespace: layout.namespace(of: plan.uuid), logger: logger)
            try await inside.setLinkUp(inner, false)
            try await inside.setMAC(inner, try MACAddress(octets: [2, 0, 0, 0x53, 0, 9]))
            try await inside.setLinkUp("lo", false)
            try await inside.deleteAddress(plan.router, from: inner)
            #expect(try await !inside.addresses(of: inner).contains(plan.router))
            try await pass()

            let bridgeIndex = try #require(try await host.link(named: bridge)).index
            for name in [vxlan, outer] {
                let link = try #require(try await host.link(named: name))
                #expect(link.isUp, "\(name) is up again")
                #expect(link.masterIndex == bridgeIndex, "\(name) is on its bridge again")
            }
            let router = try #require(try await inside.link(named: inner))
            #expect(router.isUp)
            #expect(router.mac == layout.routerMAC(plan.vxid))
            #expect(try await inside.link(named: "lo")?.isUp == true)
            #expect(try await inside.addresses(of: inner).contains(plan.router))
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
        #expect(!NetworkNamespace.exists(named: layout.namespace(of: plan.uuid)))
    }
}
