import Foundation
import Logging
import SFControl
import SFLibvirt
import SFStore

/// Takes jobs addressed to this node (and to the network-node role, when it has it) from the store
/// and runs them, one at a time, in the order the store hands them out.
///
/// Delivery is at least once: a job is claimed with a lease that a heartbeat renews while it runs,
/// and a job whose agent died goes back to the queue when its lease lapses. Every handler is
/// therefore idempotent. Pick-up is prompt: in-process enqueues wake the runner at once, and other
/// processes' commits are noticed by polling the store's change token every few milliseconds.
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

    /// A runner for `targets`, claiming as `owner` (unique per agent process) with leases of `lease`.
    public init(
        store: any NodeStore, targets: [JobTarget], owner: String, lease: Duration = .seconds(30),
        pollInterval: Duration = .milliseconds(20), notReadyDeadline: Duration = .seconds(600),
        notReadyDelay: Duration = .seconds(1), logger: Logger
    ) {
        self.store = store
        self.targets = targets
        self.owner = owner
        self.lease = lease
        self.pollInterval = pollInterval
        self.notReadyDeadline = max(notReadyDeadline, lease * 2)
        self.notReadyDelay = notReadyDelay
        self.logger = logger
    }

    /// Registers the handler of one job kind.
    public func register(_ kind: JobKind, _ handler: @escaping Handler) {
        handlers[kind] = handler
    }

    /// What to do with a job that failed for good; `refused` when its handler refused it without
    /// changing anything (``JobError/refusal(_:)``).
    public typealias FailureHandler = @Sendable (_ job: Job, _ refused: Bool) async throws -> Void

    private var failureHandler: FailureHandler?

    /// Registers what to do when a job fails for good (not retryable, or out of attempts): the
    /// agent records it on the job's object and, unless it was refused, moves the object to its
    /// error state.
    public func onFailure(_ handler: @escaping FailureHandler) {
        failureHandler = handler
    }

    private func fail(_ job: Job, error: String, retryable: Bool, refused: Bool = false, logger: Logger) async throws {
        try await store.fail(jobID: job.id, owner: owner, error: error, retryable: retryable)
        let after = try await store.job(id: job.id)
        guard after.state == .failed, let failureHandler else { return }
        do {
            try await JobContext.run(after) { try await failureHandler(after, refused) }
        } catch {
            logger.error("recording a failed job on its object failed", metadata: ["error": "\(error)"])
        }
    }

    /// Set when this process enqueued or finished a job since the runner last looked.
    private var poked = false

    private func poke() { poked = true }

    /// Set by ``stop()``: the runner finishes the job it is running and claims no other.
    private var stopping = false

    /// Asks the runner to stop after the current job (graceful shutdown). A job cut short anyway (the
    /// shutdown bound passed) keeps its lease until it lapses and is then taken again.
    public func stop() {
        stopping = true
        poked = true
    }

    /// Runs jobs until the task is cancelled or ``stop()`` is called. A job being run when
    /// cancellation comes stops at its next step boundary and stays leased, to be run again (and
    /// converge) when its lease lapses, exactly as after a crash.
    public func run() async {
        let wakeups = store.wakeups()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [weak self] in
                for await _ in wakeups { await self?.poke() }
            }
            group.addTask { [weak self] in await self?.loop() }
            // The loop ends on stop() or cancellation; the wakeup listener then goes with the group.
            await group.next()
            group.cancelAll()
        }
    }

    private func loop() async {
        var lastToken = (try? await store.changeToken()) ?? 0
        while !Task.isCancelled && !stopping {
            poked = false
            do {
                if try await runOne() { continue }
            } catch {
                if Task.isCancelled { break }
                logger.error("claiming a job failed; retrying", metadata: ["error": "\(error)"])
            }
            // Idle until this process enqueues, another process commits, or a delayed job may be due.
            let deadline = ContinuousClock.now + .milliseconds(250)
            while !Task.isCancelled && !poked && ContinuousClock.now < deadline {
                let token = (try? await store.changeToken()) ?? lastToken
                if token != lastToken {
                    lastToken = token
                    break
                }
                try? await Task.sleep(for: pollInterval)
            }
        }
    }

    /// Claims and runs one job; false when there was none.
    public func runOne() async throws -> Bool {
        guard let job = try await store.claimNext(targets: targets, owner: owner, lease: lease) else { return false }
        // From the moment it is claimed, every line about the job names what it is about, so that
        // `journalctl INSTANCE_UUID=…` finds even a job that fails before its handler starts.
        var logger = self.logger
        for (key, value) in JobContext.metadata(of: job) { logger[metadataKey: key] = value }
        if job.isExhausted {
            let error = job.lastError ?? "its last allowed attempt died with its agent"
            logger.error("the job's last attempt died with its agent; recording its failure", metadata: ["error": "\(error)"])
            try await fail(job, error: error, retryable: false, logger: logger)
            return true
        }
        let order: JobOrder
        do {
            order = try JobOrder.decode(kind: job.kind, payload: job.payload)
        } catch {
            logger.error("malformed job; failing it", metadata: ["error": "\(error)"])
            try await fail(job, error: "\(error)", retryable: false, logger: logger)
            return true
        }
        guard let handler = handlers[order.kind] else {
            logger.error("no handler for this job kind on this agent; failing it")
            try await fail(
                job, error: "this agent has no handler for \(job.kind) (it handles: \(handlers.keys.map(\.rawValue).sorted().joined(separator: ", ")))",
                retryable: false, logger: logger)
            return true
        }
        let store = self.store
        let owner = self.owner
        let lease = self.lease
        let started = ContinuousClock.now
        do {
            let logger = logger
            // The handler and its lease's heartbeat run as tasks of their own, not as children of this
            // one: the heartbeat must keep renewing while a handler cut short by shutdown runs on to
            // its next step boundary (C calls do not stop for cancellation). Only a lapsed lease, or
            // this task's cancellation, cancels the handler.
            let work = Task.detached { try await JobContext.run(job) { try await handler(order, job) } }
            let heartbeat = Task.detached {
                // Renew at a third of the lease, so two missed renewals still leave time. A renewal
                // that fails (a busy store) is retried at the next beat. A lease that has lapsed ends
                // the job: another agent may already run it, and two at once would fight.
                while !Task.isCancelled {
                    try? await Task.sleep(for: lease / 3)
                    if Task.isCancelled { break }
                    do {
                        if try await !store.renewLease(jobID: job.id, owner: owner, lease: lease) {
                            work.cancel()
                            return true
                        }
                    } catch {
                        if Task.isCancelled { break }
                        logger.warning("renewing the job's lease failed; retrying", metadata: ["error": "\(error)"])
                    }
                }
                return false
            }
            let outcome = await withTaskCancellationHandler { await work.result } onCancel: { work.cancel() }
            heartbeat.cancel()
            if await heartbeat.value { throw LeaseLapsed() }
            try outcome.get()
            try await store.complete(jobID: job.id, owner: owner)
            logger.info("job done", metadata: ["job.duration": "\(ContinuousClock.now - started)"])
        } catch is LeaseLapsed {
            logger.error("the job's lease lapsed, so it was abandoned; the agent holding it now finishes it")
        } catch where Task.isCancelled {
            // Shutdown cut the job short at a step boundary: as after a crash there, it stays leased
            // and is taken again (and converges) when its lease lapses. Not a failed attempt.
            logger.warning("job interrupted by shutdown; it runs again when its lease lapses", metadata: ["error": "\(error)"])
        } catch {
            try await settle(job, error: error, logger: logger)
        }
        return true
    }

    /// Decides what a handler's error means for its job, by the error's code: a dependency that is
    /// not ready yet postpones the job without spending an attempt (until ``notReadyDeadline``); a
    /// retryable failure goes back to the queue with backoff; anything else fails the job for good.
    private func settle(_ job: Job, error: any Error, logger: Logger) async throws {
        let classified = ControlError(classifying: error)
        let refused = (error as? JobError)?.isRefusal ?? false
        switch classified.code {
        case .notReady:
            let waited = Date().timeIntervalSince(job.created)
            if waited < Double(notReadyDeadline.components.seconds) {
                logger.info("job waits for a dependency", metadata: ["reason": "\(classified.message)"])
                try await store.postpone(jobID: job.id, owner: owner, delay: notReadyDelay, reason: classified.message)
            } else {
                let message = "\(classified.message) (still not ready after \(Int(waited)) s)"
                logger.error("job failed", metadata: ["error": "\(message)"])
                try await fail(job, error: message, retryable: false, logger: logger)
            }
        case _ where classified.isRetryable:
            logger.warning("job attempt failed", metadata: ["error": "\(classified.message)", "job.attempt": "\(job.attempts)"])
            try await fail(job, error: classified.message, retryable: true, logger: logger)
        default:
            logger.error(refused ? "job refused" : "job failed", metadata: ["error": "\(classified.message)"])
            try await fail(job, error: classified.message, retryable: false, refused: refused, logger: logger)
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
