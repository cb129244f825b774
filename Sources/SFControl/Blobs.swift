import Foundation
import SFBlobs
import SFStore

/// Where a node keeps blob data: `<path>/blobs` for blobs and `<path>/uploads` for uploads in
/// progress, the same directories the agent's image resolver uses, so a blob uploaded here is the
/// blob an instance boots from. `path` is the agent's `storagePath` setting.
///
/// The use cases that read or write bytes take one, since the bytes live on a node's disk and the
/// store only holds their records.
public struct BlobStorage: Sendable, Equatable {
    /// The agent's storage path, such as `/var/lib/sfnode/instances`.
    public var path: String
    /// The node whose disk this is, as blob locations and upload records name it.
    public var nodeName: String

    public init(path: String, nodeName: String) {
        self.path = path
        self.nodeName = nodeName
    }

    /// Where blob data files are.
    public var blobDirectory: String { path + "/blobs" }
    /// Where upload files are.
    public var uploadDirectory: String { path + "/uploads" }
}

/// A blob with what holds it and what it holds, as `blob show` and the API's blob object need.
public struct BlobView: Sendable, Equatable, Encodable {
    public let blob: Blob
    /// The references to this blob: instance disks, artifact versions, blobs built on it.
    public let referencesTo: [BlobReference]
    /// The references this blob holds on other blobs (`depends_on`, `transcode`).
    public let referencesFrom: [BlobReference]
    /// How many references keep the blob alive; it is deleted when this reaches 0.
    public let referenceCount: Int

    public init(blob: Blob, referencesTo: [BlobReference], referencesFrom: [BlobReference]) {
        self.init(blob: blob, referencesTo: referencesTo, referencesFrom: referencesFrom, referenceCount: referencesTo.count)
    }

    init(blob: Blob, referencesTo: [BlobReference], referencesFrom: [BlobReference], referenceCount: Int) {
        self.blob = blob
        self.referencesTo = referencesTo
        self.referencesFrom = referencesFrom
        self.referenceCount = referenceCount
    }

    /// The instances whose disks are built on the blob, lower-case UUIDs.
    public var instances: [String] { referencesTo.filter { $0.holderType == "instance" }.map(\.holderUUID) }

    enum CodingKeys: String, CodingKey {
        case instances
        case referencesTo = "references_to"
        case referencesFrom = "references_from"
        case referenceCount = "reference_count"
    }

    /// The blob's own fields, then `reference_count`, `instances`, and `references_to` /
    /// `references_from` grouped by relationship as Shaken Fist's newer blob object has them.
    public func encode(to encoder: any Encoder) throws {
        try blob.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(referenceCount, forKey: .referenceCount)
        try container.encode(instances, forKey: .instances)
        try container.encode(Self.grouped(referencesTo), forKey: .referencesTo)
        try container.encode(Self.grouped(referencesFrom), forKey: .referencesFrom)
    }

    /// Shaken Fist's shape: `{"disk": [{"source_object_type": "instance", "source_uuid": …,
    /// "relationship": "disk", "target_object_type": "blob", "target_uuid": …}]}`.
    public static func grouped(_ references: [BlobReference]) -> [String: [[String: String]]] {
        Dictionary(grouping: references, by: \.relationship.rawValue).mapValues { group in
            group.map {
                [
                    "source_object_type": $0.holderType, "source_uuid": $0.holderUUID, "relationship": $0.relationship.rawValue,
                    "target_object_type": "blob", "target_uuid": $0.blobUUID.lowercasedString,
                ]
            }
        }
    }
}

extension Control {
    // MARK: Blobs

    /// Every blob, oldest first; deleted ones only when asked (Shaken Fist lists only live ones).
    public func blobs(includeDeleted: Bool = false) async throws -> [Blob] {
        let records = try blobRecords()
        return try await controlled { try await records.blobs().filter { includeDeleted || $0.state != .deleted } }
    }

    /// The blob with what references it and what it references. A deleted blob is still shown,
    /// with state `deleted`, as Shaken Fist does.
    public func blob(uuid: UUID) async throws -> BlobView {
        let records = try blobRecords()
        return try await controlled {
            let blob = try await records.blob(uuid: uuid)
            let to = try await records.references(to: uuid)
            let from = try await records.references(holderType: "blob", holderUUID: uuid.uuidString)
            return BlobView(blob: blob, referencesTo: to, referencesFrom: from)
        }
    }

    /// ``blob(uuid:)`` as `namespace` (nil or `system`: everything) may see it: a blob it cannot
    /// see (``canSee(blob:namespace:)``) is not found, exactly as a missing one, and of what
    /// references the blob only the holders it sees are listed (`reference_count` still counts all).
    public func blob(uuid: UUID, namespace: String?) async throws -> BlobView {
        if let namespace, namespace != Namespace.system {
            guard try await canSee(blob: uuid, namespace: namespace) else { throw ControlError.notFound("blob not found") }
        }
        let view: BlobView
        do {
            view = try await blob(uuid: uuid)
        } catch let error as ControlError where error.code == .notFound {
            throw ControlError.notFound("blob not found")
        }
        return try await visibleHolders(of: view, namespace: namespace)
    }

    /// Whether `namespace` may see (read, boot, name in an artifact) the blob: always for `system`,
    /// otherwise when it sees an artifact, instance or blob holding it. A missing blob is not seen.
    public func canSee(blob uuid: UUID, namespace: String) async throws -> Bool {
        let access = try imageAccess()
        return try await controlled { try await access.canSee(blob: uuid, namespace: namespace) }
    }

    /// The view with only the holders `namespace` (nil or `system`: all) sees.
    func visibleHolders(of view: BlobView, namespace: String?) async throws -> BlobView {
        guard let namespace, namespace != Namespace.system else { return view }
        let access = try imageAccess()
        return try await controlled {
            var seen: [BlobReference] = []
            for reference in view.referencesTo {
                if try await access.canSee(holderOf: reference, namespace: namespace) { seen.append(reference) }
            }
            return BlobView(blob: view.blob, referencesTo: seen, referencesFrom: view.referencesFrom, referenceCount: view.referenceCount)
        }
    }

    /// The oldest created blob whose content has this sha512 (128 hex digits, any case), or nil:
    /// how a client skips uploading what the cluster already has. For a `namespace` other than
    /// `system` a blob it cannot see is nil too, so the lookup tells no one what others hold.
    public func blob(sha512: String, namespace: String? = nil) async throws -> Blob? {
        guard sha512.utf8.count == 128, sha512.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit }) else {
            throw ControlError.invalid("sha512 '\(sha512.prefix(140))' is not 128 hexadecimal digits")
        }
        let records = try blobRecords()
        guard let blob = try await controlled({ try await records.blob(sha512: sha512.lowercased()) }) else { return nil }
        if let namespace, namespace != Namespace.system, !(try await canSee(blob: blob.uuid, namespace: namespace)) { return nil }
        return blob
    }

    /// Up to `limit` bytes (nil: to the end) of the blob from `offset`, as chunks of at most
    /// `chunkSize` bytes read from this node's disk as they are consumed, so a blob of any size
    /// streams in constant memory. An offset at or past the end gives no chunks, not an error
    /// (Shaken Fist's client relies on that). A negative offset or limit is refused by name; a
    /// blob whose data is not on this node is not found.
    ///
    /// Shaken Fist's HTTP `limit=0` means "to the end"; here that is `nil`, and 0 reads nothing.
    public func readBlob(
        uuid: UUID, offset: Int64 = 0, limit: Int64? = nil, storage: BlobStorage, chunkSize: Int = 1 << 20
    ) async throws -> BlobChunks {
        try Self.checkRange(offset: offset, limit: limit)
        guard chunkSize > 0 else { throw ControlError.invalid("chunk size \(chunkSize) is not positive") }
        let blobs = try blobStore(storage)
        return try await controlled {
            let blob = try await blobs.records.blob(uuid: uuid)
            guard blob.state == .created else {
                throw ControlError.conflict("blob \(uuid.lowercasedString) is \(blob.state.rawValue); only a created blob has data to read")
            }
            return try blobs.chunks(uuid, offset: offset, limit: limit, chunkSize: chunkSize)
        }
    }

    /// The same bytes as ``readBlob(uuid:offset:limit:storage:chunkSize:)`` in one `Data`: for small
    /// ranges only, since the whole range is held in memory.
    public func readBlobData(uuid: UUID, offset: Int64 = 0, limit: Int64? = nil, storage: BlobStorage) async throws -> Data {
        let chunks = try await readBlob(uuid: uuid, offset: offset, limit: limit, storage: storage)
        return try await controlled {
            var data = Data()
            for try await chunk in chunks { data.append(chunk) }
            return data
        }
    }

    static func checkRange(offset: Int64, limit: Int64?) throws(ControlError) {
        guard offset >= 0 else { throw .invalid("offset \(offset) is negative") }
        if let limit, limit < 0 { throw .invalid("limit \(limit) is negative") }
    }

    // MARK: Uploads

    /// Starts an empty upload on this node (Shaken Fist's `POST /upload`): chunks are then
    /// appended with ``appendUpload(uuid:bytes:storage:)`` and the result made an artifact with
    /// ``uploadArtifact(name:uploadUUID:namespace:storage:)``.
    public func createUpload(namespace: String? = nil, storage: BlobStorage) async throws -> Upload {
        let namespace = namespace ?? settings.defaultNamespace
        try Names.checkName(namespace, "namespace")
        let uploads = try uploadSessions(storage)
        try await checkUploadQuota(namespace: namespace)
        return try await controlled { try await uploads.create(namespace: namespace) }
    }

    /// The upload, with how many bytes it holds so far.
    public func upload(uuid: UUID) async throws -> Upload {
        let records = try blobRecords()
        return try await controlled { try await records.upload(uuid: uuid) }
    }

    /// Appends `bytes` to the upload and returns it with its new size, which a client compares
    /// with what it has sent (Shaken Fist's reply to `POST /upload/<uuid>`).
    @discardableResult public func appendUpload(uuid: UUID, bytes: some Collection<UInt8> & Sendable, storage: BlobStorage) async throws -> Upload {
        let uploads = try uploadSessions(storage)
        try await checkUploadGrowth(try await checkLocal(upload: uuid, storage), adding: bytes.count)
        return try await controlled { try await uploads.append(uuid: uuid, bytes: bytes) }
    }

    /// Cuts the upload back to `offset` bytes, where a client resumes after a chunk failed. An
    /// offset past what the upload holds is refused (Shaken Fist would pad it with zeros).
    @discardableResult public func truncateUpload(uuid: UUID, to offset: Int64, storage: BlobStorage) async throws -> Upload {
        guard offset >= 0 else { throw ControlError.invalid("truncate offset \(offset) is negative") }
        let uploads = try uploadSessions(storage)
        let upload = try await checkLocal(upload: uuid, storage)
        guard offset <= upload.received else {
            throw ControlError.invalid(
                "truncate offset \(offset) is past the end of upload \(uuid.lowercasedString), which holds \(upload.received) bytes")
        }
        return try await controlled { try await uploads.truncate(uuid: uuid, to: offset) }
    }

    /// Forgets the upload and removes its file (a client giving up).
    public func abandonUpload(uuid: UUID, storage: BlobStorage) async throws {
        let uploads = try uploadSessions(storage)
        try await checkLocal(upload: uuid, storage)
        try await controlled { try await uploads.abandon(uuid: uuid) }
    }

    /// The upload, which must be on this node: its file is on that node's disk only.
    @discardableResult func checkLocal(upload uuid: UUID, _ storage: BlobStorage) async throws -> Upload {
        let upload = try await self.upload(uuid: uuid)
        guard upload.node == storage.nodeName else {
            throw ControlError.conflict(
                "upload \(uuid.lowercasedString) is on node \(upload.node), not \(storage.nodeName); send its chunks to \(upload.node)")
        }
        return upload
    }

    // MARK: Plumbing

    /// The store as the blob records it also is. Every backend sfnode has (SQLStore) is both;
    /// a store that is not cannot hold blobs at all.
    func blobRecords() throws(ControlError) -> any BlobRecords {
        guard let records = store as? any BlobRecords else {
            throw ControlError(.internal, "the store (\(type(of: store))) keeps no blob records")
        }
        return records
    }

    /// The image visibility rule over this store (``ImageAccess``).
    func imageAccess() throws(ControlError) -> ImageAccess {
        ImageAccess(store: try blobRecords())
    }

    /// This node's blob data over the store's records.
    func blobStore(_ storage: BlobStorage) throws(ControlError) -> BlobStore {
        try Self.checkStorage(storage)
        return BlobStore(records: try blobRecords(), directory: storage.blobDirectory, nodeName: storage.nodeName, logger: logger)
    }

    /// This node's uploads.
    func uploadSessions(_ storage: BlobStorage) throws(ControlError) -> UploadSessions {
        let blobs = try blobStore(storage)
        return UploadSessions(blobs: blobs, records: blobs.records, directory: storage.uploadDirectory)
    }

    static func checkStorage(_ storage: BlobStorage) throws(ControlError) {
        guard storage.path.hasPrefix("/") else {
            throw ControlError(.internal, "storage path '\(storage.path)' is not absolute; set storagePath (SFNODE_STORAGE_PATH)")
        }
        guard !storage.nodeName.isEmpty else { throw ControlError(.internal, "the node name is empty; set nodeName (SFNODE_NODE_NAME)") }
    }
}
