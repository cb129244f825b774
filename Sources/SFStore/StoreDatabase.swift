import Foundation

// What the store's operations see of a database: one transaction, synchronous, that runs SQL and
// reads rows by position. Both backends give it (SQLite through GRDB's connection, PostgreSQL
// through a connection of its bounded pool on a thread of its own), so every operation is written
// once. The SQL is SQLite's spelling, kept to what PostgreSQL also takes: `?` and `?N` marks (the
// PostgreSQL backend rewrites them to `$N`), `json_each(?N)` over a JSON array of text (rewritten to
// `json_array_elements_text`), `INSERT OR IGNORE` (rewritten to `ON CONFLICT DO NOTHING`), booleans
// as 0 and 1, and no scalar `max(a, b)`.

/// One transaction of the store, as its operations use it. Not shared between threads: a backend
/// makes one for each transaction and drops it at the end.
protocol StoreDatabase: AnyObject {
    /// Runs one statement; answers how many rows it changed.
    @discardableResult
    func execute(sql: String, arguments: StoreArguments) throws -> Int
    /// Rows changed by the last ``execute(sql:arguments:)``.
    var changesCount: Int { get }
    /// Hands each row `sql` selects to `body`; `what` names the rows in an error.
    func eachPositionalRow(
        _ sql: String, _ arguments: StoreArguments, reading what: String, _ body: (any PositionalRow) throws -> Void) throws
    /// The first row `sql` selects, decoded by `Table`; nil when it selects none.
    func firstRow<Table: StoreTable>(_ table: Table.Type, _ sql: String, _ arguments: StoreArguments) throws -> Table.Record?
    /// Each row of `Table` that `sql` selects, undecoded.
    func eachRow<Table: StoreTable>(
        _ table: Table.Type, _ sql: String, _ arguments: StoreArguments, _ body: (TableRow<Table, AnyTableRow>) throws -> Void) throws
    /// Seconds since 1970 by the database's clock, the same for the whole transaction. Leases and
    /// node check-ins are timed by it, so that nodes whose clocks differ agree on an age.
    func now() throws -> Double
    /// Marks the transaction as one that enqueued or finished jobs: the backend wakes claimers
    /// once, at its commit (never once per row).
    func jobsChanged()
}

/// A row of either backend, for ``StoreDatabase/eachRow(_:_:_:_:)`` (whose body cannot be generic
/// over the backend's row type through an existential).
struct AnyTableRow: PositionalRow {
    let base: any PositionalRow
    @inline(__always) func int64(at index: Int) throws(ColumnTypeMismatch) -> Int64? { try base.int64(at: index) }
    @inline(__always) func string(at index: Int) throws(ColumnTypeMismatch) -> String? { try base.string(at: index) }
    @inline(__always) func double(at index: Int) throws(ColumnTypeMismatch) -> Double? { try base.double(at: index) }
    @inline(__always) func bytes(at index: Int) throws(ColumnTypeMismatch) -> [UInt8]? { try base.bytes(at: index) }
    @inline(__always) func bool(at index: Int) throws(ColumnTypeMismatch) -> Bool? { try base.bool(at: index) }
}

/// The values of a statement's marks, in order: `[owner, now + lease, jobID]`.
struct StoreArguments: ExpressibleByArrayLiteral, Sendable {
    var values: [ColumnValue]

    init(arrayLiteral elements: (any ColumnValueConvertible)?...) {
        values = elements.map { $0?.columnValue ?? .null }
    }

    init(_ values: [ColumnValue]) {
        self.values = values
    }

    init(_ values: [any ColumnValueConvertible]) {
        self.values = values.map(\.columnValue)
    }

    static func += (arguments: inout StoreArguments, more: StoreArguments) {
        arguments.values += more.values
    }
}

/// A value read alone from the first column of a row (`SELECT count(*) …`).
protocol StoreScalar {
    static func read(_ row: any PositionalRow, _ what: String) throws -> Self?
}

extension String: StoreScalar {
    static func read(_ row: any PositionalRow, _ what: String) throws -> String? {
        do throws(ColumnTypeMismatch) { return try row.string(at: 0) } catch { throw StoreError.corrupt("\(what) \(error.problem)") }
    }
}

extension Int64: StoreScalar {
    static func read(_ row: any PositionalRow, _ what: String) throws -> Int64? {
        do throws(ColumnTypeMismatch) { return try row.int64(at: 0) } catch { throw StoreError.corrupt("\(what) \(error.problem)") }
    }
}

extension Int: StoreScalar {
    static func read(_ row: any PositionalRow, _ what: String) throws -> Int? {
        guard let value = try Int64.read(row, what) else { return nil }
        guard let converted = Int(exactly: value) else { throw StoreError.corrupt("\(what) \(value) does not fit an Int") }
        return converted
    }
}

extension Double: StoreScalar {
    static func read(_ row: any PositionalRow, _ what: String) throws -> Double? {
        do throws(ColumnTypeMismatch) { return try row.double(at: 0) } catch { throw StoreError.corrupt("\(what) \(error.problem)") }
    }
}

extension Bool: StoreScalar {
    static func read(_ row: any PositionalRow, _ what: String) throws -> Bool? {
        do throws(ColumnTypeMismatch) { return try row.bool(at: 0) } catch { throw StoreError.corrupt("\(what) \(error.problem)") }
    }
}

extension StoreDatabase {
    @discardableResult
    func execute(sql: String) throws -> Int { try execute(sql: sql, arguments: []) }

    /// ``eachPositionalRow(_:_:reading:_:)`` of a statement without marks.
    func eachPositionalRow(_ sql: String, reading what: String, _ body: (any PositionalRow) throws -> Void) throws {
        try eachPositionalRow(sql, [], reading: what, body)
    }

    /// The first column of the first row `sql` selects; nil for no row or NULL.
    func fetchOne<Value: StoreScalar>(_ type: Value.Type, sql: String, arguments: StoreArguments = []) throws -> Value? {
        var value: Value?
        var seen = false
        try eachPositionalRow(sql, arguments, reading: sql) { row in
            guard !seen else { return }
            seen = true
            value = try Value.read(row, sql)
        }
        return value
    }

    /// The first column of every row `sql` selects, NULLs left out.
    func fetchAll<Value: StoreScalar>(_ type: Value.Type, sql: String, arguments: StoreArguments = []) throws -> [Value] {
        var values: [Value] = []
        try eachPositionalRow(sql, arguments, reading: sql) { row in
            if let value = try Value.read(row, sql) { values.append(value) }
        }
        return values
    }

    /// Whether `sql` selects any row.
    func exists(sql: String, arguments: StoreArguments = []) throws -> Bool {
        var found = false
        try eachPositionalRow(sql, arguments, reading: sql) { _ in found = true }
        return found
    }

    /// ``eachRow(_:_:_:_:)`` of a statement without marks.
    func eachRow<Table: StoreTable>(_ table: Table.Type, _ sql: String, _ body: (TableRow<Table, AnyTableRow>) throws -> Void) throws {
        try eachRow(table, sql, [], body)
    }

    /// The first row `sql` selects, decoded; a statement without marks.
    func firstRow<Table: StoreTable>(_ table: Table.Type, _ sql: String) throws -> Table.Record? {
        try firstRow(table, sql, [])
    }

    /// Every row `sql` selects, decoded by the table's decoder.
    func allRows<Table: StoreTable>(_ table: Table.Type, _ sql: String, _ arguments: StoreArguments = []) throws -> [Table.Record] {
        var values: [Table.Record] = []
        try eachRow(table, sql, arguments) { row in values.append(try Table.decode(row)) }
        return values
    }

    /// Runs one of a table's insert, upsert or update statements (see ``StoreTable``).
    @discardableResult
    func execute(_ statement: TableStatement) throws -> Int {
        try execute(sql: statement.sql, arguments: StoreArguments(statement.values))
    }
}
