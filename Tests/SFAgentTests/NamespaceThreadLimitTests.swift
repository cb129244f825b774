import Foundation
import Logging
import SFAgent
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

/// A network node's threads do not grow with its networks: the realizer keeps at most its limit of
/// namespace threads, and a network whose thread it let go is built again through a new one.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root"))
struct NamespaceThreadLimitTests {
    @Test func namespaceThreadsStayWithinTheLimit() async throws {
        let logger = Logger.testWarnings("sfnode.test.namespace-threads")
        let id = TestNames.unique("")
        let hostNamespace = id + "host"
        let layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let teardown = Teardown()
        let plans = (0..<5).map { index in
            NetworkPlan(uuid: UUID(), vxid: UInt32(0x5100 + index), netblock: IPv4Prefix("10.89.\(index).0/24")!, provideNAT: false)
        }
        // Named `ns-` and the namespace's first 12 characters: `ns-<id>-` for the networks' alone (the
        // host namespace's is `ns-<id>host`).
        func namespaceThreads() -> Int {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.filter { task in
                ((try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? "").hasPrefix("ns-\(id)-")
            }.count
        }
        do {
            try teardown.createNamespaces([hostNamespace])
            let host = try NetlinkSession(namespace: hostNamespace, logger: logger)
            let networks = NetworkRealizer(layout: layout, host: host, namespaceThreadLimit: 2, logger: logger)
            for plan in plans { teardown.add("network \(plan.vxid)") { try await networks.remove(plan) } }

            for plan in plans {
                try await networks.ensureOnNode(plan, underlay: nil, local: nil)
                try await networks.ensureOnNetworkNode(plan)
            }
            #expect(plans.allSatisfy { NetworkNamespace.exists(named: layout.namespace(of: $0.uuid)) })
            #expect(await eventually { namespaceThreads() <= 2 })

            // The first network's thread was let go: building it again uses the same namespace.
            let first = layout.namespace(of: plans[0].uuid)
            let identity = NetworkNamespace.identity(named: first)
            try await networks.ensureOnNetworkNode(plans[0])
            #expect(NetworkNamespace.identity(named: first) == identity)
            #expect(await eventually { namespaceThreads() <= 2 })
            do {
                let inside = try NetlinkSession(namespace: first, logger: logger)
                let router = try #require(try await inside.link(named: layout.routerInner(plans[0].vxid)))
                #expect(router.isUp)
                #expect(try await inside.addresses(of: router.name).contains(plans[0].router))
            }

            // A pass through no more namespaces than the limit keeps their threads for the next.
            try await networks.withPassSnapshot { _ in
                for plan in plans.prefix(2) { try await networks.ensureOnNetworkNode(plan) }
            }
            #expect(await eventually { namespaceThreads() == 2 })
            // One through more lets them all go: kept, each would be let go before its next turn.
            try await networks.withPassSnapshot { _ in
                for plan in plans { try await networks.ensureOnNetworkNode(plan) }
            }
            #expect(await eventually { namespaceThreads() == 0 })
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
        #expect(plans.allSatisfy { !NetworkNamespace.exists(named: layout.namespace(of: $0.uuid)) })
    }
}
