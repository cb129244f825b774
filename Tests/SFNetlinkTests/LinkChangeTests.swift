import Foundation
import SFNetlink
import SFSystem
import SFTestSupport
import Synchronization
import Testing

@Suite(.enabled(if: runningAsRoot, "netlink changes need root"))
struct LinkChangeTests {
    @Test func streamReportsAddedChangedAndRemovedAndStopsItsThread() async throws {
        try await withSession("chg") { ns, session in
            let threadName = "nlw-\(ns.prefix(11))"
            let stream = try await session.linkChanges()
            // The thread names itself once it runs, which may be after linkChanges returns.
            #expect(await eventually { threadNames().contains(threadName) })
            let seen = Mutex<[LinkChange]>([])
            let consumer = Task {
                for await change in stream { seen.withLock { $0.append(change) } }
            }

            let name = TestNames.unique("br")
            try await session.createBridge(name: name)
            let added = await eventually {
                seen.withLock { $0.contains { if case .added(let link) = $0 { link.name == name && link.kind == .bridge } else { false } } }
            }
            #expect(added)

            try await session.setLinkUp(name, true)
            let up = await eventually {
                seen.withLock { $0.contains { if case .changed(let link) = $0 { link.name == name && link.isUp } else { false } } }
            }
            #expect(up)

            let index = try #require(try await session.link(named: name)).index
            try await session.deleteLink(name)
            let removed = await eventually { seen.withLock { $0.contains(.removed(name: name, index: index)) } }
            #expect(removed)
            // A link that existed when the stream began is never reported as added.
            #expect(!seen.withLock { $0.contains { if case .added(let link) = $0 { link.name == "lo" } else { false } } })

            consumer.cancel()
            _ = await consumer.value
            #expect(await eventually(timeout: .seconds(3)) { !threadNames().contains(threadName) })
        }
    }

    @Test func droppingAnUnconsumedStreamStopsItsThread() async throws {
        try await withSession("drop") { ns, session in
            let threadName = "nlw-\(ns.prefix(11))"
            do {
                let stream = try await session.linkChanges()
                #expect(await eventually { threadNames().contains(threadName) })
                _ = stream
            }
            #expect(await eventually(timeout: .seconds(3)) { !threadNames().contains(threadName) })
        }
    }

    @Test func aSessionInAMissingNamespaceIsRefused() {
        let name = TestNames.unique("gone")
        #expect(throws: NamespaceError.notFound(name)) { _ = try NetlinkSession(namespace: name, logger: testLogger) }
    }

    @Test func streamsSeeOnlyTheirOwnNamespace() async throws {
        try await withSession("ca") { _, sessionA in
            try await withSession("cb") { _, sessionB in
                let stream = try await sessionA.linkChanges()
                let seen = Mutex<[LinkChange]>([])
                let consumer = Task {
                    for await change in stream { seen.withLock { $0.append(change) } }
                }
                let inB = TestNames.unique("b")
                let inA = TestNames.unique("a")
                try await sessionB.createBridge(name: inB)
                try await sessionA.createBridge(name: inA)
                let sawA = await eventually {
                    seen.withLock { $0.contains { if case .added(let link) = $0 { link.name == inA } else { false } } }
                }
                #expect(sawA)
                #expect(!seen.withLock { $0.contains { if case .added(let link) = $0 { link.name == inB } else { false } } })
                consumer.cancel()
                _ = await consumer.value
            }
        }
    }
}
