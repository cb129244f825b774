import Foundation

// The store's one row vocabulary. Every table is described once, in its own file under Tables/:
// its columns (in the order its select list puts them), its select list, its insert list and the
// decoder that turns a row into a model value. A decoder reads a ``PositionalRow`` by column
// position, which both SQLite's stepped statement and a PostgreSQL row (postgres-nio decodes by
// position too) can give, so a second backend reuses every table file as it is.

/// One result row, read by column position.
///
/// Each read answers nil for SQL NULL and throws ``ColumnTypeMismatch`` when the stored value is of
/// another type: a conformer never converts text to a number or the like behind the caller's back.
protocol PositionalRow {
    func int64(at index: Int) throws(ColumnTypeMismatch) -> Int64?
    func string(at index: Int) throws(ColumnTypeMismatch) -> String?
    /// An integer column reads as a number too: SQLite stores a REAL that has no fraction as one.
    func double(at index: Int) throws(ColumnTypeMismatch) -> Double?
    func bytes(at index: Int) throws(ColumnTypeMismatch) -> [UInt8]?
    /// SQLite has no boolean type (0 or 1 in an INTEGER); a PostgreSQL row would read a BOOLEAN.
    func bool(at index: Int) throws(ColumnTypeMismatch) -> Bool?
}

extension PositionalRow {
    func bool(at index: Int) throws(ColumnTypeMismatch) -> Bool? {
        do { return try int64(at: index).map { $0 != 0 } } catch { throw ColumnTypeMismatch(problem: "is not a boolean") }
    }
}

extension PositionalRow {
    /// The text at `index` of a row that is not a table's (an aggregate, say); `what` names the
    /// column in the ``StoreError/corrupt(_:)`` thrown for a NULL or another type.
    func requiredString(at index: Int, _ what: String) throws -> String {
        let text: String?
        do throws(ColumnTypeMismatch) { text = try string(at: index) } catch { throw StoreError.corrupt("\(what) \(error.problem)") }
        guard let text else { throw StoreError.corrupt("\(what) is NULL") }
        return text
    }
}

/// A stored value of another type than the one read; ``TableRow`` names the column.
struct ColumnTypeMismatch: Error {
    /// "is not text", "is not an integer", …
    let problem: String
}

/// A table's columns, in select-list order: the raw value is the column's position in a row that
/// the table's select list produced.
protocol TableColumn: RawRepresentable<Int>, CaseIterable, Hashable, Sendable {
    /// The column's SQL name.
    var sqlName: String { get }
}

extension TableColumn {
    /// The name, quoted (`"order"` and `"index"` are keywords).
    var quotedName: String { "\"\(sqlName)\"" }
}

/// A table of the store: its columns and how a row of it becomes a model value.
protocol StoreTable {
    associatedtype Column: TableColumn
    associatedtype Record
    /// The SQL name, also used in error messages.
    static var name: String { get }
    /// `SELECT <every column, in Column order> FROM <table> `, to be followed by the query's clauses;
    /// each table keeps it in a `static let` (``selectStatement()``), so queries built from it are
    /// the same string each time and hit the statement cache.
    static var select: String { get }
    /// The model value of a row the table's select list produced.
    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Record
}

extension StoreTable {
    /// Every column, in position order, quoted.
    static var selectList: String { Column.allCases.map(\.quotedName).joined(separator: ", ") }

    /// Every column qualified by `alias` (for a query whose subqueries name the same table).
    static func selectList(as alias: String) -> String {
        Column.allCases.map { "\(alias).\($0.quotedName)" }.joined(separator: ", ")
    }

    static func selectStatement() -> String { "SELECT \(selectList) FROM \(name) " }
}

/// The column-value pairs of one row to insert (or of the columns to update), written next to each
/// other so that a new column is one line: `[.uuid: instance.uuid, .name: instance.name, …]`.
typealias ColumnValues<Column: TableColumn> = KeyValuePairs<Column, any ColumnValueConvertible>

/// A value as a backend binds it.
enum ColumnValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    /// Bound as 0/1 by SQLite, as a BOOLEAN by a backend that has one.
    case bool(Bool)
    case bytes([UInt8])
}

/// What can be written into a column. Dates are stored as epoch seconds and UUIDs as lower-case
/// text, the forms every decoder reads back.
protocol ColumnValueConvertible: Sendable {
    var columnValue: ColumnValue { get }
}

extension ColumnValue: ColumnValueConvertible {
    var columnValue: ColumnValue { self }
}

extension String: ColumnValueConvertible {
    var columnValue: ColumnValue { .text(self) }
}

extension Int: ColumnValueConvertible {
    var columnValue: ColumnValue { .integer(Int64(self)) }
}

extension Int64: ColumnValueConvertible {
    var columnValue: ColumnValue { .integer(self) }
}

extension Double: ColumnValueConvertible {
    var columnValue: ColumnValue { .real(self) }
}

extension Bool: ColumnValueConvertible {
    var columnValue: ColumnValue { .bool(self) }
}

extension Date: ColumnValueConvertible {
    var columnValue: ColumnValue { .real(timeIntervalSince1970) }
}

extension UUID: ColumnValueConvertible {
    var columnValue: ColumnValue { .text(lowercasedString) }
}

extension Optional: ColumnValueConvertible where Wrapped: ColumnValueConvertible {
    var columnValue: ColumnValue { map(\.columnValue) ?? .null }
}

/// A statement of a table, with its values in the order of its `?` marks. `columns` names the
/// column each value goes to (the key of an update comes last, unnamed).
struct TableStatement: Sendable {
    let sql: String
    let columns: [String]
    let values: [ColumnValue]
}

extension StoreTable {
    /// `INSERT INTO <table> ("a", "b") VALUES (?, ?)` for `values`' columns, with their values in
    /// the same order; `verb` may be `INSERT OR REPLACE`, `suffix` an `ON CONFLICT` clause.
    static func insertStatement(
        _ values: ColumnValues<Column>, verb: String = "INSERT", suffix: String = ""
    ) -> TableStatement {
        let names = values.map { $0.key.quotedName }.joined(separator: ", ")
        let marks = Array(repeating: "?", count: values.count).joined(separator: ", ")
        let sql = "\(verb) INTO \(name) (\(names)) VALUES (\(marks))" + (suffix.isEmpty ? "" : " " + suffix)
        return TableStatement(sql: sql, columns: values.map { $0.key.sqlName }, values: values.map { $0.value.columnValue })
    }

    /// An insert that, when a row with the same `conflict` columns exists, sets every other column
    /// of `values` instead (an upsert: the update list is the insert list).
    static func upsertStatement(_ values: ColumnValues<Column>, conflict: [Column]) -> TableStatement {
        let updates = values.map { $0.key }.filter { !conflict.contains($0) }
            .map { "\($0.quotedName) = excluded.\($0.quotedName)" }.joined(separator: ", ")
        let target = conflict.map(\.quotedName).joined(separator: ", ")
        return insertStatement(values, suffix: "ON CONFLICT(\(target)) DO " + (updates.isEmpty ? "NOTHING" : "UPDATE SET \(updates)"))
    }

    /// `UPDATE <table> SET "a" = ?, "b" = ? WHERE "k" = ?` with the values in the same order.
    static func updateStatement(
        _ values: ColumnValues<Column>, where key: Column, is keyValue: any ColumnValueConvertible
    ) -> TableStatement {
        let sets = values.map { "\($0.key.quotedName) = ?" }.joined(separator: ", ")
        return TableStatement(
            sql: "UPDATE \(name) SET \(sets) WHERE \(key.quotedName) = ?", columns: values.map { $0.key.sqlName },
            values: values.map { $0.value.columnValue } + [keyValue.columnValue])
    }
}

/// A row of `Table`, read by column: every read checks the stored type, so a NULL where a value is
/// required, a wrong type or an unparsable text is ``StoreError/corrupt(_:)`` naming the table and
/// column, never a trap.
struct TableRow<Table: StoreTable, Row: PositionalRow> {
    typealias Column = Table.Column
    let row: Row

    init(_ row: Row) {
        self.row = row
    }

    /// The text, nil for NULL.
    @inline(__always)
    func text(_ column: Column) throws -> String? {
        do throws(ColumnTypeMismatch) { return try row.string(at: column.rawValue) } catch { throw corrupt(column, error.problem) }
    }

    func requiredText(_ column: Column) throws -> String {
        guard let text = try text(column) else { throw corrupt(column, "is NULL") }
        return text
    }

    func int64(_ column: Column) throws -> Int64? {
        do throws(ColumnTypeMismatch) { return try row.int64(at: column.rawValue) } catch { throw corrupt(column, error.problem) }
    }

    func requiredInt64(_ column: Column) throws -> Int64 {
        guard let value = try int64(column) else { throw corrupt(column, "is NULL") }
        return value
    }

    func int(_ column: Column) throws -> Int? {
        guard let value = try int64(column) else { return nil }
        guard let converted = Int(exactly: value) else { throw corrupt(column, "\(value) does not fit an Int") }
        return converted
    }

    func requiredInt(_ column: Column) throws -> Int {
        guard let value = try int(column) else { throw corrupt(column, "is NULL") }
        return value
    }

    func double(_ column: Column) throws -> Double? {
        do throws(ColumnTypeMismatch) { return try row.double(at: column.rawValue) } catch { throw corrupt(column, error.problem) }
    }

    func requiredBool(_ column: Column) throws -> Bool {
        let value: Bool?
        do throws(ColumnTypeMismatch) { value = try row.bool(at: column.rawValue) } catch { throw corrupt(column, error.problem) }
        guard let value else { throw corrupt(column, "is NULL") }
        return value
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

    /// A JSON column's value, decoded once per distinct text (``DecodedColumns``).
    func json<T: Decodable & Sendable>(_ type: T.Type, _ column: Column) throws -> T? {
        guard let text = try text(column) else { return nil }
        return try DecodedColumns.jsonValue(type, text, "\(Table.name).\(column.sqlName)")
    }

    func requiredJSON<T: Decodable & Sendable>(_ type: T.Type, _ column: Column) throws -> T {
        guard let value = try json(type, column) else { throw corrupt(column, "is NULL") }
        return value
    }

    /// A JSON column that holds an object (an event's extra, a blob's info), parsed afresh.
    func jsonObject(_ column: Column) throws -> [String: JSONValue]? {
        guard let text = try text(column) else { return nil }
        guard case .object(let object) = try JSONValue.parse(text) else { throw corrupt(column, "is not a JSON object") }
        return object
    }

    func corrupt(_ column: Column, _ problem: String) -> StoreError {
        StoreError.corrupt("\(Table.name).\(column.sqlName) \(problem)")
    }
}

/// The text the store writes for a JSON column: keys sorted, so the same value is the same text
/// (and ``DecodedColumns`` finds it).
enum StoredJSON {
    static func text<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
