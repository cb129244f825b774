import Foundation
import Logging
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
    public typealias Handler = @Sendable (Job) async throws -> Void

    private let store: any NodeStore
    private let targets: [JobTarget]
    private let owner: String
    private let lease: Duration
    private let pollInterval: Duration
    private let logger: Logger
    private var handlers: [String: Handler] = [:]

    /// A runner for `targets`, claiming as `owner` (unique per agent process) with leases of `lease`.
    public init(
        store: any NodeStore, targets: [JobTarget], owner: String, lease: Duration = .seconds(30),
        pollInterval: Duration = .milliseconds(20), logger: Logger
    ) {
        self.store = store
        self.targets = targets
        self.owner = owner
        self.lease = lease
        self.pollInterval = pollInterval
        self.logger = logger
    }

    /// Registers the handler of one job kind, such as `network.create`.
    public func register(_ kind: String, _ handler: @escaping Handler) {
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
        var logger = self.logger
        logger[metadataKey: "job.id"] = "\(job.id)"
        logger[metadataKey: "job.kind"] = "\(job.kind)"
        guard let handler = handlers[job.kind] else {
            logger.error("unknown job kind; failing it")
            try await fail(
                job, error: "unknown job kind '\(job.kind)' (known: \(handlers.keys.sorted().joined(separator: ", ")))",
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
            let work = Task.detached { try await JobContext.run(job) { try await handler(job) } }
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
        } catch let error where Self.isPermanent(error) {
            logger.error("job failed", metadata: ["error": "\(error)"])
            try await fail(job, error: "\(error)", retryable: false, logger: logger)
        } catch let error as JobError {
            logger.error(error.isRefusal ? "job refused" : "job failed", metadata: ["error": "\(error)"])
            try await fail(job, error: error.description, retryable: false, refused: error.isRefusal, logger: logger)
        } catch {
            logger.warning("job attempt failed", metadata: ["error": "\(error)", "job.attempt": "\(job.attempts)"])
            try await fail(job, error: "\(error)", retryable: true, logger: logger)
        }
        return true
    }
}

extension JobRunner {
    /// Errors that no retry can cure: the object is gone, the transition is forbidden, the input is
    /// invalid. Retrying them would only repeat side effects five times.
    static func isPermanent(_ error: any Error) -> Bool {
        switch error {
        case let error as StoreError:
            switch error {
            case .notFound, .invalidTransition, .invalidArgument: return true
            default: return false
            }
        case is DomainSpecError: return true
        default: return false
        }
    }
}

/// The heartbeat found the job's lease gone (it lapsed and was taken, or the job was finished).
struct LeaseLapsed: Error {}

/// A job that can never succeed as given (malformed payload, impossible transition): failed at once,
/// not retried.
public struct JobError: Error, CustomStringConvertible, Sendable {
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
}
