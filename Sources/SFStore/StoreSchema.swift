import Foundation
import GRDB
import Logging
import PostgresNIO

/// Which of this binary's schema migrations a store has, read without opening it for use: nothing
/// is created or migrated (`sfnode doctor` reads it; the agent migrates when it starts).
public struct StoreSchemaStatus: Sendable, Equatable {
    /// This binary's migrations, in order.
    public let known: [String]
    /// The store's applied migrations; nil when there is no store there yet.
    public let applied: [String]?

    /// Applied migrations this binary does not know: a newer sfnode migrated the store.
    public var unknown: [String] { (applied ?? []).filter { !known.contains($0) } }
    /// This binary's migrations the store lacks: the next start applies them.
    public var pending: [String] { known.filter { !(applied ?? []).contains($0) } }
    /// The latest migration this binary knows.
    public var current: String { known.last ?? "none" }

    /// The status of the store at `location` (a SQLite path or a `postgres://` URL).
    public static func read(location: String, logger: Logger) throws -> StoreSchemaStatus {
        if let configuration = try PostgresStoreConfiguration(url: location) {
            let known = PostgresSchema.migrations.map(\.version)
            let connection = try PostgresBackend.connect(configuration, id: 0, logger: logger)
            defer { try? connection.close().wait() }
            let session = PostgresTransaction(connection: connection, logger: logger)
            let exists = try session.fetchAll(String.self, sql: "SELECT to_regclass('sfnode_migration')::text")
            guard !exists.isEmpty else { return StoreSchemaStatus(known: known, applied: nil) }
            return StoreSchemaStatus(known: known, applied: try session.fetchAll(String.self, sql: "SELECT version FROM sfnode_migration"))
        }
        let known = SQLiteBackend.migrator.migrations
        guard FileManager.default.fileExists(atPath: location) else { return StoreSchemaStatus(known: known, applied: nil) }
        var configuration = Configuration()
        configuration.readonly = true
        let queue = try DatabaseQueue(path: location, configuration: configuration)
        let applied = try queue.read { db -> [String]? in
            guard try db.tableExists("grdb_migrations") else { return nil }
            return try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")
        }
        return StoreSchemaStatus(known: known, applied: applied)
    }
}
