import Foundation

/// The work queue. Times are epoch seconds by the database's clock (``StoreDatabase/now()``), so
/// that nodes whose clocks differ agree on when a lease lapsed.
///
/// The queue's transactions are not serialised with the store's other writes (``SQLStore/writeQueue(_:)``):
/// a claim locks the job it takes and skips jobs other claimers hold (PostgreSQL's `FOR UPDATE
/// SKIP LOCKED`), and every later change of a running job (renew, complete, fail, postpone) names
/// its lease owner in the `UPDATE` itself, so a job that was rescued from a holder presumed dead
/// is never overwritten by that holder finishing late.
extension SQLStore {
    public func enqueue(_ jobs: [NewJob]) async throws -> [Job] {
        let rows = try jobs.map(Self.validatedRow)
        if let postgres = backend as? PostgresBackend, let enqueued = try await enqueueInOneStatement(rows, on: postgres) {
            return enqueued
        }
        return try await write { db in try rows.map { try Self.insertJob(db, $0) } }
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

    /// Inserts a queued job inside the caller's transaction, whose commit wakes claimers.
    static func insertJob(_ db: any StoreDatabase, _ row: JobRow) throws -> Job {
        let insert = JobTable.insert(
            kind: row.job.kind, payloadText: row.payloadText, target: row.job.target, objectKey: row.job.objectKey,
            maxAttempts: row.job.maxAttempts, now: Date(timeIntervalSince1970: try db.now()))
        // The row comes back from the insert itself (one statement, where a re-read was a second).
        guard let job = try db.allRows(JobTable.self, insert.sql + Self.returningJob, StoreArguments(insert.values)).first else {
            throw StoreError.backend("inserting a job answered no row")
        }
        db.jobsChanged()
        return job
    }

    static let returningJob = " RETURNING \(JobTable.selectList)"

    /// The oldest jobs a claim may take, at most ?5, in queue order (`order`: PostgreSQL orders by
    /// `id + 0`, PostgresSchema.swift says why): queued, or running with a lapsed lease by the
    /// clock `now` (a mark, or PostgreSQL's `now()`), and no earlier live job on the same object.
    /// That last rule also keeps a batch to one job per object: of two claimable jobs on one
    /// object, the later one has the earlier, live, before it. The `object_key IS NULL OR` changes
    /// no answer (NULL equals nothing) but keeps PostgreSQL from planning the rule as an anti-join
    /// of every live job against every other (30 ms a claim with 4,000 queued jobs on a table not
    /// yet analysed). The `state IN` names the live-job index's condition, so that the walk can
    /// use that index.
    static func claimable(columns: String, now: String, order: String = "j.id", limit: String = "?5") -> String {
        """
        SELECT \(columns) FROM job AS j
        WHERE j.target IN (SELECT value FROM json_each(?1))
          AND j.state IN ('queued', 'running')
          AND (j.state = 'queued' OR (j.state = 'running' AND j.lease_expiry <= \(now)))
          AND j.not_before <= \(now)
          AND (?3 = '[]' OR (CASE WHEN j.kind IN (SELECT value FROM json_each(?3)) THEN 1 ELSE 0 END) != ?4)
          AND (j.object_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM job AS e
              WHERE e.object_key = j.object_key AND e.id < j.id
                AND e.state IN ('queued', 'running')))
        ORDER BY \(order)
        LIMIT \(limit)
        """
    }

    /// ``claimable(columns:now:order:limit:)`` with the clock as the mark ?2, for the claim in a
    /// transaction (SQLite's; PostgreSQL claims in one statement, ``PostgresQueue/claim(limit:)``):
    /// a `static let`, so that every claim uses the one cached statement.
    static let selectClaimable = claimable(columns: JobTable.selectList(as: "j"), now: "?2")

    /// Takes the queued jobs whose ids are the JSON array ?4 (their deaths and last error stay as
    /// they are), answering them: one statement for a whole batch, and no read after it.
    static let takeQueued = """
        UPDATE job SET state = 'running', lease_owner = ?1, lease_token = lease_token + 1, lease_expiry = ?2,
                       attempts = attempts + 1, updated = ?3
        WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(?4))
        RETURNING \(JobTable.selectList)
        """

    /// Takes one job whose lease lapsed, counting the death and setting its last error.
    static let takeDied = """
        UPDATE job SET state = 'running', lease_owner = ?1, lease_token = lease_token + 1, lease_expiry = ?2,
                       attempts = attempts + 1, updated = ?3,
                       deaths = ?4, last_error = ?5
        WHERE id = ?6
        RETURNING \(JobTable.selectList)
        """

    /// The most jobs one ``claimBatch(targets:owner:lease:kinds:maxDeaths:limit:)`` takes.
    public static let claimBatchLimit = 1000

    public func claimNext(
        targets: [JobTarget], owner: String, lease: Duration, kinds: JobKindFilter, maxDeaths: Int
    ) async throws -> Job? {
        try await claim(targets: targets, owner: owner, lease: lease, kinds: kinds, maxDeaths: maxDeaths, limit: 1).first
    }

    public func claimBatch(
        targets: [JobTarget], owner: String, lease: Duration, kinds: JobKindFilter, maxDeaths: Int, limit: Int
    ) async throws -> [Job] {
        guard (1...Self.claimBatchLimit).contains(limit) else {
            throw StoreError.invalidArgument("claim batch limit \(limit) is not from 1 to \(Self.claimBatchLimit)")
        }
        return try await claim(targets: targets, owner: owner, lease: lease, kinds: kinds, maxDeaths: maxDeaths, limit: limit)
    }

    /// Claims up to `limit` jobs in one transaction, oldest first: the rules of ``claimNext(targets:owner:lease:kinds:maxDeaths:)``
    /// for a single claim and for a batch alike.
    private func claim(
        targets: [JobTarget], owner: String, lease: Duration, kinds: JobKindFilter, maxDeaths: Int, limit: Int
    ) async throws -> [Job] {
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
        if case .only(let names) = kinds, names.isEmpty { return [] }
        let leaseSeconds = lease.seconds
        if let postgres = backend as? PostgresBackend {
            return try await claimInOneStatement(
                [targetList, leaseSeconds, kindList, excluding, limit, owner, maxDeaths], limit: limit, on: postgres)
        }
        return try await writeQueue { db -> [Job] in
            let now = try db.now()
            let candidates = try db.allRows(
                JobTable.self, Self.selectClaimable, [targetList, now, kindList, excluding, limit])
            var claimed: [Job] = []
            var queued: [Int64] = []
            for candidate in candidates {
                guard candidate.state == .running else {
                    queued.append(candidate.id)
                    continue
                }
                // A running job whose lease lapsed was in flight when its agent died (or hung): a
                // death, whatever the attempt. Once it has died `maxDeaths` times it is handed over
                // only so that the claimer records the failure on its object (Job.diedTooOften), like
                // a job whose last allowed attempt died (Job.isExhausted); failing it here, out of the
                // claimer's sight, left the object stuck with no error and no event.
                let deaths = candidate.deaths + 1
                let lastError: String?
                if deaths >= maxDeaths {
                    lastError = Job.deathMessage(deaths: deaths)
                } else if candidate.attempts >= candidate.maxAttempts {
                    lastError = "lease of \(candidate.leaseOwner ?? "unknown") expired during attempt \(candidate.attempts) of \(candidate.maxAttempts)"
                } else {
                    lastError = candidate.lastError
                }
                claimed += try db.allRows(JobTable.self, Self.takeDied, [owner, now + leaseSeconds, now, deaths, lastError, candidate.id])
            }
            if !queued.isEmpty {
                let idList = "[" + queued.map(String.init).joined(separator: ",") + "]"
                claimed += try db.allRows(JobTable.self, Self.takeQueued, [owner, now + leaseSeconds, now, idList])
            }
            guard claimed.count == candidates.count else {
                throw StoreError.backend("a claim took \(claimed.count) of the \(candidates.count) jobs it locked")
            }
            // RETURNING answers rows in no promised order.
            return claimed.sorted { $0.id < $1.id }
        }
    }

    public func renewLease(_ lease: JobLease, for duration: Duration) async throws -> Bool {
        guard duration > .zero else { throw StoreError.invalidArgument("lease \(duration) is not positive") }
        let leaseSeconds = duration.seconds
        return try await writeQueue { db in
            let now = try db.now()
            // An expired lease is lost even if nobody has reclaimed the job yet: someone may be
            // about to, and two workers must never both believe they hold it.
            try db.execute(
                sql: """
                    UPDATE job SET lease_expiry = ?, updated = ?
                    WHERE \(Self.heldBy) AND lease_expiry > ?
                    """,
                arguments: [now + leaseSeconds, now, lease.jobID, lease.owner, lease.token, now])
            if db.changesCount == 0 {
                _ = try Self.fetchJob(db, lease.jobID)  // notFound for an unknown id, rather than a silent false
                return false
            }
            return true
        }
    }

    /// The condition that a job, marks `id`, `lease_owner` and `lease_token`, is running under
    /// that lease: checked in each statement that changes a held job, so that a claim committed
    /// in between makes it change nothing.
    static let heldBy = "id = ? AND state = 'running' AND lease_owner = ? AND lease_token = ?"

    /// The running job `lease` holds; else the error that says why not. A lease that expired but
    /// that nobody claimed again still holds its job: the work is done, and running it again
    /// would only repeat it.
    static func heldJob(_ db: any StoreDatabase, _ lease: JobLease) throws -> Job {
        let job = try fetchJob(db, lease.jobID)
        guard job.leaseOwner == lease.owner, job.leaseToken == lease.token else {
            throw StoreError.notLeaseOwner(jobID: lease.jobID, owner: lease.holder, actual: job.lease?.holder)
        }
        guard job.state == .running else { throw StoreError.jobNotRunning(jobID: lease.jobID, state: job.state.rawValue) }
        return job
    }

    public func complete(_ lease: JobLease) async throws {
        // None completed: the transactional path below says why.
        if let postgres = backend as? PostgresBackend,
            try await completeInOneStatement([lease], on: postgres).isEmpty
        {
            return
        }
        try await writeQueue { db in
            try Self.updateHeldJob(db, lease, set: Self.setSucceeded, arguments: [try db.now()])
        }
    }

    /// A completion's change of a job; the mark is the clock.
    static let setSucceeded = "state = 'succeeded', lease_expiry = NULL, updated = ?"

    public func complete(_ leases: [JobLease]) async throws -> [JobLease] {
        guard leases.count <= Self.claimBatchLimit else {
            throw StoreError.invalidArgument("\(leases.count) jobs to complete at once; at most \(Self.claimBatchLimit)")
        }
        guard !leases.isEmpty else { return [] }
        if let postgres = backend as? PostgresBackend {
            return try await completeInOneStatement(leases, on: postgres)
        }
        // [[id, owner, token], …]
        let leaseList = try JSONValue.array(leases.map { .array([.number(Double($0.jobID)), .string($0.owner), .number(Double($0.token))]) }).jsonText()
        let completed = try await writeQueue { db in
            var done: Set<Int64> = []
            try db.eachPositionalRow(
                """
                UPDATE job SET \(Self.setSucceeded)
                WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each(?2)) AND state = 'running'
                  AND (id, lease_owner, lease_token) IN (
                      SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(?2))
                RETURNING id
                """,
                [try db.now(), leaseList], reading: "a completed job"
            ) { row in
                if let id = try Int64.read(row, "a completed job's id") { done.insert(id) }
            }
            // A finished job may unblock the next job of its object.
            if !done.isEmpty { db.jobsChanged() }
            return done
        }
        return leases.filter { !completed.contains($0.jobID) }
    }

    public func fail(_ lease: JobLease, error: String, retryable: Bool) async throws {
        try await writeQueue { db in
            let job = try Self.heldJob(db, lease)
            let now = try db.now()
            if retryable && job.attempts < job.maxAttempts {
                let notBefore = now + Job.retryDelay(afterAttempt: job.attempts).seconds
                try Self.updateHeldJob(
                    db, lease,
                    set: "state = 'queued', lease_owner = NULL, lease_expiry = NULL, not_before = ?, last_error = ?, updated = ?",
                    arguments: [notBefore, error, now])
            } else {
                try Self.updateHeldJob(
                    db, lease, set: "state = 'failed', lease_expiry = NULL, last_error = ?, updated = ?",
                    arguments: [error, now])
            }
        }
    }

    public func postpone(_ lease: JobLease, delay: Duration, reason: String) async throws {
        guard delay >= .zero else { throw StoreError.invalidArgument("postponing by \(delay), a negative delay") }
        try await writeQueue { db in
            let now = try db.now()
            try Self.updateHeldJob(
                db, lease,
                set: """
                    state = 'queued', lease_owner = NULL, lease_expiry = NULL, not_before = ?,
                    attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, last_error = ?, updated = ?
                    """,
                arguments: [now + delay.seconds, reason, now])
        }
    }

    /// `UPDATE job SET <set> WHERE` ``heldBy`` `lease`; when it changes nothing, the error says
    /// why (``heldJob(_:_:)``). Wakes claimers at the commit: a finished job may unblock the next
    /// job of its object.
    static func updateHeldJob(_ db: any StoreDatabase, _ lease: JobLease, set: String, arguments: StoreArguments) throws {
        let changed = try db.execute(
            sql: "UPDATE job SET \(set) WHERE \(heldBy)",
            arguments: StoreArguments(arguments.values + [.integer(lease.jobID), .text(lease.owner), .integer(lease.token)]))
        guard changed == 1 else {
            _ = try heldJob(db, lease)
            throw StoreError.backend("\(lease) changed under its lease")
        }
        db.jobsChanged()
    }

    public func jobs(states: [JobState], limit: Int) async throws -> [Job] {
        let stateList = try JSONValue.array(states.map { .string($0.rawValue) }).jsonText()
        let capped = min(max(limit, 0), 10_000)
        return try await read { db in
            try db.allRows(JobTable.self,
                JobTable.select + """
                    WHERE ?1 = '[]' OR state IN (SELECT value FROM json_each(?1))
                    ORDER BY id DESC LIMIT ?2
                    """,
                [stateList, capped])
        }
    }

    public func liveJobCounts() async throws -> [JobCount] {
        try await read { db in
            var counts: [JobCount] = []
            try db.eachPositionalRow(
                "SELECT kind, state, count(*) FROM job WHERE state IN ('queued', 'running') GROUP BY kind, state ORDER BY kind, state",
                [], reading: "a job count"
            ) { row in
                let columns: (kind: String?, state: String?, count: Int64?)
                do throws(ColumnTypeMismatch) {
                    columns = (try row.string(at: 0), try row.string(at: 1), try row.int64(at: 2))
                } catch {
                    throw StoreError.corrupt("a job count \(error.problem)")
                }
                guard let kind = columns.kind, let state = columns.state.flatMap(JobState.init(rawValue:)), let count = columns.count
                else { throw StoreError.corrupt("a job count has an empty or unknown column") }
                counts.append(JobCount(kind: kind, state: state, count: Int(clamping: count)))
            }
            return counts
        }
    }

    public func job(id: Int64) async throws -> Job {
        try await read { db in try Self.fetchJob(db, id) }
    }
}
