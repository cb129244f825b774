import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import SFSystem
import Synchronization

/// The cluster backend: a PostgreSQL database shared by every node, through postgres-nio.
///
/// The store's operations are synchronous (``StoreDatabase``), as GRDB's are; here each transaction
/// runs on a thread of a pool of its own, never on Swift's cooperative pool, holding one connection
/// and waiting on its replies. Threads and connections are as many as
/// ``PostgresStoreConfiguration/poolSize`` (bounded), so a thread always finds a connection.
///
/// - Writes the store serialises take a transaction-scoped advisory lock first, so that "read what
///   is free, then take it" (addresses, VXLAN ids, quotas) behaves as under SQLite's single writer,
///   in every process of the cluster. The queue's writes do not: a claim takes its job with `FOR
///   UPDATE SKIP LOCKED` and later changes name the lease owner in their `UPDATE`.
/// - Times that several nodes compare (leases, check-ins) are the server's `now()`.
/// - A transaction that enqueued or finished jobs sends one `NOTIFY` before its commit; a listening
///   connection of each process wakes its claimers (``PostgresListener``).
/// - A broken connection is dropped and the next transaction opens a new one, so the store
///   outlives a restart of the server without a restart of its own.
final class PostgresBackend: StoreBackend {
    let configuration: PostgresStoreConfiguration
    private let threads: NIOThreadPool
    private let idle: IdleConnections
    /// One for each connection in use, at most ``PostgresStoreConfiguration/poolSize``, for both
    /// ways of using one (a pool thread's transaction, a task's one statement). A connection is
    /// opened only when none is idle, so the connections open are never more than that either.
    private let permits: ConnectionPermits
    private let nextConnectionID = Atomic<Int>(1)
    private let wakeupHub: WakeupHub
    private let listener: PostgresListener
    private let closed = OnceFlag()
    private let logger: Logger

    /// The channel the queue's wake-ups are sent on.
    static let wakeupChannel = "sfnode_jobs"
    /// The advisory lock every serialised write takes (ASCII "sfnodeW1"); PostgreSQL scopes
    /// advisory locks to the database.
    static let writeLock: Int64 = 0x7366_6E6F_6465_5731
    /// The advisory lock a process holds while it migrates ("sfnodeM1").
    static let migrationLock: Int64 = 0x7366_6E6F_6465_4D31

    init(configuration: PostgresStoreConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        threads = NIOThreadPool(numberOfThreads: configuration.poolSize)
        permits = ConnectionPermits(configuration.poolSize)
        threads.start()
        let hub = WakeupHub(storePath: nil, logger: logger)
        wakeupHub = hub
        let idle = IdleConnections()
        self.idle = idle
        // A server that ended the listener's connection (a restart) has most likely ended the idle
        // ones too, and postgres-nio may not have noticed yet: they are closed rather than tried.
        listener = PostgresListener(configuration: configuration, logger: logger, onLost: { idle.closeAll() }) { hub.fire() }
        do {
            let connection = try Self.connect(configuration, id: 0, logger: logger)
            defer { try? connection.close().wait() }
            // Waits for the migration lock as long as another starter migrates.
            try PostgresMigrator(connection: connection, logger: logger).migrate()
        } catch {
            shutDown(waiting: true)
            throw StoreError.backend("opening \(configuration.redactedURL): \(Self.message(error))")
        }
        listener.start()
    }

    /// Without waiting: the last reference may go on a thread of the pool itself (the closure of
    /// a transaction that outlived its store), which must not wait for its own pool to stop.
    deinit {
        shutDown(waiting: false)
    }

    let columnsQuery = """
        SELECT column_name::text FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position
        """
    let tablesQuery = """
        SELECT table_name::text FROM information_schema.tables
        WHERE table_schema = current_schema() AND table_name != 'sfnode_migration' ORDER BY table_name
        """

    /// Nothing: the pool's connections keep no cache of rows, and the server holds the pages.
    func releaseMemory() async {}

    func close() {
        shutDown(waiting: true)
    }

    private func shutDown(waiting: Bool) {
        guard closed.claim() else { return }
        listener.stop()
        if waiting {
            for connection in idle.drain() { try? connection.close().wait() }
            try? threads.syncShutdownGracefully()
        } else {
            idle.closeAll()
            threads.shutdownGracefully { _ in }
        }
    }

    // MARK: Transactions

    func write<T: Sendable>(serialised: Bool, _ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        let (result, jobsChanged) = try await onConnection { connection in
            try self.transaction(connection, begin: "BEGIN", lock: serialised ? Self.writeLock : nil) { transaction in
                let result = try body(transaction)
                // One NOTIFY per transaction, never per row: NOTIFY takes a global lock at commit.
                // The change token moves once per transaction that changed rows. Both in one
                // statement when both are due (a round trip fewer for every enqueue and completion).
                switch (transaction.jobsChangedMark, transaction.wroteRows) {
                case (true, true):
                    try transaction.execute(sql: "SELECT pg_notify('\(Self.wakeupChannel)', ''), nextval('sfnode_change')")
                case (true, false): try transaction.execute(sql: "NOTIFY \(Self.wakeupChannel)")
                case (false, true): try transaction.execute(sql: "SELECT nextval('sfnode_change')")
                case (false, false): break
                }
                return (result, transaction.jobsChangedMark)
            }
        }
        // This process's claimers need not wait for the notification to come back.
        if jobsChanged { wakeupHub.fire() }
        return result
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        try await onConnection { connection in
            try self.transaction(connection, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", lock: nil) { transaction in
                try body(transaction)
            }
        }
    }

    func readByKey<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        try await read(body)
    }

    func wakeups() -> AsyncStream<Void> { wakeupHub.subscribe() }

    /// A sequence that every write transaction that changed rows advances before its commit. A
    /// sequence is not transactional, so a transaction that then fails to commit moves it too: a
    /// spare look for the poller, never a missed change.
    func changeToken() async throws -> Int64 {
        try await singleStatement { session in try session.fetchOne(Int64.self, sql: "SELECT last_value FROM sfnode_change") ?? 0 }
    }

    /// The server's clock now (not the transaction's start, as `now()` would be).
    func clock() async throws -> Double {
        try await singleStatement { session in
            guard let now = try session.fetchOne(Double.self, sql: "SELECT extract(epoch FROM clock_timestamp())::float8") else {
                throw StoreError.backend("the server answered no time")
            }
            return now
        }
    }

    /// `body`'s one statement, outside a transaction: a single statement is its own snapshot, and
    /// BEGIN and COMMIT would cost two round trips more.
    private func singleStatement<T: Sendable>(_ body: @escaping @Sendable (PostgresTransaction) throws -> T) async throws -> T {
        try await onConnection { connection in
            // One read-only statement: a StaleConnection from it is tried again on a new
            // connection when the connection was a reused idle one (onConnection).
            try body(PostgresTransaction(connection: connection, answerLimit: self.answerLimit, logger: self.logger))
        }
    }

    // MARK: The queue's statements

    /// The rows of `sql`, one statement that is its own transaction (PostgresQueue.swift), run from
    /// the calling task on an idle connection (a new one when none is idle). Without a pool
    /// thread: the reply resumes the task from the connection's event loop, where a transaction
    /// on a pool thread cost two thread wake-ups more per statement, and on these virtual cores
    /// the wake-ups, not the server, bounded the queue (the server sat waiting for its clients
    /// two thirds of the time with 16 claimers). A reused idle connection that the server had
    /// ended is replaced once, as ``onConnection(_:)`` does.
    func autocommitRows(_ sql: String, _ arguments: StoreArguments) async throws -> [PostgresRow] {
        let query = PostgresQuery(unsafeSQL: PostgresSQL.translate(sql), binds: PostgresTransaction.bindings(arguments))
        let logger = logger
        return try await onIdleConnection { connection in Array(try await connection.query(query, logger: logger).get().rows) }
    }

    /// ``autocommitRows(_:_:)`` of a statement the connection prepares once and then only
    /// executes: the claim's plan took longer to make (1.1–1.6 ms) than to run. Prepared
    /// statements keep one generic plan (`plan_cache_mode`, ``connecting(_:id:logger:)``), so that
    /// the plan is the same for every claim, not chosen again from the statistics of the moment.
    func autocommitRows<Statement: PostgresPreparedStatement>(_ statement: Statement) async throws -> [PostgresRow]
    where Statement.Row == PostgresRow {
        let logger = logger
        return try await onIdleConnection { connection in
            var rows: [PostgresRow] = []
            for try await row in try await connection.execute(statement, logger: logger) { rows.append(row) }
            return rows
        }
    }

    /// `work` on an idle connection, or a new one when none is idle; a reused one that the server
    /// had ended is replaced once, as ``onConnection(_:)`` does. The connection goes back idle
    /// unless no answer came.
    private func onIdleConnection(
        _ work: @escaping @Sendable (PostgresConnection) async throws -> [PostgresRow]
    ) async throws -> [PostgresRow] {
        guard !closed.isClaimed else { throw StoreError.backend("the store is closed") }
        await permits.acquire()
        defer { permits.release() }
        var reused = idle.take()
        while true {
            let connection: PostgresConnection
            if let reused {
                connection = reused
            } else {
                do {
                    connection = try await Self.connecting(configuration, id: nextConnectionID.wrappingAdd(1, ordering: .relaxed).oldValue, logger: logger).get()
                } catch {
                    throw StoreError.backend(Self.message(error))
                }
            }
            do {
                let rows = try await answer(on: connection) { try await work(connection) }
                idle.give(connection)
                return rows
            } catch let error as PostgresNoAnswer {
                throw StoreError.backend(error.description)
            } catch where reused != nil && StaleConnection.isStale(error) {
                try? await connection.close().get()
                reused = nil
            } catch {
                idle.give(connection)
                throw StoreError.backend(Self.message(error))
            }
        }
    }

    /// Wakes this process's claimers (after a statement of ``autocommitRows(_:_:)`` that sent
    /// NOTIFY: the notification takes a round trip more to come back).
    func wakeClaimers() { wakeupHub.fire() }

    /// `work`'s answer; or, when ``answerLimit`` passes first, the connection is closed and
    /// ``PostgresNoAnswer`` thrown (see ``PostgresTransaction``: a reply may never come, and the
    /// caller must not wait for it).
    private func answer<T: Sendable>(on connection: PostgresConnection, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        let seconds = answerLimit.components.seconds
        let logger = logger
        return try await withCheckedThrowingContinuation { continuation in
            let decided = OnceFlag()
            let timer = connection.eventLoop.scheduleTask(in: .seconds(seconds)) {
                guard decided.claim() else { return }
                logger.warning("PostgreSQL did not answer a statement; closing its connection", metadata: ["store.wait_seconds": "\(seconds)"])
                // Kept until closed: postgres-nio asserts that a connection is closed before it goes.
                connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
                continuation.resume(throwing: PostgresNoAnswer(seconds: seconds))
            }
            Task {
                let result: Result<T, any Error>
                do { result = .success(try await work()) } catch { result = .failure(error) }
                timer.cancel()
                if decided.claim() { continuation.resume(with: result) }
            }
        }
    }

    /// Runs `work` on a thread of the pool with a connection of its own, opening one when none is
    /// idle. A connection that broke is closed and forgotten.
    private func onConnection<T: Sendable>(_ work: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        do {
            return try await threads.runIfActive {
                self.permits.acquireBlocking()
                defer { self.permits.release() }
                var reused = self.idle.take()
                while true {
                    let connection = try reused ?? self.openConnection()
                    do {
                        let result = try work(connection)
                        self.idle.give(connection)
                        return result
                    } catch let error as PostgresNoAnswer {
                        // Its close is under way: it must not be handed out again.
                        throw StoreError.backend(error.description)
                    } catch is StaleConnection where reused != nil {
                        // An idle connection the server ended (a restart, pg_terminate_backend) before
                        // its first statement of this work: nothing ran, so a new connection tries again.
                        try? connection.close().wait()
                        reused = nil
                    } catch let error as StaleConnection {
                        throw error.underlying
                    } catch {
                        self.idle.give(connection)
                        throw error
                    }
                }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError.backend(Self.message(error))
        }
    }

    private func openConnection() throws -> PostgresConnection {
        let id = nextConnectionID.wrappingAdd(1, ordering: .relaxed).oldValue
        return try Self.connect(configuration, id: id, logger: logger)
    }

    /// One transaction on `connection`: `begin`, the advisory `lock` if any, `body`, `COMMIT`; a
    /// `ROLLBACK` when `body` throws. A connection that cannot roll back is closed.
    private func transaction<T>(
        _ connection: PostgresConnection, begin: String, lock: Int64?, _ body: (PostgresTransaction) throws -> T
    ) throws -> T {
        let transaction = PostgresTransaction(connection: connection, answerLimit: answerLimit, logger: logger)
        // A StaleConnection from BEGIN goes up as it is: nothing ran, and onConnection may try again.
        try transaction.execute(sql: begin)
        do {
            if let lock { try transaction.execute(sql: "SELECT pg_advisory_xact_lock(?)", arguments: [lock]) }
            let result = try body(transaction)
            try transaction.execute(sql: "COMMIT")
            return result
        } catch let error as PostgresNoAnswer {
            throw error
        } catch {
            do {
                try transaction.execute(sql: "ROLLBACK")
            } catch {
                try? connection.close().wait()
            }
            // Past BEGIN, work may have run: a connection lost now is an error, never a retry.
            if let stale = error as? StaleConnection { throw stale.underlying }
            throw error
        }
    }

    /// How long a statement's reply may take before its connection is given up: the server's
    /// `statement_timeout` ends a slow statement before this, so only a reply that will never come
    /// (the server ended the connection under it) reaches it.
    var answerLimit: Duration { configuration.statementTimeout + .seconds(5) }

    static func connect(_ configuration: PostgresStoreConfiguration, id: Int, logger: Logger) throws -> PostgresConnection {
        try connecting(configuration, id: id, logger: logger).wait()
    }

    /// A new connection of the store, with its session settings.
    static func connecting(_ configuration: PostgresStoreConfiguration, id: Int, logger: Logger) -> EventLoopFuture<PostgresConnection> {
        var connectionConfiguration = configuration.connectionConfiguration
        let timeout = Int(configuration.statementTimeout.components.seconds) * 1000
        connectionConfiguration.options.additionalStartupParameters = [
            ("application_name", "sfnode"),
            ("statement_timeout", "\(timeout)"),
            // A node that dies inside a transaction must not hold its locks for ever.
            ("idle_in_transaction_session_timeout", "\(timeout)"),
            // Only the queue's claim and completion are named prepared statements: each keeps one
            // plan, made without the values of one call (PostgresQueue.swift).
            ("plan_cache_mode", "force_generic_plan"),
            // The store's statements are small: JIT compiling one costs 12 ms where running it
            // costs 0.1 (a generic plan's cost, estimated without its LIMIT, passed jit_above_cost).
            ("jit", "off"),
        ]
        return PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.any(), configuration: connectionConfiguration, id: id, logger: logger)
    }

    /// The server's own words for `error` (postgres-nio's description of an error is deliberately
    /// vague); never the password, which no message carries.
    static func message(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let info = error.serverInfo {
            var text = info[.message] ?? "server error"
            if let state = info[.sqlState] { text += " (SQLSTATE \(state))" }
            if let detail = info[.detail] { text += ": \(detail)" }
            return text
        }
        if let underlying = error.underlying { return "PostgreSQL \(error.code): \(underlying)" }
        return "PostgreSQL \(error.code)"
    }
}

/// A connection the server had already ended when work began on it: its first statement failed
/// because the connection is gone, so nothing of the work ran.
struct StaleConnection: Error, CustomStringConvertible {
    let underlying: any Error
    var description: String { "\(underlying)" }

    /// Whether `error` says the connection is gone: closed, or ended by the server (SQLSTATE class
    /// 57: an administrator's or a shutdown's termination).
    static func isStale(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError else { return false }
        if error.code == .serverClosedConnection || error.code == .clientClosedConnection { return true }
        return error.code == .server && (error.serverInfo?[.sqlState]?.hasPrefix("57P") ?? false)
    }
}

/// One PostgreSQL transaction, as the store's operations see it.
final class PostgresTransaction: StoreDatabase {
    private let connection: PostgresConnection
    private let answerLimit: Duration
    private let logger: Logger
    private var transactionNow: Double?
    private(set) var changesCount = 0
    private(set) var jobsChangedMark = false

    /// - Parameter answerLimit: how long to wait for a statement's reply before closing the
    ///   connection and throwing ``PostgresNoAnswer``.
    init(connection: PostgresConnection, answerLimit: Duration = .seconds(65), logger: Logger) {
        self.connection = connection
        self.answerLimit = answerLimit
        self.logger = logger
    }

    /// The values of `arguments` as postgres-nio binds them.
    static func bindings(_ arguments: StoreArguments) -> PostgresBindings {
        var bindings = PostgresBindings(capacity: arguments.values.count)
        for value in arguments.values {
            switch value {
            case .null: bindings.appendNull()
            case .integer(let integer): bindings.append(integer)
            case .real(let real): bindings.append(real)
            case .text(let text): bindings.append(text)
            // Booleans are 0 and 1 on both backends (PostgresSchema.swift).
            case .bool(let flag): bindings.append(Int64(flag ? 1 : 0))
            case .bytes(let bytes): bindings.append(ByteBuffer(bytes: bytes))
            }
        }
        return bindings
    }

    private func run(_ sql: String, _ arguments: StoreArguments) throws -> PostgresQueryResult {
        let query = PostgresQuery(unsafeSQL: PostgresSQL.translate(sql), binds: Self.bindings(arguments))
        let reply = connection.query(query, logger: logger)
        // postgres-nio has left a query unanswered for ever on a connection the server ended while
        // restarting (a fast shutdown): a bounded wait, so that no pool thread, and no caller of
        // the store, hangs on it.
        let answered = DispatchSemaphore(value: 0)
        reply.whenComplete { _ in answered.signal() }
        let seconds = answerLimit.components.seconds
        if answered.wait(timeout: .now() + .seconds(Int(seconds))) == .timedOut {
            logger.warning("PostgreSQL did not answer a statement; closing its connection", metadata: ["store.wait_seconds": "\(seconds)"])
            // Kept until closed: postgres-nio asserts that a connection is closed before it goes.
            connection.close().whenComplete { [connection] _ in withExtendedLifetime(connection) {} }
            throw PostgresNoAnswer(seconds: seconds)
        }
        let result: PostgresQueryResult
        do {
            result = try reply.wait()
        } catch {
            // Kept recognisable: a first statement that failed so may run again on a new connection
            // (PostgresBackend.onConnection); converting it here to a StoreError made that retry
            // unreachable.
            if StaleConnection.isStale(error) { throw StaleConnection(underlying: StoreError.backend(PostgresBackend.message(error))) }
            throw StoreError.backend(PostgresBackend.message(error))
        }
        // Marked here rather than in execute: an `UPDATE … RETURNING` is read as rows.
        if (result.metadata.rows ?? 0) > 0 && !sql.hasPrefix("SELECT") { wroteRows = true }
        return result
    }

    /// Whether a statement of this transaction changed rows.
    private(set) var wroteRows = false

    @discardableResult
    func execute(sql: String, arguments: StoreArguments) throws -> Int {
        let result = try run(sql, arguments)
        changesCount = result.metadata.rows ?? 0
        return changesCount
    }

    func eachPositionalRow(
        _ sql: String, _ arguments: StoreArguments, reading what: String, _ body: (any PositionalRow) throws -> Void
    ) throws {
        for row in try run(sql, arguments).rows { try body(PostgresPositionalRow(row.makeRandomAccess())) }
    }

    func firstRow<Table: StoreTable>(_ table: Table.Type, _ sql: String, _ arguments: StoreArguments) throws -> Table.Record? {
        guard let row = try run(sql, arguments).rows.first else { return nil }
        return try Table.decode(TableRow(PostgresPositionalRow(row.makeRandomAccess())))
    }

    func eachRow<Table: StoreTable>(
        _ table: Table.Type, _ sql: String, _ arguments: StoreArguments, _ body: (TableRow<Table, AnyTableRow>) throws -> Void
    ) throws {
        for row in try run(sql, arguments).rows {
            try body(TableRow(AnyTableRow(base: PostgresPositionalRow(row.makeRandomAccess()))))
        }
    }

    static let readNow = "SELECT extract(epoch FROM now())::float8"

    /// The server's clock at the transaction's start (`now()`), read once.
    func now() throws -> Double {
        if let transactionNow { return transactionNow }
        guard let now = try fetchOne(Double.self, sql: Self.readNow) else {
            throw StoreError.backend("the server answered no time")
        }
        transactionNow = now
        return now
    }

    func jobsChanged() { jobsChangedMark = true }
}

/// A PostgreSQL row read by column position, with the same strictness as SQLite's: an integer
/// column reads as an integer (any width) or a number, text as text, and nothing is converted from
/// text.
struct PostgresPositionalRow: PositionalRow {
    let row: PostgresRandomAccessRow

    init(_ row: PostgresRandomAccessRow) {
        self.row = row
    }

    private func cell(_ index: Int) throws(ColumnTypeMismatch) -> PostgresCell? {
        guard index >= 0, index < row.count else { throw ColumnTypeMismatch(problem: "is not in the row (column \(index))") }
        let cell = row[index]
        return cell.bytes == nil ? nil : cell
    }

    func int64(at index: Int) throws(ColumnTypeMismatch) -> Int64? {
        guard let cell = try cell(index) else { return nil }
        switch cell.dataType {
        case .int2, .int4, .int8:
            do { return try cell.decode(Int64.self) } catch { throw ColumnTypeMismatch(problem: "is not an integer") }
        default: throw ColumnTypeMismatch(problem: "is not an integer")
        }
    }

    func string(at index: Int) throws(ColumnTypeMismatch) -> String? {
        guard let cell = try cell(index) else { return nil }
        switch cell.dataType {
        case .text, .varchar, .name, .bpchar:
            do { return try cell.decode(String.self) } catch { throw ColumnTypeMismatch(problem: "is not text") }
        default: throw ColumnTypeMismatch(problem: "is not text")
        }
    }

    func double(at index: Int) throws(ColumnTypeMismatch) -> Double? {
        guard let cell = try cell(index) else { return nil }
        switch cell.dataType {
        case .float8, .float4:
            do { return try cell.decode(Double.self) } catch { throw ColumnTypeMismatch(problem: "is not a number") }
        case .int2, .int4, .int8:
            do { return Double(try cell.decode(Int64.self)) } catch { throw ColumnTypeMismatch(problem: "is not a number") }
        default: throw ColumnTypeMismatch(problem: "is not a number")
        }
    }

    func bytes(at index: Int) throws(ColumnTypeMismatch) -> [UInt8]? {
        guard let cell = try cell(index) else { return nil }
        guard cell.dataType == .bytea, let buffer = cell.bytes else { throw ColumnTypeMismatch(problem: "is not a blob") }
        return Array(buffer.readableBytesView)
    }

    func bool(at index: Int) throws(ColumnTypeMismatch) -> Bool? {
        guard let cell = try cell(index) else { return nil }
        if cell.dataType == .bool {
            do { return try cell.decode(Bool.self) } catch { throw ColumnTypeMismatch(problem: "is not a boolean") }
        }
        do { return try int64(at: index).map { $0 != 0 } } catch { throw ColumnTypeMismatch(problem: "is not a boolean") }
    }
}

/// A statement whose reply did not come within the backend's answer limit; its connection is
/// closed and never used again.
struct PostgresNoAnswer: Error, CustomStringConvertible {
    let seconds: Int64
    var description: String { "PostgreSQL did not answer within \(seconds) s; the connection was closed" }
}

/// The pool's connections not in use. One the server ended while it was idle (a restart,
/// `pg_terminate_backend`) is dropped when taken: postgres-nio would take a query on it and never
/// answer.
final class IdleConnections: Sendable {
    private let connections = Mutex<[PostgresConnection]>([])

    func take() -> PostgresConnection? {
        while let connection = connections.withLock({ $0.popLast() }) {
            if !connection.isClosed { return connection }
        }
        return nil
    }

    func give(_ connection: PostgresConnection) {
        if connection.isClosed { return }
        connections.withLock { $0.append(connection) }
    }

    /// Every idle connection, taken out of the pool.
    func drain() -> [PostgresConnection] {
        connections.withLock { connections in
            defer { connections.removeAll() }
            return connections
        }
    }

    /// Closes every idle connection; the next transactions open new ones.
    func closeAll() {
        for connection in drain() {
            // Kept until closed: postgres-nio asserts that a connection is closed before it goes.
            connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
        }
    }
}

extension PostgresStoreConfiguration {
    /// Where and as whom every connection of the store connects (the pool's and the listener's).
    var connectionConfiguration: PostgresConnection.Configuration {
        var connection = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: .disable)
        connection.options.connectTimeout = .seconds(10)
        return connection
    }
}

/// A counting semaphore that tasks wait on without blocking a thread, and pool threads by
/// blocking theirs: the store's connections in use (``PostgresBackend``).
final class ConnectionPermits: Sendable {
    private enum Waiter {
        case task(CheckedContinuation<Void, Never>)
        case thread(DispatchSemaphore)
    }

    private struct State {
        var available: Int
        var waiters: [Waiter] = []
    }

    private let state: Mutex<State>

    init(_ count: Int) {
        state = Mutex(State(available: max(1, count)))
    }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if take(orQueue: .task(continuation)) { continuation.resume() }
        }
    }

    func acquireBlocking() {
        let semaphore = DispatchSemaphore(value: 0)
        if !take(orQueue: .thread(semaphore)) { semaphore.wait() }
    }

    /// Takes a permit if one is free (true); else queues `waiter` for ``release()`` to wake.
    private func take(orQueue waiter: Waiter) -> Bool {
        state.withLock { state in
            guard state.available == 0 else {
                state.available -= 1
                return true
            }
            state.waiters.append(waiter)
            return false
        }
    }

    /// Hands the permit to the longest waiter, else back to the count.
    func release() {
        let next = state.withLock { state -> Waiter? in
            guard !state.waiters.isEmpty else {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        switch next {
        case .task(let continuation): continuation.resume()
        case .thread(let semaphore): semaphore.signal()
        case nil: break
        }
    }
}
