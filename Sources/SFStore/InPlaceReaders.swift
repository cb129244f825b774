import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// Read-only connections that read on the calling thread.
///
/// `DatabasePool.read` hands the work to a reader's queue and the result back: two thread switches,
/// which cost more than a read of a few rows by key from a WAL database (a WAL reader never waits
/// for a writer). Under `GET /instances/<uuid>` load those switches were a fifth of the API's CPU
/// time (BENCHMARKS.md (j)). Blocking a Swift concurrency thread to wait for a connection would be
/// worse (every thread of the pool could end up waiting for readers held by suspended tasks), so
/// a connection is taken only when one is idle, and ``read(_:)`` answers nil otherwise: the caller
/// then reads the usual way.
final class InPlaceReaders: Sendable {
    private let idle: Mutex<[DatabaseQueue]>

    /// One connection per core: the cooperative pool runs at most that many reads at once.
    init(path: String, configuration: Configuration, count: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        var configuration = configuration
        configuration.readonly = true
        idle = Mutex(try (0..<max(1, count)).map { _ in try DatabaseQueue(path: path, configuration: configuration) })
    }

    /// `body`'s result, read in one snapshot on this thread; nil when no connection is idle.
    ///
    /// The snapshot is a plain `BEGIN`…`COMMIT` issued through SQLite itself: GRDB's isolated read
    /// wraps it in a savepoint and parses its SQL again each time, a third of such a read's cost.
    /// The connection is read-only, so the transaction can only ever read.
    func read<T>(_ body: (Database) throws -> T) throws -> T? {
        guard let connection = idle.withLock({ $0.popLast() }) else { return nil }
        defer { idle.withLock { $0.append(connection) } }
        return try connection.unsafeRead { db in
            try Self.execute("BEGIN DEFERRED", on: db)
            do {
                let value = try body(db)
                try Self.execute("COMMIT", on: db)
                return value
            } catch {
                try? Self.execute("ROLLBACK", on: db)
                throw error
            }
        }
    }

    /// Empties the idle connections' page caches (one in use keeps its own).
    func releaseMemory() {
        let connections = idle.withLock { idle in defer { idle.removeAll() }; return idle }
        for connection in connections { connection.releaseMemory() }
        idle.withLock { $0.append(contentsOf: connections) }
    }

    /// Runs a transaction statement, prepared once per connection (GRDB's statement cache).
    private static func execute(_ sql: String, on db: Database) throws {
        let statement = try db.cachedStatement(sql: sql).sqliteStatement
        defer { sqlite3_reset(statement) }
        let code = sqlite3_step(statement)
        guard code == SQLITE_DONE else { throw StoreError.backend("\(sql): \(SQLiteDatabase.message(db, code: code))") }
    }
}
