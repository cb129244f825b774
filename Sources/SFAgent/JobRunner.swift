import Foundation
import Logging
import SFControl
import SFLibvirt
import SFStore
import Synchronization

/// Takes jobs addressed to this node (and to the network-node role, when it has it) from the store
/// and runs them, several at once, in the order the store hands them out.
///
/// Concurrency: jobs run in two lanes, each with its own bound on jobs at once: jobs that may
/// download (``JobKind/mayDownload``: artifact.fetch, instance.create, instance.snapshot) and all the others, so that
/// slow downloads never take the workers a network.create needs. One object's jobs still run one at
/// a time, in order: the store does not hand out a job while an earlier live job has its object key.
/// What jobs for different objects share on the host is guarded by ``HostLocks``.
///
/// Delivery is at least once: a job is claimed with a lease that its own heartbeat renews while it
/// runs, and a job whose agent died goes back to the queue when its lease lapses. Every handler is
/// therefore idempotent. A job that was in flight when the agent died ``maxDeaths`` times is failed
/// ("the agent died twice while running this job") and never run again, so that one poisoned job
/// cannot keep the agent crashing until systemd gives up on it. A job that died once runs alone (no
/// other job starts until it ends, and it starts when the others have ended), so that a second
/// death is its own and never an innocent neighbour's.
///
/// Pick-up is prompt: the store's ``NodeStore/wakeups()`` (a job enqueued or finished, in this
/// process or another) ends the runner's idle wait at once. Until issue 15 a wake-up only set a flag
/// that the loop read after its 20 ms sleep, so a job waited for the rest of the tick (a median of
/// 13 ms in-process); now the wait itself is what a wake-up resumes. The runner still looks at the
/// queue every ``pollInterval`` when nothing wakes it, for delayed jobs coming due, leases that
/// lapse, and a notification that was lost.
public actor JobRunner {
    /// Runs one job, given typed (its kind and payload already checked) and as stored.
    public typealias Handler = @Sendable (JobOrder, Job) async throws -> Void

    private let store: any NodeStore
    private let targets: [JobTarget]
    private let owner: String
    private let lease: Duration
    private let pollInterval: Duration
    private let logger: Logger
    private var handlers: [JobKind: Handler] = [:]
    /// How long a job whose dependency is not ready keeps waiting for it (without spending
    /// attempts) before it fails: longer than a lease, so a dependency whose agent died mid-job is
    /// taken up again and finished first.
    private let notReadyDeadline: Duration
    /// How long such a job waits between looks.
    private let notReadyDelay: Duration
    /// How many deaths of its agent a job may be in flight for before it is failed.
    private let maxDeaths: Int

    /// A lane: the kinds it claims and how many of its jobs may run at once.
    private struct Lane {
        let name: String
        let kinds: JobKindFilter
        let workers: Int
        var running = 0
    }

    private var lanes: [Lane]

    /// A runner for `targets`, claiming as `owner` (unique per agent process) with leases of
    /// `lease`, running up to `workers` jobs at once plus up to `downloadWorkers` jobs that may download.
    /// `pollInterval` is how long an idle runner waits for a wake-up before it looks at the queue anyway.
    public init(
        store: any NodeStore, targets: [JobTarget], owner: String, lease: Duration = .seconds(30),
        pollInterval: Duration = .milliseconds(250), notReadyDeadline: Duration = .seconds(600),
        notReadyDelay: Duration = .seconds(1), workers: Int = 4, downloadWorkers: Int = 4, maxDeaths: Int = Job.defaultMaxDeaths,
        logger: Logger
    ) {
        self.store = store
        self.targets = targets
        self.owner = owner
        self.lease = lease
        self.pollInterval = max(pollInterval, .milliseconds(1))
        self.notReadyDeadline = max(notReadyDeadline, lease * 2)
        self.notReadyDelay = notReadyDelay
        self.maxDeaths = max(maxDeaths, 1)
        self.logger = logger
        let downloads = JobKind.allCases.filter(\.mayDownload).map(\.rawValue)
        lanes = [
            Lane(name: "downloads", kinds: .only(downloads), workers: max(downloadWorkers, 1)),
            Lane(name: "host", kinds: .excluding(downloads), workers: max(workers, 1)),
        ]
    }

    /// Registers the handler of one job kind.
    public func register(_ kind: JobKind, _ handler: @escaping Handler) {
        handlers[kind] = handler
    }

    /// What to do with a job that failed: `settle` records the failure in the store (back to the
    /// queue when retryable with attempts left, else failed) and returns the job as it is after;
    /// when that is failed, the handler records it on the job's object. `refused` when its handler
    /// refused it without changing anything (``JobError/refusal(_:)``). The agent runs `settle` and
    /// the recording under one hold of its locks, so that nobody sees one without the other.
    public typealias FailureHandler = @Sendable (_ job: Job, _ refused: Bool, _ settle: @Sendable () async throws -> Job) async throws -> Void

    private var failureHandler: FailureHandler?

    /// Registers what to do when a job fails (see ``FailureHandler``).
    public func onFailure(_ handler: @escaping FailureHandler) {
        failureHandler = handler
    }

    private func fail(_ job: Job, error: String, retryable: Bool, refused: Bool = false, logger: Logger) async throws {
        let (store, lease) = (self.store, self.heldLease(of: job))
        let settle: @Sendable () async throws -> Job = {
            try await store.fail(lease, error: error, retryable: retryable)
            return try await store.job(id: job.id)
        }
        guard let failureHandler else {
            _ = try await settle()
            return
        }
        do {
            try await JobContext.run(job) { try await failureHandler(job, refused, settle) }
        } catch {
            logger.error("recording a failed job on its object failed", metadata: ["error": "\(error)"])
            // The job itself must not stay running under a lease nobody renews.
            if try await store.job(id: job.id).state == .running { _ = try await settle() }
        }
    }

    /// Set when a wake-up came, or this runner finished a job, since the runner last looked.
    private var poked = false
    /// The idle loop's wait (``idle(upTo:)``), resumed by the next poke or by its timer.
    private var idleWaiter: CheckedContinuation<Void, Never>?

    private func poke() {
        poked = true
        endIdle()
    }

    private func endIdle() {
        idleWaiter?.resume()
        idleWaiter = nil
    }

    /// Waits until a poke (at once if one came since the loop last looked), cancellation, or
    /// `interval`, whichever is first.
    private func idle(upTo interval: Duration) async {
        if poked || stopping || Task.isCancelled { return }
        let timer = Task { [weak self] in
            guard (try? await Task.sleep(for: interval)) != nil else { return }
            await self?.endIdle()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in idleWaiter = continuation }
        } onCancel: {
            Task { await self.endIdle() }
        }
        timer.cancel()
    }

    /// Set by ``stop()``: the runner finishes the jobs it is running and claims no other.
    private var stopping = false

    /// The jobs running now, by id.
    private var running: [Int64: Task<Void, Never>] = [:]
    /// The job that died once and now runs alone: nothing else is claimed until it ends.
    private var isolated: Int64?
    /// Set when a job that died once was claimed while others ran: nothing is claimed until they end.
    private var quiescing = false

    /// Asks the runner to stop after the current jobs (graceful shutdown). A job cut short anyway
    /// (the shutdown bound passed) keeps its lease until it lapses and is then taken again.
    public func stop() {
        stopping = true
        poke()
    }

    /// Runs jobs until the task is cancelled or ``stop()`` is called, then waits for the running
    /// ones. A job being run when cancellation comes stops at its next step boundary and goes back to
    /// the queue, to be run again (and converge), without counting as an attempt or a death.
    public func run() async {
        let wakeups = store.wakeups()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [weak self] in
                for await _ in wakeups { await self?.poke() }
            }
            group.addTask { [weak self] in
                guard let runner = self else { return }
                // The running jobs are tasks of their own (see execute(_:)): cancelled by hand.
                await withTaskCancellationHandler {
                    await runner.loop()
                } onCancel: {
                    Task { await runner.cancelRunning() }
                }
            }
            // The loop ends on stop() or cancellation; the wakeup listener then goes with the group.
            await group.next()
            group.cancelAll()
        }
    }

    private func cancelRunning() {
        for task in running.values { task.cancel() }
    }

    private func loop() async {
        while !Task.isCancelled && !stopping {
            // Cleared before the claim: a wake-up that comes while it runs (its job committed too
            // late for this claim to see) makes the wait below return at once.
            poked = false
            do {
                if try await claimForLanes() { continue }
            } catch {
                if Task.isCancelled { break }
                logger.error("claiming a job failed; retrying", metadata: ["error": "\(error)"])
            }
            // Idle until a job is enqueued or finished (here or in another process), or until the
            // poll interval passes: a delayed job may be due, a lease may have lapsed, or a
            // notification may have been lost.
            await idle(upTo: pollInterval)
        }
        if Task.isCancelled { cancelRunning() }
        while let task = running.values.first { await task.value }
    }

    /// Claims a job for each lane with a free worker and starts it; true when it claimed any.
    private func claimForLanes() async throws -> Bool {
        if isolated != nil { return false }
        if quiescing {
            guard running.isEmpty else { return false }
            quiescing = false
        }
        var claimed = false
        for index in lanes.indices where lanes[index].running < lanes[index].workers {
            guard
                let job = try await store.claimNext(
                    targets: targets, owner: owner, lease: lease, kinds: lanes[index].kinds, maxDeaths: maxDeaths)
            else { continue }
            claimed = true
            if job.deaths == 0 { QueueMetrics.pickedUp(job) }
            if job.deaths > 0 && !job.diedTooOften(limit: maxDeaths) && !job.isExhausted {
                var logger = self.logger
                for (key, value) in JobContext.metadata(of: job) { logger[metadataKey: key] = value }
                logger[metadataKey: "job.deaths"] = "\(job.deaths)"
                if running.isEmpty {
                    logger.warning("the agent died while this job ran; it runs again, alone")
                    isolated = job.id
                    start(job, lane: nil)
                } else {
                    // Back to the queue, without spending an attempt, until the others have ended.
                    logger.warning("the agent died while this job ran; it waits for the other jobs to end, to run alone")
                    try await store.postpone(
                        heldLease(of: job), delay: .zero,
                        reason: "the agent died while this job ran; it runs again alone once the other jobs end")
                    quiescing = true
                }
                return claimed
            }
            lanes[index].running += 1
            start(job, lane: index)
        }
        return claimed
    }

    private func start(_ job: Job, lane: Int?) {
        running[job.id] = Task {
            await self.execute(job)
            self.finished(job, lane: lane)
        }
    }

    private func finished(_ job: Job, lane: Int?) {
        running[job.id] = nil
        if let lane { lanes[lane].running -= 1 }
        if isolated == job.id { isolated = nil }
        poke()
    }

    /// The lease this runner's claim of `job` holds.
    private func heldLease(of job: Job) -> JobLease {
        JobLease(jobID: job.id, owner: owner, token: job.leaseToken)
    }

    /// Claims and runs one job of any kind, in this task; false when there was none.
    public func runOne() async throws -> Bool {
        guard
            let job = try await store.claimNext(targets: targets, owner: owner, lease: lease, kinds: .any, maxDeaths: maxDeaths)
        else { return false }
        if job.deaths == 0 { QueueMetrics.pickedUp(job) }
        await execute(job)
        return true
    }

    /// Runs one claimed job to its end: its handler under its own lease heartbeat, then completed,
    /// settled as failed, postponed, or released (shutdown).
    private func execute(_ job: Job) async {
        // From the moment it is claimed, every line about the job names what it is about, so that
        // `journalctl INSTANCE_UUID=…` finds even a job that fails before its handler starts.
        var logger = self.logger
        for (key, value) in JobContext.metadata(of: job) { logger[metadataKey: key] = value }
        do {
            try await runClaimed(job, logger: logger)
        } catch {
            logger.error("settling the job failed; its lease lapses and it is taken again", metadata: ["error": "\(error)"])
        }
    }

    private func runClaimed(_ job: Job, logger: Logger) async throws {
        if job.diedTooOften(limit: maxDeaths) || job.isExhausted {
            let error = job.lastError ?? "its last allowed attempt died with its agent"
            logger.error("the job died with its agent too often; recording its failure", metadata: ["error": "\(error)"])
            QueueMetrics.failed(job, code: .internal)
            try await fail(job, error: error, retryable: false, logger: logger)
            return
        }
        let order: JobOrder
        do {
            order = try JobOrder.decode(kind: job.kind, payload: job.payload)
        } catch {
            logger.error("malformed job; failing it", metadata: ["error": "\(error)"])
            QueueMetrics.failed(job, code: .invalidArgument)
            try await fail(job, error: "\(error)", retryable: false, logger: logger)
            return
        }
        guard let handler = handlers[order.kind] else {
            logger.error("no handler for this job kind on this agent; failing it")
            QueueMetrics.failed(job, code: .invalidArgument)
            try await fail(
                job, error: "this agent has no handler for \(job.kind) (it handles: \(handlers.keys.map(\.rawValue).sorted().joined(separator: ", ")))",
                retryable: false, logger: logger)
            return
        }
        let store = self.store
        let held = heldLease(of: job)
        let lease = self.lease
        let started = ContinuousClock.now
        do {
            // The handler and its lease's heartbeat run as tasks of their own, not as children of this
            // one: the heartbeat must keep renewing while a handler cut short by shutdown runs on to
            // its next step boundary (C calls do not stop for cancellation). Only a lapsed lease, or
            // this task's cancellation, cancels the handler.
            let work = Task.detached { try await JobContext.run(job) { try await handler(order, job) } }
            let heartbeat = Task.detached {
                // Renew at a third of the lease, so two missed renewals still leave time. A renewal
                // that fails (a busy store) is retried at the next beat. A lease that has lapsed ends
                // the job: another agent may already run it, and two at once would fight. So does a
                // store this agent has not reached for twice the lease (a database server down, a
                // cut link): by then another agent may have rescued the job, and this one cannot
                // know.
                // A renewal runs beside the beat, so that one that hangs (a store that does not
                // answer) is counted against the lease as well as one that fails.
                let renewal = LeaseRenewal()
                while !Task.isCancelled {
                    try? await Task.sleep(for: lease / 3)
                    if Task.isCancelled { break }
                    if renewal.lost {
                        work.cancel()
                        return true
                    }
                    if ContinuousClock.now - renewal.lastRenewed >= lease * 2 {
                        logger.error(
                            "the job's lease could not be renewed for twice its length; stopping the job",
                            metadata: ["error": "\(renewal.lastError ?? "no answer from the store")"])
                        work.cancel()
                        return true
                    }
                    guard renewal.begin() else { continue }
                    Task {
                        do {
                            renewal.finish(renewed: try await store.renewLease(held, for: lease), error: nil)
                        } catch {
                            logger.warning("renewing the job's lease failed; retrying", metadata: ["error": "\(error)"])
                            renewal.finish(renewed: nil, error: "\(error)")
                        }
                    }
                }
                return false
            }
            let outcome = await withTaskCancellationHandler { await work.result } onCancel: { work.cancel() }
            heartbeat.cancel()
            if await heartbeat.value { throw LeaseLapsed() }
            try outcome.get()
            try await store.complete(held)
            logger.info("job done", metadata: ["job.duration": "\(ContinuousClock.now - started)"])
            QueueMetrics.ran(job, outcome: .succeeded, duration: ContinuousClock.now - started)
        } catch is LeaseLapsed {
            logger.error("the job's lease lapsed, so it was abandoned; the agent holding it now finishes it")
            QueueMetrics.ran(job, outcome: .leaseLapsed, duration: ContinuousClock.now - started)
        } catch where Task.isCancelled {
            // Shutdown cut the job short at a step boundary: it goes back to the queue at once, not
            // as a failed attempt, and not as a death (its agent did not die; it stopped it). From a
            // task of its own, since this one is cancelled.
            logger.warning("job interrupted by shutdown; it goes back to the queue", metadata: ["error": "\(error)"])
            try await Task.detached {
                try await store.postpone(held, delay: .zero, reason: "interrupted by the agent's shutdown")
            }.value
            QueueMetrics.ran(job, outcome: .interrupted, duration: ContinuousClock.now - started)
        } catch {
            let outcome = try await settle(job, error: error, logger: logger)
            QueueMetrics.ran(job, outcome: outcome, duration: ContinuousClock.now - started)
        }
    }

    /// Decides what a handler's error means for its job, by the error's code: a dependency that is
    /// not ready yet postpones the job without spending an attempt (until ``notReadyDeadline``); a
    /// retryable failure goes back to the queue with backoff; anything else fails the job for good.
    private func settle(_ job: Job, error: any Error, logger: Logger) async throws -> QueueMetrics.Outcome {
        let classified = ControlError(classifying: error)
        let refused = (error as? JobError)?.isRefusal ?? false
        switch classified.code {
        case .notReady:
            let waited = Date().timeIntervalSince(job.created)
            if waited < Double(notReadyDeadline.components.seconds) {
                logger.info("job waits for a dependency", metadata: ["reason": "\(classified.message)"])
                try await store.postpone(heldLease(of: job), delay: notReadyDelay, reason: classified.message)
                return .postponed
            } else {
                let message = "\(classified.message) (still not ready after \(Int(waited)) s)"
                logger.error("job failed", metadata: ["error": "\(message)"])
                QueueMetrics.failed(job, code: classified.code)
                try await fail(job, error: message, retryable: false, logger: logger)
                return .failed
            }
        case _ where classified.isRetryable:
            logger.warning("job attempt failed", metadata: ["error": "\(classified.message)", "job.attempt": "\(job.attempts)"])
            try await fail(job, error: classified.message, retryable: true, logger: logger)
            return .retried
        default:
            logger.error(refused ? "job refused" : "job failed", metadata: ["error": "\(classified.message)"])
            QueueMetrics.failed(job, code: classified.code)
            try await fail(job, error: classified.message, retryable: false, refused: refused, logger: logger)
            return .failed
        }
    }
}

/// The heartbeat found the job's lease gone (it lapsed and was taken, or the job was finished).
struct LeaseLapsed: Error {}

/// A job that can never succeed as given (malformed payload, impossible transition): failed at once,
/// not retried.
public struct JobError: Error, CustomStringConvertible, Sendable, ControlErrorConvertible {
    public let description: String
    /// Whether the handler refused the job before changing anything (it was sent to the wrong node,
    /// or asks for what the object's state forbids): its object must not be moved to an error state,
    /// since nothing about it went wrong.
    public let isRefusal: Bool

    public init(_ description: String) {
        self.description = description
        self.isRefusal = false
    }

    private init(refusal description: String) {
        self.description = description
        self.isRefusal = true
    }

    /// A refusal: the job fails, and its object stays as it was.
    public static func refusal(_ description: String) -> JobError { JobError(refusal: description) }

    public var controlError: ControlError { ControlError(isRefusal ? .conflict : .invalidArgument, description) }
}

/// The lease renewals of one running job: one in flight at a time, when the last one succeeded, and
/// whether the store said the lease is gone.
final class LeaseRenewal: Sendable {
    private struct State {
        var inFlight = false
        var lastRenewed = ContinuousClock.now
        var lost = false
        var lastError: String?
    }

    private let state = Mutex(State())

    var lastRenewed: ContinuousClock.Instant { state.withLock { $0.lastRenewed } }
    var lost: Bool { state.withLock { $0.lost } }
    var lastError: String? { state.withLock { $0.lastError } }

    /// Whether a renewal may start now (none is in flight); marks one in flight.
    func begin() -> Bool {
        state.withLock { state in
            guard !state.inFlight else { return false }
            state.inFlight = true
            return true
        }
    }

    /// A renewal's outcome: `renewed` true (renewed), false (the lease is gone), nil (it failed).
    func finish(renewed: Bool?, error: String?) {
        state.withLock { state in
            state.inFlight = false
            switch renewed {
            case true?: state.lastRenewed = ContinuousClock.now
            case false?: state.lost = true
            case nil: state.lastError = error
            }
        }
    }
}
