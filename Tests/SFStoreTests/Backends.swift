import Foundation
import SFStore

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
        let store = try SQLiteStore.temporary()
        let path = store.path
        return OpenedStore(
            store: store, reopen: { try SQLiteStore(path: path, fqdn: "test-node-2") }, cleanup: { store.removeFiles() })
    }

    static let all: [Backend] = [.sqlite]
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
