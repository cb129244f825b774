import Foundation
import HTTPTypes
import Synchronization

/// The one gate every bcrypt of the API passes (each check costs about a quarter second of a core):
/// at most `limit` run at once, and when more wait, each namespace has its own queue and the queues
/// are served in turn. A namespace that floods `POST /auth` then waits behind its own guesses,
/// while another namespace's login waits for at most one check of each busy namespace. Each queue
/// holds at most `queueLimit` waiters; past that the answer is 429.
actor FairGate {
    private let limit: Int
    private let queueLimit: Int
    private var running = 0
    private var queues: [String: [CheckedContinuation<Void, Never>]] = [:]
    /// The namespaces with waiters, in the order they are served next.
    private var turn: [String] = []

    init(limit: Int, queueLimit: Int) {
        self.limit = max(1, limit)
        self.queueLimit = max(1, queueLimit)
    }

    /// How many checks of `queue` are waiting.
    func waiting(_ queue: String) -> Int { queues[queue]?.count ?? 0 }

    /// Runs `body` when `queue`'s turn comes.
    func run<T: Sendable>(queue: String, _ body: @Sendable () async throws -> T) async throws -> T {
        try await acquire(queue)
        do {
            let result = try await body()
            release()
            return result
        } catch {
            release()
            throw error
        }
    }

    private func acquire(_ queue: String) async throws {
        if running < limit && turn.isEmpty {
            running += 1
            return
        }
        let waiting = queues[queue, default: []].count
        guard waiting < queueLimit else {
            throw APIError(
                .tooManyRequests, "too many logins of namespace \(queue) are waiting; try again later", retryAfter: 1)
        }
        await withCheckedContinuation { continuation in
            if queues[queue] == nil { turn.append(queue) }
            queues[queue, default: []].append(continuation)
        }
    }

    private func release() {
        guard let queue = turn.first, var waiters = queues[queue], !waiters.isEmpty else {
            running -= 1
            return
        }
        // The slot passes straight to the next namespace's first waiter; that namespace goes to
        // the back of the turn if it has more.
        turn.removeFirst()
        let next = waiters.removeFirst()
        if waiters.isEmpty {
            queues[queue] = nil
        } else {
            queues[queue] = waiters
            turn.append(queue)
        }
        next.resume()
    }
}

/// Counts failed logins per namespace and per client address in fixed windows, and refuses logins
/// (429 with Retry-After) from either once it has too many failures in the current window. The
/// refusal comes before any bcrypt, so a flood costs nothing but the count; a namespace under a
/// flood is refused for its real key too until the window ends, which is the price of a lockout
/// that guessing cannot get around.
final class LoginThrottle: Sendable {
    private struct Window {
        var start: ContinuousClock.Instant
        var failures: Int
    }

    private let perNamespace: Int
    private let perAddress: Int
    private let window: Duration
    private let windows = Mutex<[String: Window]>([:])
    /// Past this many counters the expired ones are dropped; past it with none expired, every
    /// login is refused until the window ends (a spray from a great many addresses).
    static let tableLimit = 50_000

    init(perNamespace: Int, perAddress: Int, window: Duration) {
        self.perNamespace = perNamespace
        self.perAddress = perAddress
        self.window = window
    }

    /// Refuses the login when its namespace or its address has used up its failures.
    func check(namespace: String, address: String, now: ContinuousClock.Instant = .now) throws {
        let refusal: (String, Duration)? = windows.withLock { table in
            if table.count >= Self.tableLimit {
                table = table.filter { now - $0.value.start < window }
                if table.count >= Self.tableLimit { return ("too many clients are failing to log in", window) }
            }
            for (key, limit, what) in [("ns:" + namespace, perNamespace, "namespace \(namespace)"), ("addr:" + address, perAddress, "address \(address)")] {
                guard let entry = table[key], now - entry.start < window, entry.failures >= limit else { continue }
                return ("too many failed logins for \(what): \(entry.failures) in \(window.components.seconds) s", window - (now - entry.start))
            }
            return nil
        }
        if let refusal {
            throw APIError(.tooManyRequests, refusal.0 + "; try again later", retryAfter: max(1, Int(refusal.1.components.seconds) + 1))
        }
    }

    /// Counts a failed login against its namespace and its address.
    func recordFailure(namespace: String, address: String, now: ContinuousClock.Instant = .now) {
        windows.withLock { table in
            for key in ["ns:" + namespace, "addr:" + address] {
                if let entry = table[key], now - entry.start < window {
                    table[key]?.failures = entry.failures + 1
                } else {
                    table[key] = Window(start: now, failures: 1)
                }
            }
        }
    }
}
