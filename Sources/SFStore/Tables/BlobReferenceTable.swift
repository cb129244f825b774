import Foundation

/// The `blob_reference` table: who holds a blob, and why (a blob with none left is deleted).
enum BlobReferenceTable: StoreTable {
    enum Column: Int, TableColumn {
        case blobUUID, holderType, holderUUID, relationship, created

        var sqlName: String {
            switch self {
            case .blobUUID: "blob_uuid"
            case .holderType: "holder_type"
            case .holderUUID: "holder_uuid"
            case .relationship: "relationship"
            case .created: "created"
            }
        }
    }

    static let name = "blob_reference"
    static let select = selectStatement()

    /// Adding a reference that exists changes nothing.
    static func insert(_ reference: BlobReference, created: Date) -> TableStatement {
        insertStatement(
            [
                .blobUUID: reference.blobUUID,
                .holderType: reference.holderType,
                .holderUUID: reference.holderUUID.lowercased(),
                .relationship: reference.relationship.rawValue,
                .created: created,
            ], suffix: "ON CONFLICT DO NOTHING")
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> BlobReference {
        BlobReference(
            blobUUID: try row.uuid(.blobUUID),
            holderType: try row.requiredText(.holderType),
            holderUUID: try row.requiredText(.holderUUID),
            relationship: try row.parsed(.relationship, BlobRelationship.init(rawValue:)))
    }
}
