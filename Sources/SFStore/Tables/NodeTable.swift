import Foundation
import SFSystem

/// The `node` table: the nodes of the cluster, as each last checked in.
enum NodeTable: StoreTable {
    enum Column: Int, TableColumn {
        case name, roles, lastSeen, meshAddress, capacity, deleted

        var sqlName: String {
            switch self {
            case .name: "name"
            case .roles: "roles"
            case .lastSeen: "last_seen"
            case .meshAddress: "mesh_address"
            case .capacity: "capacity"
            case .deleted: "deleted"
            }
        }
    }

    static let name = "node"
    static let select = selectStatement()

    /// A node saves itself whole: the row is inserted, or every column but the name replaced, except
    /// `deleted`, which only an operator sets (``SQLStore/deleteNode(named:reason:)``): a deleted node
    /// that checks in stays deleted.
    static func upsert(_ node: Node) throws -> TableStatement {
        upsertStatement(
            [
                .name: node.name,
                .roles: try JSONValue.array(node.roles.map(\.rawValue).sorted().map(JSONValue.string)).jsonText(),
                .lastSeen: node.lastSeen,
                .meshAddress: node.meshAddress?.description,
                .capacity: try node.capacity.map { try StoredJSON.text($0) },
            ], conflict: [.name])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Node {
        Node(
            name: try row.requiredText(.name),
            // A role this build does not know (written by a newer one) is left out, not an error.
            roles: Set(try row.requiredJSON([String].self, .roles).compactMap(NodeRole.init(rawValue:))),
            lastSeen: try row.date(.lastSeen),
            meshAddress: try row.optionalParsed(.meshAddress, IPv4Address.init),
            capacity: try row.json(NodeCapacity.self, .capacity),
            deleted: try row.date(.deleted))
    }
}
