import Foundation
import GRDB
import GRDBSQLite
import Logging
import SFSystem

/// The embedded backend: one SQLite file in WAL mode, shared by every sfnode process on the node.
///
/// Concurrency: within a process, GRDB's `DatabasePool` serialises writes on one connection and
/// reads run on a pool of readers that see committed snapshots. Across processes, every write is a
/// `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock up front (a deferred transaction
/// that upgrades from read to write can fail with SQLITE_BUSY without waiting), and `busy_timeout`
/// makes a second writer wait for the lock instead of failing. Every write is therefore serialised,
/// the queue's included.
final class SQLiteBackend: StoreBackend {
    private let pool: DatabasePool
    /// A connection of its own, used only for `PRAGMA data_version`: that value changes for a
    /// connection when *another* connection commits, and the pool's writer would not see its
    /// own commits nor would pooled readers give a stable sequence.
    private let monitor: DatabaseQueue
    /// For short reads by key, without a thread switch (``readByKey(_:)``).
    private let inPlaceReaders: InPlaceReaders
    private let wakeupHub: WakeupHub

    init(path: String, busyTimeout: Duration, logger: Logger) throws {
        wakeupHub = WakeupHub(storePath: path, logger: logger)
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout.seconds)
        config.label = "sfnode.store"
        do {
            // Two processes starting together would both see a migration as unapplied (GRDB reads
            // the applied list outside the migration's transaction) and the second would fail on
            // CREATE TABLE; an flock beside the file serialises opening + migrating.
            let lock = try FileLock.acquire(path: path + ".lock")
            defer { lock.release() }
            // Only root reads the store: it holds key hashes and the API's token-signing secret.
            // SQLite gives the -wal and -shm files the database's mode; a store made before this
            // rule is brought into line too.
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            if fd >= 0 { Glibc.close(fd) }
            for file in [path, path + "-wal", path + "-shm"] { chmod(file, 0o600) }
            pool = try DatabasePool(path: path, configuration: config)
            try Self.migrator.migrate(pool)
            var monitorConfig = Configuration()
            monitorConfig.busyMode = .timeout(busyTimeout.seconds)
            monitorConfig.label = "sfnode.store.monitor"
            monitor = try DatabaseQueue(path: path, configuration: monitorConfig)
            config.label = "sfnode.store.in-place"
            inPlaceReaders = try InPlaceReaders(path: path, configuration: config)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError.backend("opening \(path): \(error)")
        }
    }

    func write<T: Sendable>(serialised: Bool, _ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        let (result, jobsChanged): (T, Bool)
        do {
            (result, jobsChanged) = try await pool.writeWithoutTransaction { db in
                var outcome: (T, Bool)?
                try db.inTransaction(.immediate) {
                    let session = SQLiteDatabase(db)
                    outcome = (try body(session), session.jobsChangedMark)
                    return .commit
                }
                guard let outcome else { throw StoreError.backend("transaction ended without a result") }
                return outcome
            }
        } catch {
            throw StoreError(backendFailure: error)
        }
        // Only after the commit: a woken claimer must be able to see the jobs.
        if jobsChanged { wakeupHub.signal() }
        return result
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        do {
            return try await pool.read { db in try body(SQLiteDatabase(db)) }
        } catch {
            throw StoreError(backendFailure: error)
        }
    }

    /// Runs `body` in one snapshot on the calling thread when a connection for that is idle, on a
    /// pool reader otherwise (``InPlaceReaders``). Only for reads of a few rows by key.
    func readByKey<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        let inPlace: T?
        do {
            inPlace = try inPlaceReaders.read { db in try body(SQLiteDatabase(db)) }
        } catch {
            throw StoreError(backendFailure: error)
        }
        if let inPlace { return inPlace }
        return try await read(body)
    }

    func wakeups() -> AsyncStream<Void> { wakeupHub.subscribe() }

    func changeToken() async throws -> Int64 {
        do {
            return try await monitor.read { db in try Int64.fetchOne(db, sql: "PRAGMA data_version") ?? 0 }
        } catch {
            throw StoreError.backend("\(error)")
        }
    }

    /// This machine's clock: every process of a SQLite store runs on it.
    func clock() async throws -> Double { Date.storableNow().timeIntervalSince1970 }

    let columnsQuery = "SELECT name FROM pragma_table_info(?)"
    let tablesQuery = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%' ORDER BY name"

    /// The pool's readers are closed (the next read opens one) and every connection's page cache
    /// emptied; a read under way keeps its connection until it ends.
    func releaseMemory() async {
        // Off the cooperative pool: it waits for the writer and every reader to be free.
        _ = try? await runBlocking { [pool, monitor, inPlaceReaders] in
            pool.releaseMemory()
            monitor.releaseMemory()
            inPlaceReaders.releaseMemory()
        }
    }

    func close() {}
}

/// One SQLite transaction, as the store's operations see it.
final class SQLiteDatabase: StoreDatabase {
    private let db: Database
    private var transactionNow: Double?
    fileprivate(set) var jobsChangedMark = false

    init(_ db: Database) {
        self.db = db
    }

    @discardableResult
    func execute(sql: String, arguments: StoreArguments) throws -> Int {
        try db.execute(sql: sql, arguments: StatementArguments(arguments.values.map(\.databaseValue)))
        return db.changesCount
    }

    var changesCount: Int { db.changesCount }

    func eachPositionalRow(
        _ sql: String, _ arguments: StoreArguments, reading what: String, _ body: (any PositionalRow) throws -> Void
    ) throws {
        try step(sql, arguments, reading: what) { statement in try body(SQLiteRow(statement: statement)) }
    }

    func eachRow<Table: StoreTable>(
        _ table: Table.Type, _ sql: String, _ arguments: StoreArguments, _ body: (TableRow<Table, AnyTableRow>) throws -> Void
    ) throws {
        try step(sql, arguments, reading: Table.name) { statement in
            try body(TableRow(AnyTableRow(base: SQLiteRow(statement: statement))))
        }
    }

    func firstRow<Table: StoreTable>(_ table: Table.Type, _ sql: String, _ arguments: StoreArguments) throws -> Table.Record? {
        let statement = try db.cachedStatement(sql: sql)
        try statement.setArguments(StatementArguments(arguments.values.map(\.databaseValue)))
        let handle = statement.sqliteStatement
        defer { sqlite3_reset(handle) }
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return try Table.decode(TableRow(SQLiteRow(statement: handle)))
        case SQLITE_DONE: return nil
        case let code: throw StoreError.backend("\(Self.message(db, code: code)) (reading \(Table.name))")
        }
    }

    /// The node's clock: SQLite is embedded, so the database's clock is this machine's.
    func now() throws -> Double {
        if let transactionNow { return transactionNow }
        let now = Date().timeIntervalSince1970
        transactionNow = now
        return now
    }

    func jobsChanged() { jobsChangedMark = true }

    /// Runs `sql` (cached) with `arguments` and hands each row's statement to `body`.
    private func step(
        _ sql: String, _ arguments: StoreArguments, reading what: String, _ body: (SQLiteStatement) throws -> Void
    ) throws {
        let statement = try db.cachedStatement(sql: sql)
        try statement.setArguments(StatementArguments(arguments.values.map(\.databaseValue)))
        let handle = statement.sqliteStatement
        defer { sqlite3_reset(handle) }
        while true {
            switch sqlite3_step(handle) {
            case SQLITE_ROW: try body(handle)
            case SQLITE_DONE: return
            case let code: throw StoreError.backend("\(Self.message(db, code: code)) (reading \(what))")
            }
        }
    }

    /// SQLite's own message for the connection's last error.
    static func message(_ db: Database, code: Int32) -> String {
        db.sqliteConnection.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "SQLite error \(code)"
    }
}
