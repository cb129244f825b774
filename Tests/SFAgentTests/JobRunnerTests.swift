import Foundation
import Logging
import SFAgent
import SFStore
import SFTestSupport
import Synchronization
import Testing

/// The runner against the real store, with handlers that stand in for the agent's: steps that ignore
/// cancellation, separated by the crash points every real handler passes.
@Suite struct JobRunnerTests {
    /// A handler that never ends on its own: a step of work that ignores cancellation (as the
    /// agent's C calls do), a step boundary, again.
    static func endlessSteps(_ progress: borrowing Mutex<String>) async throws {
        while true {
            progress.withLock { $0 = "running" }
            try? await Task.sleep(for: .milliseconds(5))
            do {
                try CrashPoint.reach("test.step")
            } catch {
                progress.withLock { $0 = "stopped at a step boundary" }
                throw error
            }
        }
    }

    static func quietLogger() -> Logger {
        var logger = Logger(label: "sfnode.test.runner")
        logger.logLevel = .critical
        return logger
    }

    /// A job whose lease is gone (here: finished under the runner by someone else) is abandoned:
    /// its handler stops at its next step boundary rather than running alongside the agent that now
    /// holds the job, and the runner neither completes nor fails it.
    @Test(.timeLimit(.minutes(1))) func aHandlerStopsWhenItsLeaseLapses() async throws {
        let store = try SQLiteStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .milliseconds(300), logger: Self.quietLogger())
        let progress = Mutex<String>("not run")
        await runner.register("test.endless") { job in
            try await store.complete(jobID: job.id, owner: "runner-1")
            try await Self.endlessSteps(progress)
        }
        let job = try await store.enqueue(kind: "test.endless", payload: .object([:]), target: .node("n1"), objectKey: nil)
        #expect(try await runner.runOne())
        #expect(progress.withLock { $0 } == "stopped at a step boundary")
        let after = try await store.job(id: job.id)
        #expect(after.state == .succeeded)
        #expect(after.lastError == nil)
    }

    /// Shutdown that cannot wait (the runner's task is cancelled) stops the handler at a step
    /// boundary and leaves the job leased, as a crash would: no attempt is spent and no error recorded.
    @Test(.timeLimit(.minutes(1))) func aCancelledRunnerLeavesItsJobLeased() async throws {
        let store = try SQLiteStore.temporary()
        defer { store.removeFiles() }
        let messages = RecordedMessages()
        let logger = Logger(label: "sfnode.test.runner") { _ in RecordingLogHandler(messages: messages) }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .seconds(30), logger: logger)
        let progress = Mutex<String>("not run")
        await runner.register("test.endless") { _ in try await Self.endlessSteps(progress) }
        let job = try await store.enqueue(
            kind: "test.endless", payload: .object([:]), target: .node("n1"), objectKey: nil, maxAttempts: 1)
        let running = Task { await runner.run() }
        #expect(await eventually { progress.withLock { $0 } == "running" })
        running.cancel()
        await running.value
        #expect(progress.withLock { $0 } == "stopped at a step boundary")
        let after = try await store.job(id: job.id)
        #expect(after.state == .running)
        #expect(after.lastError == nil)
        #expect(messages.all.contains("job interrupted by shutdown; it runs again when its lease lapses"))
        #expect(!messages.all.contains("job attempt failed"))
    }

    /// A handler that finishes while its lease holds completes the job, and the heartbeat stops with it.
    @Test func aJobThatOutlivesSeveralRenewalsCompletes() async throws {
        let store = try SQLiteStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .seconds(2), logger: Self.quietLogger())
        // Longer than the lease: only the renewals (every 2/3 s) keep it.
        await runner.register("test.long") { _ in try await Task.sleep(for: .seconds(4)) }
        let job = try await store.enqueue(kind: "test.long", payload: .object([:]), target: .node("n1"), objectKey: nil)
        #expect(try await runner.runOne())
        #expect(try await store.job(id: job.id).state == .succeeded)
    }

    /// A refused job fails at once and tells the failure handler it was a refusal.
    @Test func aRefusalReachesTheFailureHandlerAsSuch() async throws {
        let store = try SQLiteStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", logger: Self.quietLogger())
        let seen = Mutex<[Bool]>([])
        await runner.register("test.refused") { _ in throw JobError.refusal("not here") }
        await runner.register("test.broken") { _ in throw JobError("broken") }
        await runner.onFailure { _, refused in seen.withLock { $0.append(refused) } }
        _ = try await store.enqueue(kind: "test.refused", payload: .object([:]), target: .node("n1"), objectKey: nil)
        _ = try await store.enqueue(kind: "test.broken", payload: .object([:]), target: .node("n1"), objectKey: nil)
        while try await runner.runOne() {}
        #expect(seen.withLock { $0 } == [true, false])
        #expect(try await store.jobs(states: [.failed], limit: 10).count == 2)
    }
}

/// The messages a logger was given, for tests that check what was said.
final class RecordedMessages: Sendable {
    private let messages = Mutex<[String]>([])

    func append(_ message: String) { messages.withLock { $0.append(message) } }
    var all: [String] { messages.withLock { $0 } }
}

/// A log handler that records every message, at every level.
struct RecordingLogHandler: LogHandler {
    let messages: RecordedMessages
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        messages.append(message.description)
    }
}
