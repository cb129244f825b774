import Foundation

/// The `artifact_version` table: which blob each version of an artifact is.
enum ArtifactVersionTable: StoreTable {
    enum Column: Int, TableColumn {
        case artifactUUID, index, blobUUID, created, lastModified, contentLength

        var sqlName: String {
            switch self {
            case .artifactUUID: "artifact_uuid"
            case .index: "index"
            case .blobUUID: "blob_uuid"
            case .created: "created"
            case .lastModified: "last_modified"
            case .contentLength: "content_length"
            }
        }
    }

    static let name = "artifact_version"
    static let select = selectStatement()
    static let selectOfArtifact = select + #"WHERE artifact_uuid = ? ORDER BY "index""#

    static func insert(_ version: ArtifactVersion) -> TableStatement {
        insertStatement([
            .artifactUUID: version.artifactUUID,
            .index: version.index,
            .blobUUID: version.blobUUID,
            .created: version.created,
            .lastModified: version.lastModified,
            .contentLength: version.contentLength,
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> ArtifactVersion {
        ArtifactVersion(
            artifactUUID: try row.uuid(.artifactUUID),
            index: try row.requiredInt(.index),
            blobUUID: try row.uuid(.blobUUID),
            created: try row.requiredDate(.created),
            lastModified: try row.text(.lastModified),
            contentLength: try row.int64(.contentLength))
    }
}
