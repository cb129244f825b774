import Foundation
import Logging
import SFAgent
import SFStore
import Synchronization
import Testing

/// The runner against the real store, with handlers that stand in for the agent's.
@Suite struct JobRunnerTests {
    /// A job whose lease is gone (here: finished under the runner by someone else) is abandoned:
    /// its handler is cancelled rather than left to run alongside the agent that now holds it, and the
    /// runner neither completes nor fails it.
    @Test func aHandlerIsCancelledWhenItsLeaseLapses() async throws {
        let store = try SQLiteStore.temporary()
        defer { store.removeFiles() }
        var logger = Logger(label: "sfnode.test.runner")
        logger.logLevel = .critical
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .milliseconds(300), logger: logger)
        let outcome = Mutex<String>("not run")
        await runner.register("test.slow") { job in
            // Someone else finishes the job while this one is still at it.
            try await store.complete(jobID: job.id, owner: "runner-1")
            outcome.withLock { $0 = "running" }
            do {
                try await Task.sleep(for: .seconds(30))
                outcome.withLock { $0 = "ran to the end" }
            } catch is CancellationError {
                outcome.withLock { $0 = "cancelled" }
                throw CancellationError()
            }
        }
        let job = try await store.enqueue(kind: "test.slow", payload: .object([:]), target: .node("n1"), objectKey: nil)
        let started = ContinuousClock.now
        #expect(try await runner.runOne())
        #expect(outcome.withLock { $0 } == "cancelled")
        #expect(ContinuousClock.now - started < .seconds(10))
        let after = try await store.job(id: job.id)
        #expect(after.state == .succeeded)
        #expect(after.lastError == nil)
    }

    /// A handler that finishes while its lease holds completes the job, and the heartbeat stops with it.
    @Test func aJobThatOutlivesSeveralRenewalsCompletes() async throws {
        let store = try SQLiteStore.temporary()
        defer { store.removeFiles() }
        var logger = Logger(label: "sfnode.test.runner")
        logger.logLevel = .critical
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .seconds(2), logger: logger)
        // Longer than the lease: only the renewals (every 2/3 s) keep it.
        await runner.register("test.long") { _ in try await Task.sleep(for: .seconds(4)) }
        let job = try await store.enqueue(kind: "test.long", payload: .object([:]), target: .node("n1"), objectKey: nil)
        #expect(try await runner.runOne())
        #expect(try await store.job(id: job.id).state == .succeeded)
    }
}
