#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Synchronization

/// A serial executor backed by one dedicated OS thread.
///
/// The C libraries sfnode binds block, keep per-thread state (libvirt's last error, the network
/// namespace a thread has entered with `setns`), and are not thread-safe. An actor whose executor is a
/// `ThreadExecutor` runs every isolated method on the same thread, off the cooperative pool, so a C
/// handle it owns is only ever touched from that thread.
///
/// The thread ends when the executor is released. Work only reaches it through a reference to the
/// executor (an actor that holds it, a caller awaiting ``run(_:)``), so nothing can be queued once it
/// is gone, and everything queued before runs first.
public final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    /// The thread's name, as seen in `/proc/<pid>/task/*/comm` (truncated to 15 bytes by the kernel).
    public let name: String
    /// Owned by the thread, not by the executor, so that the thread does not keep the executor alive.
    private let queue: WorkQueue

    /// Starts the thread. `prepare` runs on the new thread before any job, and a throw from it
    /// (for example a failed `setns`) is rethrown here and the thread ends.
    ///
    /// This waits for the thread to start and run `prepare`: well under a millisecond, but a wait,
    /// so async code that creates many of them should use ``start(name:prepare:)``.
    public init(name: String, prepare: @escaping @Sendable () throws -> Void = {}) throws {
        self.name = name
        let queue = WorkQueue()
        self.queue = queue
        let ready = DispatchSemaphore(value: 0)
        let failure = Mutex<(any Error)?>(nil)
        try Self.spawn(name: name, queue: queue, prepare: prepare) { error in
            failure.withLock { $0 = error }
            ready.signal()
        }
        ready.wait()
        if let error = failure.withLock({ $0 }) {
            throw error
        }
    }

    private init(name: String, startedQueue: WorkQueue) {
        self.name = name
        self.queue = startedQueue
    }

    /// Starts the thread without blocking the caller's thread while it comes up.
    public static func start(name: String, prepare: @escaping @Sendable () throws -> Void = {}) async throws
        -> ThreadExecutor
    {
        let queue = WorkQueue()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            do {
                try spawn(name: name, queue: queue, prepare: prepare) { error in
                    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                }
            } catch {
                continuation.resume(throwing: error)
            }
        }
        return ThreadExecutor(name: name, startedQueue: queue)
    }

    /// Spawns the thread; `started` is called once, from the thread, after `prepare` (with its error).
    private static func spawn(
        name: String, queue: WorkQueue, prepare: @escaping @Sendable () throws -> Void,
        started: @escaping @Sendable ((any Error)?) -> Void
    ) throws {
        try OSThread.spawn(name: name) {
            do {
                try prepare()
            } catch {
                started(error)
                return
            }
            started(nil)
            queue.runUntilShutdown()
        }
    }

    deinit {
        queue.shutdown()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let executor = asUnownedSerialExecutor()
        queue.submit { unowned.runSynchronously(on: executor) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Runs `body` on the executor's thread and returns its result. For work that needs the thread
    /// (its namespace, for one) but no actor state, such as spawning a process inside a namespace.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.submit { continuation.resume(with: Result(catching: body)) }
        }
    }
}

/// The thread's queue of work: closures run in order, until shutdown and the queue is empty.
private final class WorkQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var work: [() -> Void] = []
    private var stopping = false

    func submit(_ item: @escaping () -> Void) {
        condition.lock()
        work.append(item)
        condition.signal()
        condition.unlock()
    }

    func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    func runUntilShutdown() {
        while true {
            condition.lock()
            while work.isEmpty && !stopping {
                condition.wait()
            }
            if work.isEmpty {
                condition.unlock()
                return
            }
            let batch = work
            work.removeAll(keepingCapacity: true)
            condition.unlock()
            for item in batch { item() }
        }
    }
}
