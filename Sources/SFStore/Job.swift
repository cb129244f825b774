import Foundation

/// Where a job runs: one named node, or whichever node holds the network-node role.
public enum JobTarget: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The node with this name (its fqdn).
    case node(String)
    /// The network node; Shaken Fist's `networknode` queue.
    case networkNode

    /// The stored form: `node:<name>` or `role:network-node`.
    public var description: String {
        switch self {
        case .node(let name): return "node:\(name)"
        case .networkNode: return "role:network-node"
        }
    }

    /// Parses the stored form, refusing anything malformed or an unknown role.
    public static func parse(_ text: String) throws -> JobTarget {
        if text == "role:network-node" { return .networkNode }
        if text.hasPrefix("role:") { throw StoreError.invalidTarget("unknown role in '\(text)'") }
        guard text.hasPrefix("node:") else {
            throw StoreError.invalidTarget("'\(text)' is neither node:<name> nor role:network-node")
        }
        let target = JobTarget.node(String(text.dropFirst("node:".count)))
        try target.validate()
        return target
    }

    /// Refuses a node name that is empty, too long or has characters outside [A-Za-z0-9.-_]: the
    /// name is matched exactly, so a stray space would make a queue nobody ever reads.
    public func validate() throws {
        guard case .node(let name) = self else { return }
        guard !name.isEmpty else { throw StoreError.invalidTarget("empty node name") }
        guard name.utf8.count <= 253 else { throw StoreError.invalidTarget("node name longer than 253 bytes") }
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "-._".unicodeScalars.contains(scalar))
        }
        guard allowed else { throw StoreError.invalidTarget("node name '\(name)' has characters outside [A-Za-z0-9.-_]") }
    }

    public init(from decoder: any Decoder) throws {
        self = try JobTarget.parse(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// A job to queue. Store operations that create or change an object take the jobs that carry the
/// change out, so that the object and its jobs commit together: a crash never leaves an object
/// whose job was never queued.
public struct NewJob: Hashable, Sendable {
    /// What to do, such as "network.create".
    public var kind: String
    public var payload: JSONValue
    public var target: JobTarget
    /// Jobs with the same key run one at a time in enqueue order; nil means no ordering constraint.
    public var objectKey: String?
    public var maxAttempts: Int

    public init(kind: String, payload: JSONValue, target: JobTarget, objectKey: String?, maxAttempts: Int = 5) {
        self.kind = kind
        self.payload = payload
        self.target = target
        self.objectKey = objectKey
        self.maxAttempts = maxAttempts
    }
}

/// Which kinds of job a claim may take: the runner claims for its lanes separately, so that long
/// downloads never take every worker.
public enum JobKindFilter: Hashable, Sendable {
    case any
    /// Only jobs of these kinds.
    case only([String])
    /// Every kind but these (unknown kinds included, so that a malformed job is still claimed and failed).
    case excluding([String])
}

/// Where a job is in its life.
public enum JobState: String, Codable, Hashable, Sendable, CaseIterable {
    /// Waiting to be claimed (possibly not before `notBefore`).
    case queued
    /// Claimed under a lease. A running job whose lease expired is claimable again.
    case running
    case succeeded
    /// Out of attempts, or failed with a non-retryable error; `lastError` says why.
    case failed

    /// Whether the job may still run (queued, or running under a lease).
    public var isLive: Bool { self == .queued || self == .running }
}

/// How many live jobs of one kind are in one state (``NodeStore/liveJobCounts()``).
public struct JobCount: Hashable, Sendable {
    /// The job kind, as stored (`instance.create`).
    public let kind: String
    public let state: JobState
    public let count: Int

    public init(kind: String, state: JobState, count: Int) {
        self.kind = kind
        self.state = state
        self.count = count
    }
}

/// One claim's hold on a running job: its owner (the claiming agent) and which claim of the job it
/// was (``Job/leaseToken``). The store changes a job only for the lease that holds it now.
public struct JobLease: Hashable, Sendable, CustomStringConvertible {
    public var jobID: Int64
    public var owner: String
    public var token: Int64

    public init(jobID: Int64, owner: String, token: Int64) {
        self.jobID = jobID
        self.owner = owner
        self.token = token
    }

    /// "w1 (claim 2)": the holder, as errors name it.
    public var holder: String { "\(owner) (claim \(token))" }

    public var description: String { "job \(jobID) leased by \(holder)" }
}

/// A unit of work for a node agent: delivered at least once, so handlers must be idempotent.
public struct Job: Codable, Hashable, Sendable, Identifiable {
    /// Increasing in enqueue order; the queue's FIFO order.
    public var id: Int64
    /// What to do, such as "network.create".
    public var kind: String
    public var payload: JSONValue
    public var target: JobTarget
    /// The object the job acts on, such as "network:<uuid>". Jobs with the same key run one at a
    /// time in enqueue order; nil means no ordering constraint.
    public var objectKey: String?
    public var state: JobState
    /// How many times the job has been claimed. A job claimed with `attempts` above `maxAttempts`
    /// is one whose agent died during its last allowed attempt: the claimer must record it as
    /// failed (with `lastError`) rather than run it, so that its failure reaches its object.
    public var attempts: Int
    public var maxAttempts: Int
    /// How many times the job was taken back from an agent whose lease lapsed while it ran it: that
    /// agent died (or hung) with the job in flight. Counted apart from ``attempts``, so that a job
    /// that kills its process is failed after a few deaths (see ``diedTooOften(limit:)``) instead of
    /// crashing the agent once per attempt.
    public var deaths: Int
    /// The job is not claimable before this time (retry backoff).
    public var notBefore: Date
    public var leaseOwner: String?
    /// Which claim of the job its lease is: one more at every claim and never less (unlike
    /// ``attempts``, which a postponement gives back), so that a holder whose lease lapsed and was
    /// claimed again, even by its own process, can no longer change the job (River's #1302).
    public var leaseToken: Int64
    public var leaseExpiry: Date?
    public var lastError: String?
    public var created: Date
    public var updated: Date

    public init(
        id: Int64, kind: String, payload: JSONValue, target: JobTarget, objectKey: String?, state: JobState,
        attempts: Int, maxAttempts: Int, deaths: Int = 0, notBefore: Date, leaseOwner: String?, leaseToken: Int64 = 0,
        leaseExpiry: Date?, lastError: String?, created: Date, updated: Date
    ) {
        self.id = id
        self.kind = kind
        self.payload = payload
        self.target = target
        self.objectKey = objectKey
        self.state = state
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.deaths = deaths
        self.notBefore = notBefore
        self.leaseOwner = leaseOwner
        self.leaseToken = leaseToken
        self.leaseExpiry = leaseExpiry
        self.lastError = lastError
        self.created = created
        self.updated = updated
    }

    /// The lease a claim handed over with this job: what renewing, completing, failing and
    /// postponing it name. Nil unless the job is running.
    public var lease: JobLease? {
        guard state == .running, let leaseOwner else { return nil }
        return JobLease(jobID: id, owner: leaseOwner, token: leaseToken)
    }

    /// Whether the claimer got the job only to record that its last allowed attempt died with its
    /// agent (see ``attempts``).
    public var isExhausted: Bool { attempts > maxAttempts }

    /// Whether the job's agent died under it `limit` times or more: it is never run again, only
    /// recorded as failed (the claim sets ``lastError`` to ``deathMessage(deaths:)``).
    public func diedTooOften(limit: Int) -> Bool { deaths >= limit }

    /// The error of a job failed because its agent died under it `deaths` times.
    public static func deathMessage(deaths: Int) -> String {
        let times = deaths == 1 ? "once" : deaths == 2 ? "twice" : "\(deaths) times"
        return "the agent died \(times) while running this job"
    }

    /// The most deaths a job may cause by default: two, so that one poisoned job restarts the agent
    /// twice, well inside systemd's StartLimitBurst=5.
    public static let defaultMaxDeaths = 2

    /// The delay before a retry after failed attempt number `attempt` (1-based):
    /// 0.5 s × 2^(attempt-1), capped at 30 s, so a flapping dependency is not hammered but a
    /// transient one is retried within a second.
    public static func retryDelay(afterAttempt attempt: Int) -> Duration {
        let exponent = min(max(attempt - 1, 0), 16)
        let seconds = min(0.5 * Double(1 << exponent), 30)
        return .milliseconds(Int64(seconds * 1000))
    }

    enum CodingKeys: String, CodingKey {
        case id, kind, payload, target, state, attempts, created, updated
        case objectKey = "object_key"
        case maxAttempts = "max_attempts"
        case deaths
        case notBefore = "not_before"
        case leaseOwner = "lease_owner"
        case leaseToken = "lease_token"
        case leaseExpiry = "lease_expiry"
        case lastError = "last_error"
    }
}

extension Duration {
    /// The duration in seconds, as a Double (SQLite stores times as epoch seconds).
    var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
