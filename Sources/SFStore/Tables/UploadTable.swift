import Foundation

/// The `upload` table: chunked uploads in progress, on the node that receives them.
enum UploadTable: StoreTable {
    enum Column: Int, TableColumn {
        case uuid, node, namespace, received, created

        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .node: "node"
            case .namespace: "namespace"
            case .received: "received"
            case .created: "created"
            }
        }
    }

    static let name = "upload"
    static let select = selectStatement()
    static let selectByUUID = select + "WHERE uuid = ?"

    static func insert(_ upload: Upload) -> TableStatement {
        insertStatement([
            .uuid: upload.uuid, .node: upload.node, .namespace: upload.namespace, .received: upload.received, .created: upload.created,
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Upload {
        Upload(
            uuid: try row.uuid(.uuid),
            node: try row.requiredText(.node),
            namespace: try row.requiredText(.namespace),
            received: try row.requiredInt64(.received),
            created: try row.requiredDate(.created))
    }
}
