import Foundation

/// The `namespace` table. A deleted namespace's row stays (state `deleted`) until its name is
/// used again, when the new one replaces it.
enum NamespaceTable: StoreTable {
    enum Column: Int, TableColumn {
        case name, state, created

        var sqlName: String {
            switch self {
            case .name: "name"
            case .state: "state"
            case .created: "created"
            }
        }
    }

    static let name = "namespace"
    static let select = selectStatement()
    static let selectByName = select + "WHERE name = ?"

    static func insertOrReplace(_ namespace: Namespace) -> TableStatement {
        // An upsert, not SQLite's INSERT OR REPLACE, which PostgreSQL does not have.
        upsertStatement([.name: namespace.name, .state: namespace.state.rawValue, .created: namespace.created], conflict: [.name])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Namespace {
        Namespace(
            name: try row.requiredText(.name),
            state: try row.parsed(.state, NamespaceState.init(rawValue:)),
            created: try row.requiredDate(.created))
    }
}
