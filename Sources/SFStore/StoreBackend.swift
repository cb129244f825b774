import Foundation

/// A database the store's operations run on (``SQLStore``): transactions, wake-ups and a change
/// token. Errors leave it as ``StoreError``.
protocol StoreBackend: Sendable {
    /// Runs `body` in one write transaction. `serialised` transactions never interleave with each
    /// other (in any process); the others (the queue's) lock the rows they change themselves.
    /// Claimers are woken after the commit when `body` called ``StoreDatabase/jobsChanged()``.
    func write<T: Sendable>(serialised: Bool, _ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T
    /// Runs `body` in one snapshot of committed data.
    func read<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T
    /// A read of a few rows by key; may run on the calling thread when that cannot block.
    func readByKey<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T
    /// See ``NodeStore/wakeups()``.
    func wakeups() -> AsyncStream<Void>
    /// See ``NodeStore/changeToken()``.
    func changeToken() async throws -> Int64
    /// The store's clock, in seconds since 1970 (see ``NodeStore/clock()``).
    func clock() async throws -> Double
    /// The query for one table's columns in table order (its one argument the table's name), in
    /// the backend's own catalogue.
    var columnsQuery: String { get }
    /// The query for the store's tables by name, the backend's own bookkeeping left out.
    var tablesQuery: String { get }
    /// See ``NodeStore/releaseMemory()``.
    func releaseMemory() async
    /// Closes connections; later calls fail.
    func close()
}
