#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A serial executor backed by one dedicated OS thread.
///
/// The C libraries sfnode binds block, keep per-thread state (libvirt's last error, the network
/// namespace a thread has entered with `setns`), and are not thread-safe. An actor whose executor is a
/// `ThreadExecutor` runs every isolated method on the same thread, off the cooperative pool, so a C
/// handle it owns is only ever touched from that thread.
public final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    private enum Work {
        case job(UnownedJob)
        case closure(() -> Void)
    }

    private struct State {
        var jobs: [Work] = []
        var stopping = false
    }

    /// The thread's name, as seen in `/proc/<pid>/task/*/comm` (truncated to 15 bytes by the kernel).
    public let name: String
    private let condition = NSCondition()
    private var state = State()

    /// Starts the thread. `prepare` runs on the new thread before any job, and a throw from it
    /// (for example a failed `setns`) is rethrown here and the thread ends.
    public init(name: String, prepare: @escaping @Sendable () throws -> Void = {}) throws {
        self.name = name
        let ready = DispatchSemaphore(value: 0)
        let failure = Mutex<(any Error)?>(nil)
        try OSThread.spawn(name: name) { [self] in
            do {
                try prepare()
            } catch {
                failure.withLock { $0 = error }
                ready.signal()
                return
            }
            ready.signal()
            self.runLoop()
        }
        ready.wait()
        if let error = failure.withLock({ $0 }) {
            throw error
        }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    /// Runs `body` on the executor's thread and returns its result. For work that needs the thread
    /// (its namespace, for one) but no actor state, such as spawning a process inside a namespace.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit(.closure({ continuation.resume(with: Result(catching: body)) }))
        }
    }

    private func submit(_ work: Work) {
        condition.lock()
        state.jobs.append(work)
        condition.signal()
        condition.unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets the thread end once the jobs already queued have run. Jobs enqueued later still run
    /// first, so no continuation is ever dropped.
    public func shutdown() {
        condition.lock()
        state.stopping = true
        condition.signal()
        condition.unlock()
    }

    private func runLoop() {
        while true {
            condition.lock()
            while state.jobs.isEmpty && !state.stopping {
                condition.wait()
            }
            if state.jobs.isEmpty && state.stopping {
                condition.unlock()
                return
            }
            let batch = state.jobs
            state.jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for work in batch {
                switch work {
                case .job(let job): job.runSynchronously(on: asUnownedSerialExecutor())
                case .closure(let body): body()
                }
            }
        }
    }
}
