import Foundation
import GRDB

/// The work queue. Times are wall-clock epoch seconds because leases are compared by several
/// processes; a lease is therefore only as good as the node's clock, which is fine for one node.
extension SQLiteStore {
    public func enqueue(_ jobs: [NewJob]) async throws -> [Job] {
        let rows = try jobs.map(Self.validatedRow)
        let queued = try await write { db in try rows.map { try Self.insertJob(db, $0) } }
        // Only after the commit: a woken claimer must be able to see the jobs.
        if !queued.isEmpty { signal() }
        return queued
    }

    /// A job checked and with its payload as text, ready for ``insertJob(_:_:)`` inside a transaction.
    struct JobRow: Sendable {
        var job: NewJob
        var payloadText: String
    }

    static func validatedRow(_ job: NewJob) throws -> JobRow {
        try job.target.validate()
        guard !job.kind.isEmpty else { throw StoreError.invalidArgument("job kind is empty") }
        guard job.maxAttempts >= 1 else { throw StoreError.invalidArgument("maxAttempts \(job.maxAttempts) is below 1") }
        return JobRow(job: job, payloadText: try job.payload.jsonText())
    }

    /// Inserts a queued job inside the caller's transaction. The caller signals after the commit.
    static func insertJob(_ db: Database, _ row: JobRow) throws -> Job {
        try execute(
            db,
            JobTable.insert(
                kind: row.job.kind, payloadText: row.payloadText, target: row.job.target, objectKey: row.job.objectKey,
                maxAttempts: row.job.maxAttempts, now: Date.storableNow()))
        return try fetchJob(db, db.lastInsertedRowID)
    }

    /// v6-job-deaths: lease lapses of a running job, counted apart from attempts.
    static func registerQueueMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v6-job-deaths") { db in
            try db.execute(sql: "ALTER TABLE job ADD COLUMN deaths INTEGER NOT NULL DEFAULT 0")
        }
    }

    /// The oldest job a claim may take: queued, or running with a lapsed lease, and no earlier
    /// live job on the same object. A `static let`, so every claim uses the one cached statement.
    static let selectClaimable = """
        SELECT \(JobTable.selectList(as: "j")) FROM job AS j
        WHERE j.target IN (SELECT value FROM json_each(?1))
          AND (j.state = 'queued' OR (j.state = 'running' AND j.lease_expiry <= ?2))
          AND j.not_before <= ?2
          AND (?3 = '[]' OR (j.kind IN (SELECT value FROM json_each(?3))) != ?4)
          AND NOT EXISTS (
              SELECT 1 FROM job AS e
              WHERE e.object_key = j.object_key AND e.id < j.id
                AND e.state IN ('queued', 'running'))
        ORDER BY j.id
        LIMIT 1
        """

    public func claimNext(
        targets: [JobTarget], owner: String, lease: Duration, kinds: JobKindFilter, maxDeaths: Int
    ) async throws -> Job? {
        guard !targets.isEmpty else { throw StoreError.invalidTarget("no targets to claim for") }
        for target in targets { try target.validate() }
        guard !owner.isEmpty else { throw StoreError.invalidArgument("lease owner is empty") }
        guard lease > .zero else { throw StoreError.invalidArgument("lease \(lease) is not positive") }
        guard maxDeaths >= 1 else { throw StoreError.invalidArgument("maxDeaths \(maxDeaths) is below 1") }
        let targetList = try JSONValue.array(targets.map { .string($0.description) }).jsonText()
        // ?3 is the kinds a claim may take ('[]' for any), ?4 whether it takes every kind but those.
        let kindList: String
        let excluding: Bool
        switch kinds {
        case .any: (kindList, excluding) = ("[]", false)
        case .only(let names): (kindList, excluding) = (try JSONValue.array(names.map { .string($0) }).jsonText(), false)
        case .excluding(let names): (kindList, excluding) = (try JSONValue.array(names.map { .string($0) }).jsonText(), true)
        }
        if case .only(let names) = kinds, names.isEmpty { return nil }
        let leaseSeconds = lease.seconds
        return try await write { db -> Job? in
            let now = Date().timeIntervalSince1970
            guard
                let candidate = try Self.firstRow(db, JobTable.self, Self.selectClaimable, [targetList, now, kindList, excluding])
            else { return nil }
            // A running job whose lease lapsed was in flight when its agent died (or hung): a death,
            // whatever the attempt. Once it has died `maxDeaths` times it is handed over only so that
            // the claimer records the failure on its object (Job.diedTooOften), like a job whose
            // last allowed attempt died (Job.isExhausted); failing it here, out of the claimer's
            // sight, left the object stuck with no error and no event.
            let died = candidate.state == .running
            let deaths = candidate.deaths + (died ? 1 : 0)
            let lastError: String?
            if died && deaths >= maxDeaths {
                lastError = Job.deathMessage(deaths: deaths)
            } else if died && candidate.attempts >= candidate.maxAttempts {
                lastError = "lease of \(candidate.leaseOwner ?? "unknown") expired during attempt \(candidate.attempts) of \(candidate.maxAttempts)"
            } else {
                lastError = candidate.lastError
            }
            try db.execute(
                sql: """
                    UPDATE job SET state = 'running', lease_owner = ?, lease_expiry = ?, attempts = attempts + 1,
                                   deaths = ?, last_error = ?, updated = ?
                    WHERE id = ?
                    """,
                arguments: [owner, now + leaseSeconds, deaths, lastError, now, candidate.id])
            return try Self.fetchJob(db, candidate.id)
        }
    }

    public func renewLease(jobID: Int64, owner: String, lease: Duration) async throws -> Bool {
        guard lease > .zero else { throw StoreError.invalidArgument("lease \(lease) is not positive") }
        let leaseSeconds = lease.seconds
        return try await write { db in
            let now = Date().timeIntervalSince1970
            // An expired lease is lost even if nobody has reclaimed the job yet: someone may be
            // about to, and two workers must never both believe they hold it.
            try db.execute(
                sql: """
                    UPDATE job SET lease_expiry = ?, updated = ?
                    WHERE id = ? AND state = 'running' AND lease_owner = ? AND lease_expiry > ?
                    """,
                arguments: [now + leaseSeconds, now, jobID, owner, now])
            if db.changesCount == 0 {
                _ = try Self.fetchJob(db, jobID)  // notFound for an unknown id, rather than a silent false
                return false
            }
            return true
        }
    }

    /// The running job `jobID` if `owner` holds it; else the error that says why not. A lease that
    /// expired but that nobody reclaimed still belongs to its owner: the work is done, and running
    /// it again would only repeat it.
    static func ownedRunningJob(_ db: Database, jobID: Int64, owner: String) throws -> Job {
        let job = try fetchJob(db, jobID)
        guard job.leaseOwner == owner else {
            throw StoreError.notLeaseOwner(jobID: jobID, owner: owner, actual: job.state == .running ? job.leaseOwner : nil)
        }
        guard job.state == .running else { throw StoreError.jobNotRunning(jobID: jobID, state: job.state.rawValue) }
        return job
    }

    public func complete(jobID: Int64, owner: String) async throws {
        try await write { db in
            _ = try Self.ownedRunningJob(db, jobID: jobID, owner: owner)
            try db.execute(
                sql: "UPDATE job SET state = 'succeeded', lease_expiry = NULL, updated = ? WHERE id = ?",
                arguments: [Date().timeIntervalSince1970, jobID])
        }
        signal()
    }

    public func fail(jobID: Int64, owner: String, error: String, retryable: Bool) async throws {
        try await write { db in
            let job = try Self.ownedRunningJob(db, jobID: jobID, owner: owner)
            let now = Date().timeIntervalSince1970
            if retryable && job.attempts < job.maxAttempts {
                let notBefore = now + Job.retryDelay(afterAttempt: job.attempts).seconds
                try db.execute(
                    sql: """
                        UPDATE job SET state = 'queued', lease_owner = NULL, lease_expiry = NULL, not_before = ?,
                                       last_error = ?, updated = ?
                        WHERE id = ?
                        """,
                    arguments: [notBefore, error, now, jobID])
            } else {
                try db.execute(
                    sql: "UPDATE job SET state = 'failed', lease_expiry = NULL, last_error = ?, updated = ? WHERE id = ?",
                    arguments: [error, now, jobID])
            }
        }
        signal()
    }

    public func postpone(jobID: Int64, owner: String, delay: Duration, reason: String) async throws {
        guard delay >= .zero else { throw StoreError.invalidArgument("postponing by \(delay), a negative delay") }
        try await write { db in
            _ = try Self.ownedRunningJob(db, jobID: jobID, owner: owner)
            let now = Date().timeIntervalSince1970
            try db.execute(
                sql: """
                    UPDATE job SET state = 'queued', lease_owner = NULL, lease_expiry = NULL, not_before = ?,
                                   attempts = max(attempts - 1, 0), last_error = ?, updated = ?
                    WHERE id = ?
                    """,
                arguments: [now + delay.seconds, reason, now, jobID])
        }
        signal()
    }

    public func jobs(states: [JobState], limit: Int) async throws -> [Job] {
        let stateList = try JSONValue.array(states.map { .string($0.rawValue) }).jsonText()
        let capped = min(max(limit, 0), 10_000)
        return try await read { db in
            try Self.allRows(
                db, JobTable.self,
                JobTable.select + """
                    WHERE ?1 = '[]' OR state IN (SELECT value FROM json_each(?1))
                    ORDER BY id DESC LIMIT ?2
                    """,
                [stateList, capped])
        }
    }

    public func job(id: Int64) async throws -> Job {
        try await read { db in try Self.fetchJob(db, id) }
    }
}
