import Foundation

extension SQLStore {

    fileprivate static func fetchNamespace(_ db: any StoreDatabase, _ name: String) throws -> Namespace {
        guard let namespace = try db.firstRow(NamespaceTable.self, NamespaceTable.selectByName, [name]) else {
            throw StoreError.notFound(type: "namespace", id: name)
        }
        return namespace
    }
}

extension SQLStore {

    public func trusts(of namespace: String) async throws -> [String] {
        try await read { db in
            guard try Self.fetchNamespace(db, namespace).state != .deleted else { throw StoreError.notFound(type: "namespace", id: namespace) }
            return try db.fetchAll(String.self, sql: "SELECT trusted FROM namespace_trust WHERE namespace = ? ORDER BY trusted", arguments: [namespace])
        }
    }

    public func setTrust(of namespace: String, in other: String, _ trusted: Bool) async throws {
        try await write { db in
            guard try Self.fetchNamespace(db, namespace).state != .deleted else { throw StoreError.notFound(type: "namespace", id: namespace) }
            if trusted {
                try db.execute(sql: "INSERT OR IGNORE INTO namespace_trust (namespace, trusted) VALUES (?, ?)", arguments: [namespace, other])
            } else {
                try db.execute(sql: "DELETE FROM namespace_trust WHERE namespace = ? AND trusted = ?", arguments: [namespace, other])
            }
        }
    }

    public func namespacesTrusting(_ namespace: String) async throws -> [String] {
        try await read { db in
            try db.fetchAll(String.self, sql: """
                    SELECT t.namespace FROM namespace_trust t JOIN namespace n ON n.name = t.namespace
                    WHERE t.trusted = ? AND n.state != 'deleted' ORDER BY t.namespace
                    """, arguments: [namespace])
        }
    }
}

extension SQLStore: AuthRecords {
    public func createNamespace(_ name: String) async throws -> Namespace {
        guard !name.isEmpty else { throw StoreError.invalidArgument("a namespace needs a name") }
        return try await write { db in
            if let existing = try? Self.fetchNamespace(db, name), existing.state != .deleted {
                throw StoreError.alreadyExists(type: "namespace", id: name)
            }
            let created = Namespace(name: name)
            try db.execute(NamespaceTable.insertOrReplace(created))
            return created
        }
    }

    public func namespace(named name: String) async throws -> Namespace {
        try await read { db in try Self.fetchNamespace(db, name) }
    }

    public func namespaces() async throws -> [Namespace] {
        try await read { db in
            try db.allRows(NamespaceTable.self, NamespaceTable.select + "WHERE state != 'deleted' ORDER BY name")
        }
    }

    public func deleteNamespace(_ name: String) async throws {
        try await write { db in
            _ = try Self.fetchNamespace(db, name)
            try db.execute(sql: "UPDATE namespace SET state = 'deleted' WHERE name = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM namespace_key WHERE namespace = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM namespace_trust WHERE namespace = ? OR trusted = ?", arguments: [name, name])
        }
    }

    public func saveKey(namespace: String, name: String, hash: String) async throws -> NamespaceKey {
        guard !name.isEmpty else { throw StoreError.invalidArgument("a key needs a name") }
        return try await write { db in
            guard try Self.fetchNamespace(db, namespace).state != .deleted else {
                throw StoreError.notFound(type: "namespace", id: namespace)
            }
            let key = NamespaceKey(namespace: namespace, name: name, hash: hash)
            try db.execute(NamespaceKeyTable.insertOrReplace(key))
            return key
        }
    }

    public func keys(namespace: String) async throws -> [NamespaceKey] {
        try await read { db in
            try db.allRows(NamespaceKeyTable.self, NamespaceKeyTable.selectOfNamespace, [namespace])
        }
    }

    public func deleteKey(namespace: String, name: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM namespace_key WHERE namespace = ? AND name = ?", arguments: [namespace, name])
            if db.changesCount == 0 { throw StoreError.notFound(type: "key", id: "\(namespace)/\(name)") }
        }
    }

    public func setting(_ key: String) async throws -> String? {
        try await read { db in try db.fetchOne(String.self, sql: "SELECT value FROM setting WHERE key = ?", arguments: [key]) }
    }

    public func settingCreatingIfAbsent(_ key: String, value: String) async throws -> String {
        try await write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO setting (key, value) VALUES (?, ?)", arguments: [key, value])
            guard let stored = try db.fetchOne(String.self, sql: "SELECT value FROM setting WHERE key = ?", arguments: [key]) else {
                throw StoreError.backend("setting \(key) vanished inside its own transaction")
            }
            return stored
        }
    }
}
