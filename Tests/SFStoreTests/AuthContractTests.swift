import Foundation
import SFStore
import Testing

/// Namespaces, their keys, trust between them and the store's settings, on every backend.
@Suite("Store contract: namespaces, keys, trust, settings")
struct AuthContractTests {
    private func records(_ store: any NodeStore) throws -> any AuthRecords {
        try #require(store as? any AuthRecords)
    }

    @Test("a namespace is made once, listed, and deleted with its keys and trust; its name can be made again", arguments: Backend.all)
    func namespaces(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let auth = try records(store)
            try await auth.createNamespace("beta")
            try await auth.createNamespace("alpha")
            #expect(await storeError { try await auth.createNamespace("alpha") } == .alreadyExists(type: "namespace", id: "alpha"))
            #expect(await storeError { try await auth.createNamespace("") } == .invalidArgument("a namespace needs a name"))
            #expect(try await auth.namespaces().map(\.name) == ["alpha", "beta"])
            try await auth.saveKey(namespace: "alpha", name: "k", hash: "h1")
            try await auth.setTrust(of: "beta", in: "alpha", true)
            try await auth.deleteNamespace("alpha")
            #expect(try await auth.namespace(named: "alpha").state == .deleted)
            #expect(try await auth.namespaces().map(\.name) == ["beta"])
            #expect(try await auth.keys(namespace: "alpha").isEmpty)
            #expect(try await auth.trusts(of: "beta").isEmpty)
            #expect(await storeError { try await auth.saveKey(namespace: "alpha", name: "k", hash: "h") } == .notFound(type: "namespace", id: "alpha"))
            // A deleted name is free again, and comes back as a new, live namespace.
            #expect(try await auth.createNamespace("alpha").state == .created)
            #expect(await storeError { _ = try await auth.namespace(named: "gamma") } == .notFound(type: "namespace", id: "gamma"))
        }
    }

    @Test("a key saved again replaces the one of that name; a missing key cannot be deleted", arguments: Backend.all)
    func keys(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let auth = try records(store)
            try await auth.createNamespace("ns")
            try await auth.saveKey(namespace: "ns", name: "b", hash: "hb")
            try await auth.saveKey(namespace: "ns", name: "a", hash: "h1")
            let replaced = try await auth.saveKey(namespace: "ns", name: "a", hash: "h2")
            let keys = try await auth.keys(namespace: "ns")
            #expect(keys.map(\.name).sorted() == ["a", "b"])
            #expect(keys.first { $0.name == "a" }?.hash == "h2")
            #expect(keys.first { $0.name == "a" }?.nonce == replaced.nonce)
            try await auth.deleteKey(namespace: "ns", name: "a")
            #expect(try await auth.keys(namespace: "ns").map(\.name) == ["b"])
            #expect(await storeError { try await auth.deleteKey(namespace: "ns", name: "a") } == .notFound(type: "key", id: "ns/a"))
        }
    }

    @Test("trust is set once however often it is asked, and taken back", arguments: Backend.all)
    func trust(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let auth = try records(store)
            for name in ["a", "b", "c"] { try await auth.createNamespace(name) }
            try await auth.setTrust(of: "a", in: "c", true)
            try await auth.setTrust(of: "a", in: "c", true)
            try await auth.setTrust(of: "a", in: "b", true)
            #expect(try await auth.trusts(of: "a") == ["b", "c"])
            #expect(try await auth.namespacesTrusting("c") == ["a"])
            try await auth.setTrust(of: "a", in: "c", false)
            #expect(try await auth.trusts(of: "a") == ["b"])
            #expect(try await auth.namespacesTrusting("c").isEmpty)
        }
    }

    @Test("a setting made if absent keeps its first value, from any store on the data", arguments: Backend.all)
    func settings(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let auth = try records(store)
            #expect(try await auth.setting("secret") == nil)
            #expect(try await auth.settingCreatingIfAbsent("secret", value: "first") == "first")
            let other = try records(try opened.reopen())
            #expect(try await other.settingCreatingIfAbsent("secret", value: "second") == "first")
            #expect(try await auth.setting("secret") == "first")
        }
    }
}
