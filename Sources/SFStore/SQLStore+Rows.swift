import Foundation
import SFSystem

/// Reads by key shared by the store's operations. Every table is decoded by its own file under
/// Tables/, by column position (SQLiteRows.swift); every column read is checked, so a NULL or an
/// unparsable value is ``StoreError/corrupt(_:)`` naming the table and column, never trapped on.
extension SQLStore {
    static func jsonText<T: Encodable>(_ value: T) throws -> String { try StoredJSON.text(value) }

    static func jsonValue<T: Decodable & Sendable>(_ type: T.Type, _ text: String, _ what: @autoclosure () -> String) throws -> T {
        try DecodedColumns.jsonValue(type, text, what())
    }

    static func fetchNetwork(_ db: any StoreDatabase, _ uuid: UUID) throws -> Network {
        guard let network = try db.firstRow(NetworkTable.self, NetworkTable.selectByUUID, [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "network", id: uuid.lowercasedString) }
        return network
    }

    static func fetchInstance(_ db: any StoreDatabase, _ uuid: UUID) throws -> Instance {
        guard let instance = try db.firstRow(InstanceTable.self, InstanceTable.selectByUUID, [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "instance", id: uuid.lowercasedString) }
        return instance
    }

    static func fetchInterface(_ db: any StoreDatabase, _ uuid: UUID) throws -> Interface {
        guard let interface = try db.firstRow(InterfaceTable.self, InterfaceTable.selectByUUID, [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "interface", id: uuid.lowercasedString) }
        return interface
    }

    static func fetchJob(_ db: any StoreDatabase, _ id: Int64) throws -> Job {
        guard let job = try db.firstRow(JobTable.self, JobTable.selectByID, [id])
        else { throw StoreError.notFound(type: "job", id: String(id)) }
        return job
    }
}

extension SQLStore {
    /// The columns the database has for `table`, in table order: what the check that every table
    /// file lists its table's columns compares against.
    func schemaColumns(of table: String) async throws -> [String] {
        let sql = backend.columnsQuery
        return try await read { db in try db.fetchAll(String.self, sql: sql, arguments: [table]) }
    }

    /// The store's tables, by name (each backend's own bookkeeping left out).
    func schemaTables() async throws -> [String] {
        let sql = backend.tablesQuery
        return try await read { db in try db.fetchAll(String.self, sql: sql) }
    }
}
