import Foundation

/// The `blob` table: content-addressed files and where they are held.
enum BlobTable: StoreTable {
    enum Column: Int, TableColumn {
        case uuid, size, sha512, state, modified, fetchedAt, lastUsed, locations, info, created

        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .size: "size"
            case .sha512: "sha512"
            case .state: "state"
            case .modified: "modified"
            case .fetchedAt: "fetched_at"
            case .lastUsed: "last_used"
            case .locations: "locations"
            case .info: "info"
            case .created: "created"
            }
        }
    }

    static let name = "blob"
    static let select = selectStatement()
    static let selectByUUID = select + "WHERE uuid = ?"

    /// `sha512` normalised by the caller; locations are kept sorted and without repeats.
    static func insert(_ blob: Blob, sha512: String?) throws -> TableStatement {
        insertStatement([
            .uuid: blob.uuid,
            .size: blob.size,
            .sha512: sha512,
            .state: blob.state.rawValue,
            .modified: blob.modified,
            .fetchedAt: blob.fetchedAt,
            .lastUsed: blob.lastUsed,
            .locations: try StoredJSON.text(Set(blob.locations).sorted()),
            .info: try JSONValue.object(blob.info).jsonText(),
            .created: blob.created,
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Blob {
        guard let info = try row.jsonObject(.info) else { throw row.corrupt(.info, "is NULL") }
        return Blob(
            uuid: try row.uuid(.uuid),
            size: try row.requiredInt64(.size),
            sha512: try row.text(.sha512),
            state: try row.parsed(.state, BlobState.init(rawValue:)),
            modified: try row.requiredDate(.modified),
            fetchedAt: try row.date(.fetchedAt),
            lastUsed: try row.date(.lastUsed),
            locations: try row.requiredJSON([String].self, .locations),
            info: info,
            created: try row.requiredDate(.created))
    }
}
