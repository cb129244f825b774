import Foundation
import Logging
import PostgresNIO

/// Applies ``PostgresSchema/migrations`` that the database lacks. Starters of several nodes may
/// race: each takes the migration advisory lock first, so one migrates and the others then find
/// nothing left to do.
struct PostgresMigrator {
    let connection: PostgresConnection
    let logger: Logger

    func migrate() throws {
        let session = PostgresTransaction(connection: connection, logger: logger)
        try session.execute(sql: "SELECT pg_advisory_lock(?)", arguments: [PostgresBackend.migrationLock])
        defer { _ = try? session.execute(sql: "SELECT pg_advisory_unlock(?)", arguments: [PostgresBackend.migrationLock]) }
        try session.execute(
            sql: "CREATE TABLE IF NOT EXISTS sfnode_migration (version TEXT PRIMARY KEY NOT NULL, applied DOUBLE PRECISION NOT NULL)")
        let applied = Set(try session.fetchAll(String.self, sql: "SELECT version FROM sfnode_migration"))
        for migration in PostgresSchema.migrations where !applied.contains(migration.version) {
            try session.execute(sql: "BEGIN")
            do {
                for statement in migration.statements { try session.execute(sql: statement) }
                try session.execute(
                    sql: "INSERT INTO sfnode_migration (version, applied) VALUES (?, extract(epoch FROM now()))",
                    arguments: [migration.version])
                try session.execute(sql: "COMMIT")
            } catch {
                _ = try? session.execute(sql: "ROLLBACK")
                throw StoreError.backend("migration \(migration.version): \(error)")
            }
            logger.info("store migrated", metadata: ["store.migration": "\(migration.version)"])
        }
    }
}
