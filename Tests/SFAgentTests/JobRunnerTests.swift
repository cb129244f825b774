import Foundation
import Logging
import SFAgent
import SFControl
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
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .milliseconds(300), logger: Self.quietLogger())
        let progress = Mutex<String>("not run")
        await runner.register(.networkRefresh) { _, job in
            try await store.complete(try #require(job.lease))
            try await Self.endlessSteps(progress)
        }
        let job = try await enqueueTestJob(store)
        #expect(try await runner.runOne())
        #expect(progress.withLock { $0 } == "stopped at a step boundary")
        let after = try await store.job(id: job.id)
        #expect(after.state == .succeeded)
        #expect(after.lastError == nil)
    }

    /// A store the runner cannot reach (a PostgreSQL database that refuses its connections, the
    /// ones it had cut) ends the job once its lease has gone unrenewed for twice its length: by
    /// then another agent may hold the job. The job is neither completed nor failed by this runner.
    @Test(.timeLimit(.minutes(1)), .enabled(if: PostgresTestDatabase.serverURL != nil, "needs the tests' PostgreSQL server"))
    func aHandlerStopsWhenTheStoreIsUnreachableForTwiceTheLease() async throws {
        let server = try #require(try PostgresTestDatabase.serverURL.flatMap { try PostgresStoreConfiguration(url: $0) })
        let database = try PostgresTestDatabase.create()
        defer { database.drop() }
        let store = try SQLStore.open(location: database.url, fqdn: "n1")
        defer { store.close() }
        let messages = RecordedMessages()
        let logger = Logger(label: "sfnode.test.runner") { _ in RecordingLogHandler(messages: messages) }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .milliseconds(900), logger: logger)
        let progress = Mutex<String>("not run")
        await runner.register(.networkRefresh) { _, _ in
            // The database goes away under the running job.
            try PostgresTestDatabase.administer(server, "ALTER DATABASE \(database.name) CONNECTION LIMIT 0")
            try PostgresTestDatabase.administer(
                server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database.name)'")
            try await Self.endlessSteps(progress)
        }
        let job = try await enqueueTestJob(store)
        let started = ContinuousClock.now
        #expect(try await runner.runOne())
        #expect(ContinuousClock.now - started >= .milliseconds(1800))
        #expect(progress.withLock { $0 } == "stopped at a step boundary")
        #expect(messages.all.contains("the job's lease could not be renewed for twice its length; stopping the job"))
        try PostgresTestDatabase.administer(server, "ALTER DATABASE \(database.name) CONNECTION LIMIT -1")
        let after = try await store.job(id: job.id)
        #expect(after.state == .running && after.leaseOwner == "runner-1")
    }

    /// Shutdown that cannot wait (the runner's task is cancelled) stops the handler at a step
    /// boundary and puts the job back in the queue at once: no attempt is spent and no death counted.
    @Test(.timeLimit(.minutes(1))) func aCancelledRunnerPutsItsJobBack() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let messages = RecordedMessages()
        let logger = Logger(label: "sfnode.test.runner") { _ in RecordingLogHandler(messages: messages) }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .seconds(30), logger: logger)
        let progress = Mutex<String>("not run")
        await runner.register(.networkRefresh) { _, _ in try await Self.endlessSteps(progress) }
        let job = try await enqueueTestJob(store, maxAttempts: 1)
        let running = Task { await runner.run() }
        #expect(await eventually { progress.withLock { $0 } == "running" })
        running.cancel()
        await running.value
        #expect(progress.withLock { $0 } == "stopped at a step boundary")
        let after = try await store.job(id: job.id)
        #expect(after.state == .queued)
        #expect(after.attempts == 0 && after.deaths == 0)
        #expect(after.lastError == "interrupted by the agent's shutdown")
        #expect(messages.all.contains("job interrupted by shutdown; it goes back to the queue"))
        #expect(!messages.all.contains("job attempt failed"))
    }

    /// A handler that finishes while its lease holds completes the job, and the heartbeat stops with it.
    @Test func aJobThatOutlivesSeveralRenewalsCompletes() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", lease: .seconds(4), logger: Self.quietLogger())
        // Longer than the lease: only the renewals (every 4/3 s) keep it.
        await runner.register(.networkRefresh) { _, _ in try await Task.sleep(for: .seconds(7)) }
        let job = try await enqueueTestJob(store)
        #expect(try await runner.runOne())
        #expect(try await store.job(id: job.id).state == .succeeded)
    }

    /// A refused job fails at once and tells the failure handler it was a refusal.
    @Test func aRefusalReachesTheFailureHandlerAsSuch() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", logger: Self.quietLogger())
        let seen = Mutex<[Bool]>([])
        await runner.register(.networkRefresh) { _, _ in throw JobError.refusal("not here") }
        await runner.register(.networkCreate) { _, _ in throw JobError("broken") }
        await runner.onFailure { _, refused, settle in
            _ = try await settle()
            seen.withLock { $0.append(refused) }
        }
        _ = try await enqueueTestJob(store, kind: .networkRefresh)
        _ = try await enqueueTestJob(store, kind: .networkCreate)
        while try await runner.runOne() {}
        #expect(seen.withLock { $0 } == [true, false])
        #expect(try await store.jobs(states: [.failed], limit: 10).count == 2)
    }
}

extension JobRunnerTests {
    /// A dependency that is not ready makes the job wait without spending its attempts; once the
    /// deadline passes it fails, and the failure reaches its object like any other.
    @Test(.timeLimit(.minutes(1))) func aJobWaitsForADependencyWithoutSpendingAttempts() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(
            store: store, targets: [.node("n1")], owner: "runner-1", lease: .seconds(5),
            notReadyDeadline: .zero, notReadyDelay: .zero, logger: Self.quietLogger())
        let tries = Mutex(0)
        await runner.register(.networkRefresh) { _, _ in
            let count = tries.withLock { $0 += 1; return $0 }
            if count < 12 { throw ControlError.notReady("the network is initial, not created yet") }
        }
        let job = try await enqueueTestJob(store, maxAttempts: 2)
        while try await runner.runOne() {}
        #expect(tries.withLock { $0 } == 12)
        let after = try await store.job(id: job.id)
        #expect(after.state == .succeeded)
        #expect(after.attempts == 1)
    }

    /// Past its deadline a job still not ready fails, saying how long it waited.
    @Test func aDependencyThatNeverComesFailsTheJobAfterTheDeadline() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        // The deadline is at least two leases: here 2 × 1 s. A lease of milliseconds would lapse
        // on a busy machine before its first renewal, and count as a death.
        let runner = JobRunner(
            store: store, targets: [.node("n1")], owner: "runner-1", lease: .seconds(1),
            notReadyDeadline: .zero, notReadyDelay: .milliseconds(5), logger: Self.quietLogger())
        await runner.register(.networkRefresh) { _, _ in throw ControlError.notReady("network x is initial") }
        let job = try await enqueueTestJob(store)
        let failed = await eventually(timeout: .seconds(30)) {
            _ = try? await runner.runOne()
            return (try? await store.job(id: job.id).state) == .failed
        }
        #expect(failed)
        let after = try await store.job(id: job.id)
        #expect(after.lastError?.contains("network x is initial (still not ready after") == true)
        #expect(after.attempts == 1)
    }

    /// A job whose agent died during its last allowed attempt is recorded as failed by the next
    /// claimer, and its failure handler runs (it used to be failed silently inside the claim).
    @Test func aJobWhoseLastAttemptDiedReachesTheFailureHandler() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let job = try await enqueueTestJob(store, maxAttempts: 1)
        // The first agent claims it and dies: its 50 ms lease lapses with no attempt left.
        _ = try await store.claimNext(targets: [.node("n1")], owner: "dead-agent", lease: .milliseconds(50))
        try await Task.sleep(for: .milliseconds(100))
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-2", logger: Self.quietLogger())
        let ran = Mutex(false)
        let failures = Mutex<[String]>([])
        await runner.register(.networkRefresh) { _, _ in ran.withLock { $0 = true } }
        await runner.onFailure { _, _, settle in
            let failed = try await settle()
            failures.withLock { $0.append(failed.lastError ?? "") }
        }
        #expect(try await runner.runOne())
        #expect(!ran.withLock { $0 })
        #expect(try await store.job(id: job.id).state == .failed)
        #expect(failures.withLock { $0 } == ["lease of dead-agent expired during attempt 1 of 1"])
    }

    /// A stored job whose payload does not decode fails at once, naming the field.
    @Test func aMalformedJobFailsNamingTheField() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-1", logger: Self.quietLogger())
        await runner.register(.instanceCreate) { _, _ in }
        let job = try await store.enqueue(
            kind: "instance.create", payload: .object(["instance_uuid": .string("not-a-uuid")]), target: .node("n1"), objectKey: nil)
        #expect(try await runner.runOne())
        let after = try await store.job(id: job.id)
        #expect(after.state == .failed)
        #expect(after.lastError == "\"instance_uuid\" of a instance.create job is 'not-a-uuid', not a UUID")
    }
}

/// Queues a job of `kind` about a fresh UUID for node n1.
func enqueueTestJob(_ store: any NodeStore, kind: JobKind = .networkRefresh, maxAttempts: Int = 5) async throws -> Job {
    let order = try JobOrder(kind, .network(UUID()))
    return try await store.enqueue(
        kind: kind.rawValue, payload: order.payload, target: .node("n1"), objectKey: nil, maxAttempts: maxAttempts)
}

/// What counts as an instance stuck half-way: a transitional state and no live job about it, by
/// its payload (object keys are free-form and may be written in either case).
@Test func stuckInstancesAreThoseNoLiveJobIsAbout() async throws {
    let store = try SQLStore.temporary()
    defer { store.removeFiles() }
    func instance(_ state: InstanceState, namespace: String = "ns") -> Instance {
        var instance = Instance(name: "i", namespace: namespace, cpus: 1, memory: 64, diskSpec: [])
        instance.state = state
        return instance
    }
    let creating = instance(.creating), deleting = instance(.deleteWait), created = instance(.created)
    let covered = instance(.creating), byNamespace = instance(.deleteWait, namespace: "gone")
    let order = try JobOrder(.instanceCreate, .instance(covered.uuid))
    let job = try await store.enqueue(
        kind: order.kind.rawValue, payload: order.payload, target: .node("n1"), objectKey: "instance:\(covered.uuid)")
    let all = try await store.enqueue(kind: "instance.delete_all", payload: .object(["namespace": .string("gone")]), target: .node("n1"), objectKey: nil)
    let stuck = HostPlanner.stuckInstances([creating, deleting, created, covered, byNamespace], liveJobs: [job, all])
    #expect(Set(stuck.map(\.uuid)) == [creating.uuid, deleting.uuid])
}
