import Foundation

/// The `artifact` table: named images and snapshots, each a series of versions.
enum ArtifactTable: StoreTable {
    enum Column: Int, TableColumn {
        case uuid, type, name, sourceURL, namespace, state, maxVersions, highestIndex, created, shared

        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .type: "type"
            case .name: "name"
            case .sourceURL: "source_url"
            case .namespace: "namespace"
            case .state: "state"
            case .maxVersions: "max_versions"
            case .highestIndex: "highest_index"
            case .created: "created"
            case .shared: "shared"
            }
        }
    }

    static let name = "artifact"
    static let select = selectStatement()
    static let selectByUUID = select + "WHERE uuid = ?"

    /// A new artifact has no versions yet: its highest index is 0.
    static func insert(_ artifact: Artifact) -> TableStatement {
        insertStatement([
            .uuid: artifact.uuid,
            .type: artifact.type.rawValue,
            .name: artifact.name,
            .sourceURL: artifact.sourceURL,
            .namespace: artifact.namespace,
            .state: artifact.state.rawValue,
            .maxVersions: artifact.maxVersions,
            .highestIndex: 0,
            .created: artifact.created,
            .shared: artifact.shared,
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Artifact {
        Artifact(
            uuid: try row.uuid(.uuid),
            type: try row.parsed(.type, ArtifactType.init(rawValue:)),
            name: try row.requiredText(.name),
            sourceURL: try row.text(.sourceURL),
            namespace: try row.requiredText(.namespace),
            state: try row.parsed(.state, ArtifactState.init(rawValue:)),
            maxVersions: try row.requiredInt(.maxVersions),
            created: try row.requiredDate(.created),
            shared: try row.requiredBool(.shared))
    }
}
