import Foundation

/// A blob's lifecycle: `initial → created | error | deleted`, `created → error | deleted`,
/// `error → deleted`. A blob is `deleted` once nothing references it any more.
public enum BlobState: String, Codable, Sendable, CaseIterable {
    case initial, created, deleted, error

    /// Whether a blob in this state may move to `next`; staying put is always allowed.
    public func canTransition(to next: BlobState) -> Bool {
        if next == self { return true }
        switch self {
        case .initial: return [.created, .error, .deleted].contains(next)
        case .created: return [.deleted, .error].contains(next)
        case .error: return next == .deleted
        case .deleted: return false
        }
    }
}

/// Immutable content identified by a UUID: an image, a snapshot, an upload. The bytes live on the
/// nodes in ``locations``; this is the record of them.
///
/// The reference count is not stored: it is the number of ``BlobReference``s to the blob, so it
/// can never drift from the references themselves.
public struct Blob: Codable, Hashable, Sendable {
    public var uuid: UUID
    /// Bytes; 0 until the data is complete.
    public var size: Int64
    /// Lower-case hex, known once the data is complete.
    public var sha512: String?
    public var state: BlobState
    /// When the content was last modified at its source (an HTTP `Last-Modified`), else when it
    /// was made.
    public var modified: Date
    /// When the data was complete on its first node.
    public var fetchedAt: Date?
    /// When an instance or the image cache last used it.
    public var lastUsed: Date?
    /// The names of the nodes holding the data, sorted.
    public var locations: [String]
    /// What `qemu-img info` says about the data (its keys, spaces included) plus `mime-type`, as
    /// Shaken Fist shows them merged into the blob.
    public var info: [String: JSONValue]
    public var created: Date

    public init(
        uuid: UUID = UUID(), size: Int64 = 0, sha512: String? = nil, state: BlobState = .initial,
        modified: Date? = nil, fetchedAt: Date? = nil, lastUsed: Date? = nil, locations: [String] = [],
        info: [String: JSONValue] = [:], created: Date = Date.storableNow()
    ) {
        self.uuid = uuid
        self.size = size
        self.sha512 = sha512
        self.state = state
        self.modified = modified ?? created
        self.fetchedAt = fetchedAt
        self.lastUsed = lastUsed
        self.locations = locations.sorted()
        self.info = info
        self.created = created
    }

    enum CodingKeys: String, CodingKey {
        case uuid, size, sha512, state, modified, locations, info, created
        case fetchedAt = "fetched_at"
        case lastUsed = "last_used"
    }
}

/// Why something holds a blob (Shaken Fist's relationship strings).
public enum BlobRelationship: String, Codable, Sendable, CaseIterable {
    /// An instance's disk is built on the blob.
    case disk
    /// The blob is a version of an artifact.
    case artifactIndex = "artifact_index"
    /// A blob (a qcow2 overlay) needs the blob as its backing file.
    case dependsOn = "depends_on"
    /// A blob is a transcoded form of the blob.
    case transcode
    /// A UEFI instance's firmware variables (NVRAM) started as a copy of the blob.
    case nvramTemplate = "nvram_template"
}

/// One holder's claim on a blob. A blob with no references left is deleted.
public struct BlobReference: Codable, Hashable, Sendable {
    public var blobUUID: UUID
    /// "instance", "artifact" or "blob".
    public var holderType: String
    /// The holder's UUID, lower case.
    public var holderUUID: String
    public var relationship: BlobRelationship

    public init(blobUUID: UUID, holderType: String, holderUUID: String, relationship: BlobRelationship) {
        self.blobUUID = blobUUID
        self.holderType = holderType
        self.holderUUID = holderUUID.lowercased()
        self.relationship = relationship
    }

    /// A reference held by another object identified by a UUID.
    public init(blobUUID: UUID, holderType: String, holderUUID: UUID, relationship: BlobRelationship) {
        self.init(blobUUID: blobUUID, holderType: holderType, holderUUID: holderUUID.uuidString, relationship: relationship)
    }

    enum CodingKeys: String, CodingKey {
        case relationship
        case blobUUID = "blob_uuid"
        case holderType = "holder_type"
        case holderUUID = "holder_uuid"
    }
}

/// What an artifact names (Shaken Fist's `artifact_type`).
public enum ArtifactType: String, Codable, Sendable, CaseIterable {
    case image, snapshot, label, other
}

/// An artifact's lifecycle: the same machine as ``BlobState``.
public typealias ArtifactState = BlobState

/// A named, versioned series of blobs: an image URL, a snapshot, a label.
public struct Artifact: Codable, Hashable, Sendable {
    public var uuid: UUID
    public var type: ArtifactType
    /// The URL for an image artifact, the label's name for a label.
    public var name: String
    public var sourceURL: String?
    public var namespace: String
    public var state: ArtifactState
    /// How many versions are kept; older ones are dropped when a new one is added.
    public var maxVersions: Int
    public var created: Date
    /// Whether every namespace may see and boot it (only a `system` artifact is shared).
    public var shared: Bool

    public init(
        uuid: UUID = UUID(), type: ArtifactType, name: String, sourceURL: String? = nil, namespace: String,
        state: ArtifactState = .initial, maxVersions: Int = 3, created: Date = Date.storableNow(), shared: Bool = false
    ) {
        self.uuid = uuid
        self.type = type
        self.name = name
        self.sourceURL = sourceURL
        self.namespace = namespace
        self.state = state
        self.maxVersions = maxVersions
        self.created = created
        self.shared = shared
    }

    enum CodingKeys: String, CodingKey {
        case uuid, name, namespace, state, created, shared
        case type = "artifact_type"
        case sourceURL = "source_url"
        case maxVersions = "max_versions"
    }
}

/// One version (Shaken Fist's `index`) of an artifact.
public struct ArtifactVersion: Codable, Hashable, Sendable {
    public var artifactUUID: UUID
    /// 1, 2, 3…: increasing and never reused, even after older versions are dropped.
    public var index: Int
    public var blobUUID: UUID
    public var created: Date
    /// The HTTP `Last-Modified` the content came with, verbatim, so a refetch can be skipped.
    public var lastModified: String?
    /// The HTTP `Content-Length` the content came with.
    public var contentLength: Int64?

    public init(
        artifactUUID: UUID, index: Int, blobUUID: UUID, created: Date, lastModified: String? = nil,
        contentLength: Int64? = nil
    ) {
        self.artifactUUID = artifactUUID
        self.index = index
        self.blobUUID = blobUUID
        self.created = created
        self.lastModified = lastModified
        self.contentLength = contentLength
    }

    enum CodingKeys: String, CodingKey {
        case index, created
        case artifactUUID = "artifact_uuid"
        case blobUUID = "blob_uuid"
        case lastModified = "last_modified"
        case contentLength = "content_length"
    }
}

/// An upload in progress: chunks appended to a file on `node` until it becomes a blob.
public struct Upload: Codable, Hashable, Sendable {
    public var uuid: UUID
    /// The node whose disk holds the upload's file; chunks must go there.
    public var node: String
    public var namespace: String
    /// Bytes in the file so far.
    public var received: Int64
    public var created: Date

    public init(uuid: UUID = UUID(), node: String, namespace: String, received: Int64 = 0, created: Date = Date.storableNow()) {
        self.uuid = uuid
        self.node = node
        self.namespace = namespace
        self.received = received
        self.created = created
    }

    enum CodingKeys: String, CodingKey {
        case uuid, node, namespace, received
        // Shaken Fist's upload object calls it created_at.
        case created = "created_at"
    }
}
