import Foundation
import PostgresNIO

/// The queue's busiest operations on PostgreSQL, each one statement that is its own transaction.
///
/// In a transaction, an enqueue was six round trips to the server (BEGIN, the advisory lock, the
/// clock, the INSERT, NOTIFY and the change token, COMMIT), a claim six and a completion five;
/// each round trip costs a pool thread's wake-up and a statement's parse and plan, and with both
/// cores busy that, not the rows, bounded the queue (535 jobs/s claimed and completed one at a
/// time). Here each is one statement: the clock is the server's `now()` inside it, NOTIFY and the
/// change token are common table expressions that run only when rows changed, and the statement's
/// own commit ends it. The rules are the transactional path's (SQLStore+Queue.swift); the queue's
/// contract suite runs on both backends and holds them to the same answers.
enum PostgresQueue {
    /// The server's clock in the store's unit, seconds since 1970; `now()` is the start of the
    /// statement's transaction, so every use in one statement agrees.
    static let now = "extract(epoch FROM now())::float8"

    /// Moves the change token and wakes the queue's listeners once, when `rows` (a common table
    /// expression) is not empty: one NOTIFY per transaction, never per row. Its one row is joined
    /// with the answer, so that it runs (and, with no rows, the answer is empty anyway).
    static func signal(after rows: String, wakeClaimers: Bool) -> String {
        let notify = wakeClaimers ? "pg_notify('\(PostgresBackend.wakeupChannel)', ''), " : ""
        return "signal AS (SELECT \(notify)nextval('sfnode_change') WHERE EXISTS (SELECT 1 FROM \(rows)))"
    }

    /// Enqueues `count` jobs, in order, answering them: marks ?1 the serialising advisory lock,
    /// then kind, payload, target, object key and max attempts of each job. Taking the lock that
    /// serialised writes take keeps ids committed in the order they were given, which the claim's
    /// "no earlier live job on the same object" rule depends on: the rows cannot be made before
    /// the lock is held, for they are joined with it.
    static func enqueue(count: Int) -> String {
        let row = "(CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT))"
        let columns: [JobTable.Column] = [.kind, .payload, .target, .objectKey, .maxAttempts, .state, .attempts, .notBefore, .created, .updated]
        return """
            WITH serialised AS (SELECT pg_advisory_xact_lock(?1)),
            inserted AS (
                INSERT INTO job (\(columns.map(\.quotedName).joined(separator: ", ")))
                SELECT given.kind, given.payload, given.target, given.object_key, given.max_attempts, 'queued', 0, \(now), \(now), \(now)
                FROM serialised, (VALUES \(Array(repeating: row, count: count).joined(separator: ", ")))
                    AS given(kind, payload, target, object_key, max_attempts)
                RETURNING \(JobTable.selectList)
            ),
            \(signal(after: "inserted", wakeClaimers: true))
            SELECT inserted.* FROM inserted, signal ORDER BY inserted.id
            """
    }

    /// The most jobs ``enqueue(count:)`` takes in one statement; a larger enqueue runs as a
    /// transaction (five marks a job, and PostgreSQL takes at most 65,535).
    static let enqueueLimit = 200

    /// Claims up to ?5 jobs (``SQLStore/claimable(columns:now:order:limit:)``'s marks ?1, ?3, ?4 and ?5) for the
    /// owner ?6 with a lease of ?2 seconds; a job whose lease lapsed counts a death, and its last
    /// error says why once it died ?7 times or spent its attempts (``Job/deathMessage(deaths:)``,
    /// the same words). The rows are locked as they are chosen and passed over when another
    /// claimer holds them.
    static func claim(limit: String) -> String {
        """
        WITH picked AS (
        \(SQLStore.claimable(columns: "j.id, j.state", now: now, order: "j.id + 0", limit: limit))
        FOR UPDATE OF j SKIP LOCKED
        ),
        taken AS (
            UPDATE job SET state = 'running', lease_owner = ?6, lease_token = job.lease_token + 1, lease_expiry = \(now) + ?2,
                attempts = job.attempts + 1, updated = \(now),
                deaths = CASE WHEN picked.state = 'running' THEN job.deaths + 1 ELSE job.deaths END,
                last_error = CASE
                    WHEN picked.state <> 'running' THEN job.last_error
                    WHEN job.deaths + 1 >= ?7 THEN 'the agent died '
                        || CASE job.deaths + 1 WHEN 1 THEN 'once' WHEN 2 THEN 'twice' ELSE (job.deaths + 1) || ' times' END
                        || ' while running this job'
                    WHEN job.attempts >= job.max_attempts THEN 'lease of ' || coalesce(job.lease_owner, 'unknown')
                        || ' expired during attempt ' || job.attempts || ' of ' || job.max_attempts
                    ELSE job.last_error END
            FROM picked WHERE job.id = picked.id
            RETURNING \(JobTable.selectList(as: "job"))
        ),
        \(signal(after: "taken", wakeClaimers: false))
        SELECT taken.* FROM taken, signal ORDER BY taken.id
        """
    }

    /// ``claim(limit:)`` of one job, the limit written out: a prepared statement's one plan is made
    /// without the values of a call, and for an unknown limit PostgreSQL planned the UPDATE as a
    /// hash join over the whole table (1.3 ms a claim, where the rows it takes cost 0.1).
    static let claimOne = claim(limit: "1")

    /// ``claim(limit:)`` of up to ?5 jobs.
    static let claimBatch = claim(limit: "?5")

    /// Completes the jobs whose leases are the arrays ?1 (ids, `{1,2,3}`), ?2 (owners) and ?3
    /// (tokens) where those leases still hold them (one job's completion too), answering each job
    /// completed and how many NOTIFYs woke claimers. Claimers are woken only when a queued job
    /// waits behind a completed one on its object: nothing else can become claimable by a
    /// completion, and NOTIFY takes a lock at commit that every notifying transaction of the
    /// server queues for.
    static let complete = """
        WITH done AS (
            UPDATE job SET state = 'succeeded', lease_expiry = NULL, updated = \(now)
            FROM unnest(CAST(?1 AS BIGINT[]), CAST(?2 AS TEXT[]), CAST(?3 AS BIGINT[])) AS lease(id, owner, token)
            WHERE job.id = lease.id AND job.state = 'running' AND job.lease_owner = lease.owner
                AND job.lease_token = lease.token
            RETURNING job.id, job.object_key
        ),
        waiting AS (
            SELECT pg_notify('\(PostgresBackend.wakeupChannel)', '') WHERE EXISTS (
                SELECT 1 FROM done JOIN job AS w ON w.object_key = done.object_key AND w.id > done.id
                WHERE w.state = 'queued')
        ),
        moved AS (SELECT nextval('sfnode_change') WHERE EXISTS (SELECT 1 FROM done))
        SELECT done.id, (SELECT count(*) FROM waiting) FROM done, moved
        """
}

extension PostgresQueue {
    /// The SQL of one prepared statement.
    protocol StatementSQL: Sendable {
        /// The statement's name on each connection (PostgreSQL cuts names at 63 bytes).
        static var name: String { get }
        static var sql: String { get }
    }

    enum EnqueueOneSQL: StatementSQL {
        static let name = "sfnode_enqueue_one_v14"
        static let sql = PostgresSQL.translate(PostgresQueue.enqueue(count: 1))
    }

    enum ClaimOneSQL: StatementSQL {
        static let name = "sfnode_claim_one_v14"
        static let sql = PostgresSQL.translate(PostgresQueue.claimOne)
    }

    enum ClaimBatchSQL: StatementSQL {
        static let name = "sfnode_claim_batch_v14"
        static let sql = PostgresSQL.translate(PostgresQueue.claimBatch)
    }

    enum CompleteSQL: StatementSQL {
        static let name = "sfnode_complete_v14"
        static let sql = PostgresSQL.translate(PostgresQueue.complete)
    }

    /// A queue statement as postgres-nio prepares it once per connection (named for its SQL's
    /// type) and then executes with the store's marks.
    struct Prepared<SQL: StatementSQL>: PostgresPreparedStatement {
        typealias Row = PostgresRow
        static var name: String { SQL.name }
        static var sql: String { SQL.sql }
        let bindings: PostgresBindings

        init(_ arguments: StoreArguments) {
            bindings = PostgresTransaction.bindings(arguments)
        }

        func makeBindings() -> PostgresBindings { bindings }
        func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
    }
}

extension SQLStore {
    /// ``enqueue(_:)`` on PostgreSQL in one statement; nil when the jobs are too many for one.
    func enqueueInOneStatement(_ rows: [JobRow], on postgres: PostgresBackend) async throws -> [Job]? {
        guard !rows.isEmpty, rows.count <= PostgresQueue.enqueueLimit else { return nil }
        var arguments: StoreArguments = [PostgresBackend.writeLock]
        for row in rows {
            arguments += [row.job.kind, row.payloadText, row.job.target.description, row.job.objectKey, row.job.maxAttempts]
        }
        // One job, the common case (a user's request, a refresh), is a prepared statement: planning
        // the enqueue took as long as running it.
        let answer = rows.count == 1
            ? try await postgres.autocommitRows(PostgresQueue.Prepared<PostgresQueue.EnqueueOneSQL>(arguments))
            : try await postgres.autocommitRows(PostgresQueue.enqueue(count: rows.count), arguments)
        let jobs = try answer.map(Self.decodeJob)
        guard jobs.count == rows.count else {
            throw StoreError.backend("enqueueing \(rows.count) jobs answered \(jobs.count)")
        }
        postgres.wakeClaimers()
        return jobs
    }

    /// A claim on PostgreSQL in one statement; the marks are ``PostgresQueue/claim(limit:)``'s.
    func claimInOneStatement(_ arguments: StoreArguments, limit: Int, on postgres: PostgresBackend) async throws -> [Job] {
        // A batch keeps its plan too: planned for its own limit each time, a batch of 100 took
        // 5.7 ms where the prepared plan takes 4.5.
        let rows = limit == 1
            ? try await postgres.autocommitRows(PostgresQueue.Prepared<PostgresQueue.ClaimOneSQL>(arguments))
            : try await postgres.autocommitRows(PostgresQueue.Prepared<PostgresQueue.ClaimBatchSQL>(arguments))
        return try rows.map(Self.decodeJob)
    }

    /// ``complete(_:)-([JobLease])`` (and a single lease's completion) on PostgreSQL in one
    /// statement: the leases it refused.
    func completeInOneStatement(_ leases: [JobLease], on postgres: PostgresBackend) async throws -> [JobLease] {
        let arguments: StoreArguments = [
            PostgresSQL.arrayLiteral(leases.map { String($0.jobID) }),
            PostgresSQL.arrayLiteral(leases.map(\.owner)),
            PostgresSQL.arrayLiteral(leases.map { String($0.token) }),
        ]
        let rows = try await postgres.autocommitRows(PostgresQueue.Prepared<PostgresQueue.CompleteSQL>(arguments))
        var completed: Set<Int64> = []
        var woken = false
        for row in rows {
            let columns = PostgresPositionalRow(row.makeRandomAccess())
            do throws(ColumnTypeMismatch) {
                if let id = try columns.int64(at: 0) { completed.insert(id) }
                if try columns.int64(at: 1) ?? 0 > 0 { woken = true }
            } catch {
                throw StoreError.corrupt("a completed job \(error.problem)")
            }
        }
        if woken { postgres.wakeClaimers() }
        return leases.filter { !completed.contains($0.jobID) }
    }

    private static func decodeJob(_ row: PostgresRow) throws -> Job {
        try JobTable.decode(TableRow(PostgresPositionalRow(row.makeRandomAccess())))
    }
}
