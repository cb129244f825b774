/// One holder at a time, in arrival order, across suspension points: job handlers and reconciliation
/// passes take it, so a pass never sees (and "repairs") a network or instance half-way through a job
/// that is deleting it. An actor alone would not do: its methods interleave at every `await`.
public actor AgentLock {
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init() {}

    /// Runs `body` holding the lock.
    public func withLock<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        if !held {
            held = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    private func release() {
        if waiters.isEmpty {
            held = false
        } else {
            // Hand the lock straight to the next waiter: it stays held.
            waiters.removeFirst().resume()
        }
    }
}
