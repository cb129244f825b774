import Foundation
import SFStore
import SFTestSupport
import Synchronization

/// A store under test plus what the contract needs beyond the protocol: a second, independent
/// handle on the same data (standing in for a second process) and cleanup.
struct OpenedStore: Sendable {
    let store: any NodeStore
    /// Opens another store on the same data, as a second process would.
    let reopen: @Sendable () throws -> any NodeStore
    let cleanup: @Sendable () -> Void
}

/// One backend the contract suite runs against. Add a PostgreSQL entry to ``all`` and every
/// contract test runs against it too.
struct Backend: Sendable, CustomStringConvertible {
    let description: String
    let open: @Sendable () throws -> OpenedStore

    static let sqlite = Backend(description: "SQLite temp file") {
        let store = try SQLStore.temporary()
        let path = store.path
        return OpenedStore(
            store: store, reopen: { try SQLStore(path: path, fqdn: "test-node-2") }, cleanup: { store.removeFiles() })
    }

    /// A database of its own on the tests' PostgreSQL server; a second handle is a second store on
    /// it, as a second node would open.
    static let postgres = Backend(description: "PostgreSQL") {
        let database = try PostgresTestDatabase.create()
        do {
            let store = try SQLStore.open(location: database.url, fqdn: "test-node")
            let opened = Mutex<[SQLStore]>([store])
            return OpenedStore(
                store: store,
                reopen: {
                    let other = try SQLStore.open(location: database.url, fqdn: "test-node-2")
                    opened.withLock { $0.append(other) }
                    return other
                },
                cleanup: {
                    for store in opened.withLock({ $0 }) { store.close() }
                    database.drop()
                })
        } catch {
            database.drop()
            throw error
        }
    }

    /// SQLite always; PostgreSQL when the tests were given a server (scripts/test always does).
    static let all: [Backend] = PostgresTestDatabase.serverURL == nil ? [.sqlite] : [.sqlite, .postgres]
}

/// Runs `body` with a fresh store of `backend`, removing it however `body` ends.
func withStore<T>(_ backend: Backend, _ body: (any NodeStore, OpenedStore) async throws -> T) async throws -> T {
    let opened = try backend.open()
    defer { opened.cleanup() }
    return try await body(opened.store, opened)
}

/// The StoreError `body` throws, or nil when it throws nothing (or something else).
func storeError(_ body: () async throws -> Void) async -> StoreError? {
    do {
        try await body()
        return nil
    } catch let error as StoreError {
        return error
    } catch {
        return nil
    }
}
