import Foundation
import SFStore
import Testing

/// Wake-ups across store handles: a second handle on the same data stands in for a second process
/// (with SQLite the notification goes through the kernel either way: a doorbell file and inotify).
@Suite struct WakeupContractTests {
    static let target = JobTarget.node("sf-wake")

    /// The first wake-up of `stream` within `limit`, or nil when none came: long enough never to
    /// decide a test on speed, short enough that a missing notification fails clearly.
    static func nextWakeup(_ stream: AsyncStream<Void>, within limit: Duration = .seconds(30)) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                var iterator = stream.makeAsyncIterator()
                return await iterator.next() != nil
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    @Test("a job enqueued through another handle wakes this one's wakeups()", arguments: Backend.all)
    func anotherHandlesEnqueueWakes(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let other = try opened.reopen()
            // Subscribed first: nothing in this handle enqueues, so only a notification can fire it.
            let wakeups = store.wakeups()
            _ = try await other.enqueue(kind: "k", payload: nil, target: Self.target, objectKey: nil)
            #expect(await Self.nextWakeup(wakeups), "no wake-up within 30 s of another handle's enqueue")
        }
    }

    @Test("finishing a job through another handle wakes this one (it may unblock the object's next job)", arguments: Backend.all)
    func anotherHandlesCompletionWakes(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let other = try opened.reopen()
            let wakeups = store.wakeups()
            _ = try await other.enqueue(kind: "k", payload: nil, target: Self.target, objectKey: "network:x")
            _ = try await other.enqueue(kind: "k", payload: nil, target: Self.target, objectKey: "network:x")
            #expect(await Self.nextWakeup(wakeups), "no wake-up within 30 s of another handle's enqueue")
            let first = try #require(try await other.claimNext(targets: [Self.target], owner: "other", lease: .seconds(30)))
            // The object's second job is blocked behind the first until it finishes.
            #expect(try await store.claimNext(targets: [Self.target], owner: "this", lease: .seconds(30)) == nil)
            try await other.complete(try #require(first.lease))
            #expect(await Self.nextWakeup(wakeups), "no wake-up within 30 s of another handle completing a job")
            #expect(try await store.claimNext(targets: [Self.target], owner: "this", lease: .seconds(30)) != nil)
        }
    }

    @Test("a subscriber that comes after the last one left still hears other handles", arguments: Backend.all)
    func endedStreamsLeaveTheOthersWorking(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let other = try opened.reopen()
            // The first subscriber goes away (its watch with it, as the last one); a later one must
            // still hear the other handle.
            do {
                let early = store.wakeups()
                var iterator = early.makeAsyncIterator()
                _ = try await other.enqueue(kind: "k", payload: nil, target: Self.target, objectKey: nil)
                _ = await iterator.next()
            }
            let later = store.wakeups()
            _ = try await other.enqueue(kind: "k", payload: nil, target: Self.target, objectKey: nil)
            #expect(await Self.nextWakeup(later), "no wake-up for a subscriber that came after another left")
        }
    }
}
