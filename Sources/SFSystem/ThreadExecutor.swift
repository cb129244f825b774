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
    private struct State {
        var jobs: [UnownedJob] = []
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
        let thread = Thread { [self] in
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
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
        ready.wait()
        if let error = failure.withLock({ $0 }) {
            throw error
        }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        condition.lock()
        state.jobs.append(unowned)
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
            for job in batch {
                job.runSynchronously(on: asUnownedSerialExecutor())
            }
        }
    }
}
