import Foundation
import Logging
import SFAgent
import SFControl
import SFStore
import Testing

/// The runner starts a job on its wake-up, not at its next poll: the poll interval is set to a
/// minute, and each job must start well inside it (30 s, so that no verdict depends on speed).
@Suite struct JobRunnerWakeupTests {
    /// Job ids as their handler starts them.
    final class Starts: Sendable {
        let stream: AsyncStream<Int64>
        private let continuation: AsyncStream<Int64>.Continuation

        init() {
            let (stream, continuation) = AsyncStream<Int64>.makeStream()
            self.stream = stream
            self.continuation = continuation
        }

        func record(_ id: Int64) { continuation.yield(id) }

        /// The next started job's id, or nil when none started within `limit`.
        func next(within limit: Duration = .seconds(30)) async -> Int64? {
            let stream = self.stream
            return await withTaskGroup(of: Int64?.self) { group in
                group.addTask {
                    var iterator = stream.makeAsyncIterator()
                    return await iterator.next()
                }
                group.addTask {
                    try? await Task.sleep(for: limit)
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
        }
    }

    @Test(.timeLimit(.minutes(2))) func jobsFromThisProcessAndFromAnotherHandleStartWithoutThePoll() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        // A second handle on the same file, as a second process would open it: its commits reach the
        // runner only through the store's cross-process notification.
        let other = try SQLStore(path: store.path, fqdn: "test-node-2")
        let runner = JobRunner(
            store: store, targets: [.node("n1")], owner: "runner-1", pollInterval: .seconds(60), logger: JobRunnerTests.quietLogger())
        let starts = Starts()
        await runner.register(.networkRefresh) { _, job in starts.record(job.id) }
        let running = Task { await runner.run() }
        defer { running.cancel() }

        // The runner's first look finds nothing; it then waits, for a minute unless woken.
        try await Task.sleep(for: .milliseconds(300))
        let local = try await enqueueTestJob(store)
        #expect(await starts.next() == local.id, "a job enqueued in the runner's own process did not start within 30 s")

        // Settled and idle again before the other handle enqueues.
        try await waitUntilSucceeded(store, local.id)
        try await Task.sleep(for: .milliseconds(300))
        let remote = try await enqueueTestJob(other)
        #expect(await starts.next() == remote.id, "a job enqueued through another store handle did not start within 30 s")
        try await waitUntilSucceeded(store, remote.id)

        await runner.stop()
        await running.value
    }

    private func waitUntilSucceeded(_ store: any NodeStore, _ id: Int64) async throws {
        while try await store.job(id: id).state != .succeeded { try await Task.sleep(for: .milliseconds(5)) }
    }
}
