import Foundation

/// The `metadata` table: a JSON value per key of an object (instance, interface, network…).
enum MetadataTable: StoreTable {
    enum Column: Int, TableColumn {
        case objectType, objectUUID, key, value

        var sqlName: String {
            switch self {
            case .objectType: "object_type"
            case .objectUUID: "object_uuid"
            case .key: "key"
            case .value: "value"
            }
        }
    }

    static let name = "metadata"
    static let select = selectStatement()
    static let selectOfObject = select + "WHERE object_type = ? AND object_uuid = ?"

    /// Sets the key's value, replacing the one it had.
    static func upsert(objectType: String, objectUUID: String, key: String, valueText: String) -> TableStatement {
        upsertStatement(
            [.objectType: objectType, .objectUUID: objectUUID, .key: key, .value: valueText], conflict: [.objectType, .objectUUID, .key])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Metadata {
        Metadata(
            objectType: try row.requiredText(.objectType), objectUUID: try row.requiredText(.objectUUID),
            key: try row.requiredText(.key), value: try row.requiredJSON(JSONValue.self, .value))
    }
}
