import Foundation
import SFStore

/// The agent's locking rule. Jobs for different objects run at once (see ``JobRunner``), so what
/// they share on the host is guarded here; what one object's jobs do in order, the store already
/// guarantees (a job is not claimed while an earlier live job has its object key).
///
/// - ``host`` is held *shared* by every job step that changes the host (bridges, taps, domains,
///   namespaces, rules, dnsmasq), and *exclusively* by a reconciliation pass: a pass never sees
///   (and "repairs") an object half-way through a job, and it never stops one job's step for
///   another's. It is fair: a waiting pass is not starved by a stream of jobs.
/// - ``objects`` are per-object locks, taken inside ``host``'s shared hold, for what two jobs about
///   *different* objects both touch: a network's bridge, VXLAN flood list, namespace, DHCP hosts and
///   NAT rules (`network:<uuid>`, taken by every job that converges the network: its own jobs, and
///   the instance, float and refresh jobs that announce to it), an instance (`instance:<uuid>`,
///   which delete_all also takes), and the host-wide egress bridge and masquerade (`host:egress`).
///   Locks are taken in one order, so no two jobs wait for each other: the job's own instance or
///   interface lock first (it may be held without the host lock, through a job's long work), then
///   ``host``, then networks in UUID order, then `host:egress`; network and `host:` locks only
///   ever inside ``host``, so a pass (which holds it exclusively) never waits for one.
/// - ``images`` is held shared while a job resolves disk bases (download, convert, reference) and
///   exclusively while blobs are released and the cache evicted: a base must not be evicted (or its
///   blob deleted) between being made and being referenced. It prefers readers: a download never
///   waits for a queued release, so a pass (which resolves cached bases under the host lock) never
///   waits behind a download. The sweep of abandoned blob files only runs when no download does.
///
/// Long work (artifact.fetch, the image stage of instance.create) holds no host lock at all: it
/// holds only its own object and ``images`` shared, so a slow server never stalls another
/// namespace's network.create, nor a reconciliation pass.
///
/// The locks are re-entrant within one task (and its child tasks): a step that already holds a lock
/// (a pass converging a network, delete_all deleting an instance) takes it again for free.
public struct HostLocks: Sendable {
    public let host = ReadWriteLock(preferring: .writers)
    public let objects = KeyedLocks()
    public let images = ReadWriteLock(preferring: .readers)

    public init() {}

    /// The held locks of the current task, so that nested steps do not take a lock twice (which,
    /// with a waiting writer, would deadlock on itself).
    @TaskLocal static var held = Held()

    struct Held: Sendable {
        var host = false
        var images = false
        var keys: Set<String> = []
    }

    /// Runs a job step that changes the host: ``host`` shared, then the `keys` (see the rule above).
    public func hostStep<T: Sendable>(_ keys: [String] = [], _ body: @Sendable () async throws -> T) async throws -> T {
        let held = Self.held
        if held.host { return try await objectStep(keys, body) }
        return try await host.withShared {
            var now = held
            now.host = true
            return try await Self.$held.withValue(now) { try await objectStep(keys, body) }
        }
    }

    /// Runs `body` holding the object locks `keys` (in the rule's order), without the host lock:
    /// what one job's long work needs so that another job about the same object waits for it.
    public func objectStep<T: Sendable>(_ keys: [String], _ body: @Sendable () async throws -> T) async throws -> T {
        let held = Self.held
        let wanted = Self.ordered(keys.filter { !held.keys.contains($0) })
        if wanted.isEmpty { return try await body() }
        return try await objects.withKeys(wanted) {
            var now = held
            now.keys.formUnion(wanted)
            return try await Self.$held.withValue(now) { try await body() }
        }
    }

    /// Runs a reconciliation pass (or anything else that must see no job half-way): ``host`` exclusive.
    public func exclusive<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        let held = Self.held
        return try await host.withExclusive {
            var now = held
            now.host = true
            return try await Self.$held.withValue(now) { try await body() }
        }
    }

    /// Runs `body` holding ``images`` shared: disk bases are being resolved.
    public func resolvingImages<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        let held = Self.held
        if held.images { return try await body() }
        return try await images.withShared {
            var now = held
            now.images = true
            return try await Self.$held.withValue(now) { try await body() }
        }
    }

    /// Runs `body` holding ``images`` exclusively: blobs are released and the cache evicted.
    public func releasingImages<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await images.withExclusive { try await body() }
    }

    /// The rule's order: instances and interfaces, then networks, then host-wide keys, each by name.
    public static func ordered(_ keys: [String]) -> [String] {
        func rank(_ key: String) -> Int {
            if key.hasPrefix("network:") { return 1 }
            if key.hasPrefix("host:") { return 2 }
            return 0
        }
        return Set(keys).sorted { (rank($0), $0) < (rank($1), $1) }
    }

    /// The object lock of a network.
    public static func network(_ uuid: UUID) -> String { ObjectKey(.network, uuid).text }
    /// The object lock of an instance.
    public static func instance(_ uuid: UUID) -> String { ObjectKey(.instance, uuid).text }
    /// The object lock of an interface.
    public static func interface(_ uuid: UUID) -> String { ObjectKey.interface(uuid).text }
    /// The host-wide egress bridge and masquerade of the network node.
    public static let egress = "host:egress"
}

/// Shared and exclusive holders, in arrival order, across suspension points. An actor alone would not
/// do: its methods interleave at every `await`.
public actor ReadWriteLock {
    /// Who goes first when both wait: writers (fair: a writer waits only for the holders before it,
    /// and readers arriving after it wait for it) or readers (a reader waits only for a writer that
    /// holds the lock; writers wait until no reader holds it).
    public enum Preference: Sendable { case writers, readers }

    private let preference: Preference
    private var readers = 0
    private var writer = false
    private var queue: [(exclusive: Bool, waiter: CheckedContinuation<Void, Never>)] = []

    public init(preferring preference: Preference) {
        self.preference = preference
    }

    /// Whether anyone holds the lock (for tests and the sweep's decision).
    public var isHeld: Bool { writer || readers > 0 }

    nonisolated public func withShared<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        await lockShared()
        do {
            let result = try await body()
            await unlockShared()
            return result
        } catch {
            await unlockShared()
            throw error
        }
    }

    nonisolated public func withExclusive<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        await lockExclusive()
        return try await releasingExclusive(after: body)
    }

    /// Runs `body` holding the lock exclusively if nobody holds it or waits for it now; nil otherwise.
    nonisolated public func withExclusiveIfFree<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T? {
        guard await tryLockExclusive() else { return nil }
        return try await releasingExclusive(after: body)
    }

    /// Runs `body`, already holding the lock exclusively, and releases it however `body` ends.
    nonisolated private func releasingExclusive<T: Sendable>(after body: @Sendable () async throws -> T) async rethrows -> T {
        do {
            let result = try await body()
            await unlockExclusive()
            return result
        } catch {
            await unlockExclusive()
            throw error
        }
    }

    private func lockShared() async {
        let mustWait = writer || (preference == .writers && !queue.isEmpty)
        if !mustWait {
            readers += 1
            return
        }
        await withCheckedContinuation { queue.append((false, $0)) }
    }

    private func lockExclusive() async {
        if !writer && readers == 0 && queue.isEmpty {
            writer = true
            return
        }
        await withCheckedContinuation { queue.append((true, $0)) }
    }

    private func tryLockExclusive() -> Bool {
        guard !writer && readers == 0 && queue.isEmpty else { return false }
        writer = true
        return true
    }

    private func unlockShared() {
        readers -= 1
        grant()
    }

    private func unlockExclusive() {
        writer = false
        grant()
    }

    /// Hands the lock to the waiters that may have it now; the state changes before each resumes.
    private func grant() {
        guard !writer else { return }
        switch preference {
        case .writers:
            while let first = queue.first {
                if first.exclusive {
                    guard readers == 0 else { return }
                    writer = true
                    queue.removeFirst().waiter.resume()
                    return
                }
                readers += 1
                queue.removeFirst().waiter.resume()
            }
        case .readers:
            // Every waiting reader first; a writer only once none holds the lock.
            let waitingReaders = queue.filter { !$0.exclusive }
            queue.removeAll { !$0.exclusive }
            readers += waitingReaders.count
            for reader in waitingReaders { reader.waiter.resume() }
            if readers == 0, let index = queue.firstIndex(where: { $0.exclusive }) {
                writer = true
                queue.remove(at: index).waiter.resume()
            }
        }
    }
}

/// Exclusive locks by name, each held by one holder at a time, in arrival order.
public actor KeyedLocks {
    private var held: Set<String> = []
    private var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    public init() {}

    /// Runs `body` holding every key of `keys`, taken one after another in the order given.
    nonisolated public func withKeys<T: Sendable>(_ keys: [String], _ body: @Sendable () async throws -> T) async rethrows -> T {
        for key in keys { await lock(key) }
        do {
            let result = try await body()
            for key in keys.reversed() { await unlock(key) }
            return result
        } catch {
            for key in keys.reversed() { await unlock(key) }
            throw error
        }
    }

    /// Whether `key` is held now (for tests).
    public func isHeld(_ key: String) -> Bool { held.contains(key) }

    private func lock(_ key: String) async {
        if held.insert(key).inserted { return }
        await withCheckedContinuation { waiters[key, default: []].append($0) }
    }

    private func unlock(_ key: String) {
        if var queue = waiters[key], !queue.isEmpty {
            // Handed straight to the next waiter: the key stays held.
            let next = queue.removeFirst()
            waiters[key] = queue.isEmpty ? nil : queue
            next.resume()
        } else {
            held.remove(key)
        }
    }
}
