import Foundation

/// The `namespace_key` table: a namespace's API keys, as salted hashes.
enum NamespaceKeyTable: StoreTable {
    enum Column: Int, TableColumn {
        case namespace, name, hash, nonce, created

        var sqlName: String {
            switch self {
            case .namespace: "namespace"
            case .name: "name"
            case .hash: "hash"
            case .nonce: "nonce"
            case .created: "created"
            }
        }
    }

    static let name = "namespace_key"
    static let select = selectStatement()
    static let selectOfNamespace = select + "WHERE namespace = ? ORDER BY name"

    /// Saving a key under a name it already has replaces it.
    static func insertOrReplace(_ key: NamespaceKey) -> TableStatement {
        // An upsert, not SQLite's INSERT OR REPLACE, which PostgreSQL does not have.
        upsertStatement(
            [.namespace: key.namespace, .name: key.name, .hash: key.hash, .nonce: key.nonce, .created: key.created],
            conflict: [.namespace, .name])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> NamespaceKey {
        NamespaceKey(
            namespace: try row.requiredText(.namespace),
            name: try row.requiredText(.name),
            hash: try row.requiredText(.hash),
            nonce: try row.requiredText(.nonce),
            created: try row.requiredDate(.created))
    }
}
