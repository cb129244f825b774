import Foundation
import GRDB
import GRDBSQLite
import SFSystem

/// The current row of a SQLite statement being stepped, read by column position.
///
/// Every table is read this way rather than through GRDB's `Row`, which builds a dictionary of
/// lowercased column names per query, copies rows, and lowercases each name looked up: under
/// `GET /instances/<uuid>` that was most of the store's time (BENCHMARKS.md (j)).
struct SQLiteRow: PositionalRow {
    fileprivate let statement: SQLiteStatement

    @inline(__always)
    private func type(_ index: Int) -> Int32 { sqlite3_column_type(statement, Int32(truncatingIfNeeded: index)) }

    func int64(at index: Int) throws(ColumnTypeMismatch) -> Int64? {
        switch type(index) {
        case SQLITE_NULL: return nil
        case SQLITE_INTEGER: return sqlite3_column_int64(statement, Int32(truncatingIfNeeded: index))
        default: throw ColumnTypeMismatch(problem: "is not an integer")
        }
    }

    func string(at index: Int) throws(ColumnTypeMismatch) -> String? {
        let column = Int32(truncatingIfNeeded: index)
        switch type(index) {
        case SQLITE_NULL: return nil
        case SQLITE_TEXT:
            guard let bytes = sqlite3_column_text(statement, column) else { return "" }
            let count = Int(sqlite3_column_bytes(statement, column))
            return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
        default: throw ColumnTypeMismatch(problem: "is not text")
        }
    }

    func double(at index: Int) throws(ColumnTypeMismatch) -> Double? {
        switch type(index) {
        case SQLITE_NULL: return nil
        case SQLITE_FLOAT, SQLITE_INTEGER: return sqlite3_column_double(statement, Int32(truncatingIfNeeded: index))
        default: throw ColumnTypeMismatch(problem: "is not a number")
        }
    }

    func bytes(at index: Int) throws(ColumnTypeMismatch) -> [UInt8]? {
        let column = Int32(truncatingIfNeeded: index)
        switch type(index) {
        case SQLITE_NULL: return nil
        case SQLITE_BLOB:
            guard let bytes = sqlite3_column_blob(statement, column) else { return [] }
            let count = Int(sqlite3_column_bytes(statement, column))
            return Array(UnsafeRawBufferPointer(start: bytes, count: count))
        default: throw ColumnTypeMismatch(problem: "is not a blob")
        }
    }
}

extension ColumnValue {
    /// The value as GRDB binds it (a Bool as 0 or 1, as GRDB itself stores one).
    var databaseValue: DatabaseValue {
        switch self {
        case .null: .null
        case .integer(let value): value.databaseValue
        case .real(let value): value.databaseValue
        case .text(let value): value.databaseValue
        case .bool(let value): (value ? Int64(1) : Int64(0)).databaseValue
        case .bytes(let value): Data(value).databaseValue
        }
    }
}

extension SQLiteStore {
    /// Runs `sql` (cached) with `arguments` and hands each row to `body`, by column position.
    /// `what` names the rows in an error (the table, usually).
    static func eachPositionalRow(
        _ db: Database, _ sql: String, _ arguments: StatementArguments = [], reading what: String,
        _ body: (SQLiteRow) throws -> Void
    ) throws {
        let statement = try db.cachedStatement(sql: sql)
        try statement.setArguments(arguments)
        let handle = statement.sqliteStatement
        defer { sqlite3_reset(handle) }
        while true {
            switch sqlite3_step(handle) {
            case SQLITE_ROW: try body(SQLiteRow(statement: handle))
            case SQLITE_DONE: return
            case let code:
                throw StoreError.backend("\(sqliteMessage(db, code: code)) (reading \(what))")
            }
        }
    }

    /// Each row of `Table` that `sql` selects (with `Table.select` or a select list in the same
    /// column order), handed to `body` undecoded.
    static func eachRow<Table: StoreTable>(
        _ db: Database, _ table: Table.Type, _ sql: String, _ arguments: StatementArguments = [],
        _ body: (TableRow<Table, SQLiteRow>) throws -> Void
    ) throws {
        try eachPositionalRow(db, sql, arguments, reading: Table.name) { row in try body(TableRow(row)) }
    }

    /// Every row `sql` selects, decoded by the table's decoder.
    static func allRows<Table: StoreTable>(
        _ db: Database, _ table: Table.Type, _ sql: String, _ arguments: StatementArguments = []
    ) throws -> [Table.Record] {
        var values: [Table.Record] = []
        try eachRow(db, table, sql, arguments) { row in values.append(try Table.decode(row)) }
        return values
    }

    /// The first row `sql` selects, decoded; nil when it selects none.
    static func firstRow<Table: StoreTable>(
        _ db: Database, _ table: Table.Type, _ sql: String, _ arguments: StatementArguments = []
    ) throws -> Table.Record? {
        let statement = try db.cachedStatement(sql: sql)
        try statement.setArguments(arguments)
        let handle = statement.sqliteStatement
        defer { sqlite3_reset(handle) }
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return try Table.decode(TableRow(SQLiteRow(statement: handle)))
        case SQLITE_DONE: return nil
        case let code: throw StoreError.backend("\(sqliteMessage(db, code: code)) (reading \(Table.name))")
        }
    }

    /// Runs one of a table's insert, upsert or update statements (see ``StoreTable``).
    static func execute(_ db: Database, _ statement: TableStatement) throws {
        try db.execute(sql: statement.sql, arguments: StatementArguments(statement.values.map(\.databaseValue)))
    }

    /// SQLite's own message for the connection's last error.
    static func sqliteMessage(_ db: Database, code: Int32) -> String {
        db.sqliteConnection.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "SQLite error \(code)"
    }
}
