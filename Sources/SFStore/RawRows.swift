import Foundation
import GRDB
import GRDBSQLite
import SFSystem

/// The columns of a table that is decoded by position, in the order a query selects them.
///
/// The instance and interface tables are read on every API request. GRDB's `Row` builds a
/// dictionary of lowercased column names per query, copies rows, and lowercases each name looked
/// up; under `GET /instances/<uuid>` that was most of the store's time (BENCHMARKS.md (j)).
/// These tables are instead read straight from SQLite's statement by column position.
protocol TableColumn: RawRepresentable<Int32>, CaseIterable, Sendable {
    /// The table, for error messages.
    static var table: String { get }
    /// The column's SQL name.
    var sqlName: String { get }
}

extension TableColumn {
    /// `"a", "b", …`: the select list that puts every column at its position.
    static var selectList: String { allCases.map { "\"\($0.sqlName)\"" }.joined(separator: ", ") }
}

/// The current row of a statement being stepped, read by column position; every read checks the
/// stored type, so a NULL or a wrong type is ``StoreError/corrupt(_:)`` naming the column.
struct RawRow<Column: TableColumn> {
    fileprivate let statement: SQLiteStatement

    /// The text, nil for NULL.
    func text(_ column: Column) throws -> String? {
        switch sqlite3_column_type(statement, column.rawValue) {
        case SQLITE_NULL: return nil
        case SQLITE_TEXT:
            guard let bytes = sqlite3_column_text(statement, column.rawValue) else { return "" }
            let count = Int(sqlite3_column_bytes(statement, column.rawValue))
            return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
        default: throw corrupt(column, "is not text")
        }
    }

    func requiredText(_ column: Column) throws -> String {
        guard let text = try text(column) else { throw corrupt(column, "is NULL") }
        return text
    }

    func int(_ column: Column) throws -> Int? {
        switch sqlite3_column_type(statement, column.rawValue) {
        case SQLITE_NULL: return nil
        case SQLITE_INTEGER: return Int(sqlite3_column_int64(statement, column.rawValue))
        default: throw corrupt(column, "is not an integer")
        }
    }

    func requiredInt(_ column: Column) throws -> Int {
        guard let value = try int(column) else { throw corrupt(column, "is NULL") }
        return value
    }

    func double(_ column: Column) throws -> Double? {
        switch sqlite3_column_type(statement, column.rawValue) {
        case SQLITE_NULL: return nil
        case SQLITE_FLOAT, SQLITE_INTEGER: return sqlite3_column_double(statement, column.rawValue)
        default: throw corrupt(column, "is not a number")
        }
    }

    func date(_ column: Column) throws -> Date? { try double(column).map(Date.init(timeIntervalSince1970:)) }

    func requiredDate(_ column: Column) throws -> Date {
        guard let date = try date(column) else { throw corrupt(column, "is NULL") }
        return date
    }

    func uuid(_ column: Column) throws -> UUID { try parsed(column, UUID.init(parsing:)) }

    func parsed<T>(_ column: Column, _ parse: (String) -> T?) throws -> T {
        guard let value = try optionalParsed(column, parse) else { throw corrupt(column, "is NULL") }
        return value
    }

    func optionalParsed<T>(_ column: Column, _ parse: (String) -> T?) throws -> T? {
        guard let text = try text(column) else { return nil }
        guard let value = parse(text) else { throw corrupt(column, "'\(text)' does not parse") }
        return value
    }

    /// A JSON column's value (see ``DecodedColumns``).
    func json<T: Decodable & Sendable>(_ type: T.Type, _ column: Column) throws -> T? {
        guard let text = try text(column) else { return nil }
        return try SQLiteStore.jsonValue(type, text, "\(Column.table) \(column.sqlName)")
    }

    func requiredJSON<T: Decodable & Sendable>(_ type: T.Type, _ column: Column) throws -> T {
        guard let value = try json(type, column) else { throw corrupt(column, "is NULL") }
        return value
    }

    private func corrupt(_ column: Column, _ problem: String) -> StoreError {
        StoreError.corrupt("\(Column.table).\(column.sqlName) \(problem)")
    }
}

extension SQLiteStore {
    /// Runs `sql` (cached) with `arguments` and hands each row to `body`, by column position.
    static func eachRow<Column: TableColumn>(
        _ db: Database, _ sql: String, _ arguments: StatementArguments = [], _ body: (RawRow<Column>) throws -> Void
    ) throws {
        let statement = try db.cachedStatement(sql: sql)
        try statement.setArguments(arguments)
        let handle = statement.sqliteStatement
        defer { sqlite3_reset(handle) }
        while true {
            switch sqlite3_step(handle) {
            case SQLITE_ROW: try body(RawRow(statement: handle))
            case SQLITE_DONE: return
            case let code:
                throw StoreError.backend("\(sqliteMessage(db, code: code)) (reading \(Column.table))")
            }
        }
    }

    /// SQLite's own message for the connection's last error.
    static func sqliteMessage(_ db: Database, code: Int32) -> String {
        db.sqliteConnection.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "SQLite error \(code)"
    }

    /// Every row `sql` selects, decoded by `decode`.
    static func allRows<Column: TableColumn, Value>(
        _ db: Database, _ sql: String, _ arguments: StatementArguments = [], _ decode: (RawRow<Column>) throws -> Value
    ) throws -> [Value] {
        var values: [Value] = []
        try eachRow(db, sql, arguments) { (row: RawRow<Column>) in values.append(try decode(row)) }
        return values
    }
}
