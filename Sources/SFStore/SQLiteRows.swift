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
    let statement: SQLiteStatement

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
