import Foundation
import SFBlobs
import SFStore

/// An image artifact and the `artifact.fetch` job that fills it in.
public struct ArtifactFetch: Sendable, Equatable {
    public let artifact: Artifact
    /// The job fetching the artifact's URL; already finished when read again after it ran.
    public let job: Job

    public init(artifact: Artifact, job: Job) {
        self.artifact = artifact
        self.job = job
    }
}

/// One version of an artifact with its blob.
public struct ArtifactVersionView: Sendable, Equatable, Encodable {
    public let version: ArtifactVersion
    public let blob: BlobView

    public init(version: ArtifactVersion, blob: BlobView) {
        self.version = version
        self.blob = blob
    }

    enum CodingKeys: String, CodingKey { case index }

    /// Shaken Fist's `artifact versions` element: the blob object plus its `index`.
    public func encode(to encoder: any Encoder) throws {
        try blob.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(version.index, forKey: .index)
    }
}

/// An artifact with its versions, oldest first: what `artifact show` and the API's artifact object
/// need.
public struct ArtifactView: Sendable, Equatable, Encodable {
    public let artifact: Artifact
    public let versions: [ArtifactVersionView]

    public init(artifact: Artifact, versions: [ArtifactVersionView]) {
        self.artifact = artifact
        self.versions = versions
    }

    /// The newest version's index; 0 when there is none (Shaken Fist's `index`).
    public var index: Int { versions.last?.version.index ?? 0 }
    /// The newest version's blob, nil when there is none.
    public var blobUUID: UUID? { versions.last?.version.blobUUID }

    enum CodingKeys: String, CodingKey {
        case index, blobs
        case blobUUID = "blob_uuid"
    }

    /// Shaken Fist's artifact object: the artifact's fields, `index`, `blob_uuid` only when there
    /// is a version, and `blobs` keyed by the version number as a decimal string (never null).
    public func encode(to encoder: any Encoder) throws {
        try artifact.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encodeIfPresent(blobUUID?.lowercasedString, forKey: .blobUUID)
        let blobs = Dictionary(uniqueKeysWithValues: versions.map { version in
            (
                String(version.version.index),
                Summary(
                    uuid: version.blob.blob.uuid.lowercasedString, size: version.blob.blob.size,
                    referenceCount: version.blob.referenceCount, instances: version.blob.instances)
            )
        })
        try container.encode(blobs, forKey: .blobs)
    }

    struct Summary: Encodable {
        let uuid: String
        let size: Int64
        let referenceCount: Int
        let instances: [String]

        enum CodingKeys: String, CodingKey {
            case uuid, size, instances
            case referenceCount = "reference_count"
        }
    }
}

/// What an upload became: its artifact, the version it added and the blob holding the bytes.
public struct UploadedArtifact: Sendable, Equatable {
    public let artifact: Artifact
    public let version: ArtifactVersion
    public let blob: Blob
}

extension Control {
    // MARK: Caching a URL

    /// Caches an image URL: finds or creates its image artifact and queues an `artifact.fetch` for
    /// the network node (on a single node that is also the hypervisor), which downloads it into a
    /// blob and adds it as the artifact's newest version. Returns the artifact, still `initial`
    /// and versionless the first time.
    ///
    /// - Parameters:
    ///   - url: an http(s) URL, or a short name such as `debian:12`, which expands to
    ///     `<imageDownloadURL>/debian:12/latest.qcow2`.
    ///   - namespace: whose artifact it is (default: ``ControlSettings/defaultNamespace``). Each
    ///     namespace caching a URL has its own artifact; the agent boots a namespace's instances
    ///     from its own, else from the one `system` shares.
    ///   - shared: share it with every namespace; only a `system` artifact can be shared. An
    ///     artifact already shared stays shared when cached again without it.
    @discardableResult public func cacheArtifact(
        url: String, namespace: String? = nil, shared: Bool = false, requestID: String? = nil
    ) async throws -> Artifact {
        try await cacheArtifactFetch(url: url, namespace: namespace, shared: shared, requestID: requestID).artifact
    }

    /// ``cacheArtifact(url:namespace:shared:requestID:)`` with the job it queued, for a caller that
    /// waits for the fetch. While a fetch of the artifact is still queued or running, that job is
    /// returned instead of queuing another.
    public func cacheArtifactFetch(
        url: String, namespace: String? = nil, shared: Bool = false, requestID: String? = nil
    ) async throws -> ArtifactFetch {
        let reference: ImageReference
        do {
            reference = try ImageReference.parse(url, imageDownloadURL: settings.imageDownloadURL)
        } catch {
            // The parser speaks of a disk's base; here the field is the URL.
            throw error.message.hasPrefix("disk base ") ? ControlError(error.code, "url " + error.message.dropFirst("disk base ".count)) : error
        }
        let expanded: String
        switch reference {
        case .url(let text): expanded = text
        default:
            throw ControlError.invalid("url '\(url)' is not an http(s) URL or a short image name such as debian:12; only URLs are cached")
        }
        let owner = namespace ?? settings.defaultNamespace
        try Names.checkName(owner, "namespace")
        try Self.checkShareable(namespace: owner, shared: shared)
        let records = try blobRecords()
        return try await controlled {
            // The artifact and its job cannot be one transaction with the store's API (artifacts are
            // BlobRecords, jobs NodeStore). The artifact goes first: a crash before the job is
            // queued leaves an artifact without a fetch, and running the same request again finds
            // that artifact (one live image artifact per URL and namespace) and queues the fetch then.
            var artifact = try await Self.findOrCreate(
                Artifact(type: .image, name: expanded, sourceURL: expanded, namespace: owner, shared: shared), in: records)
            if shared && !artifact.shared { artifact = try await records.setArtifactShared(uuid: artifact.uuid, true) }
            let order = try JobOrder(.artifactFetch, .artifact(artifact.uuid), requestID: requestID)
            let live = try await store.jobs(states: [.queued, .running], limit: 10_000)
            if let pending = live.first(where: { $0.kind == order.kind.rawValue && $0.objectKey == order.objectKey }) {
                return ArtifactFetch(artifact: artifact, job: pending)
            }
            guard let job = try await store.enqueue([order.job(for: .networkNode)]).first else {
                throw ControlError(.internal, "the store queued no artifact.fetch job")
            }
            return ArtifactFetch(artifact: artifact, job: job)
        }
    }

    /// The artifact and its fetch job as they are now, for a caller waiting on
    /// ``cacheArtifactFetch(url:namespace:requestID:)``.
    public func artifactFetch(artifactUUID: UUID, jobID: Int64) async throws -> ArtifactFetch {
        let records = try blobRecords()
        return try await controlled {
            ArtifactFetch(artifact: try await records.artifact(uuid: artifactUUID), job: try await store.job(id: jobID))
        }
    }

    // MARK: Reading

    /// The artifacts `namespace` sees (all when nil or `system`), oldest first; deleted ones only
    /// when asked. A namespace sees its own, the shared ones and those of namespaces that trust it.
    public func artifacts(namespace: String? = nil, includeDeleted: Bool = false) async throws -> [Artifact] {
        if let namespace { try Names.checkName(namespace, "namespace") }
        let records = try blobRecords()
        let visibility = try await visibility(for: namespace)
        return try await controlled {
            try await records.artifacts(namespace: nil).filter {
                (includeDeleted || $0.state != .deleted) && visibility?.sees($0) != false
            }
        }
    }

    /// The artifact `reference` names: its UUID (in any state), or its name when that is unique
    /// among the live artifacts `namespace` sees, or unique among its own (a cached URL's artifact
    /// is named by its URL, so a namespace's own cache of a URL wins over the shared one).
    /// Another namespace's private artifact is not found, never forbidden.
    public func artifact(_ reference: String, namespace: String? = nil) async throws -> Artifact {
        guard !reference.isEmpty else { throw ControlError.invalid("artifact reference is empty") }
        let records = try blobRecords()
        return try await controlled {
            if let uuid = UUID(uuidString: reference) {
                let artifact: Artifact
                do {
                    artifact = try await records.artifact(uuid: uuid)
                } catch StoreError.notFound {
                    throw ControlError.notFound("artifact \(reference) not found")
                }
                guard try await visibility(for: namespace)?.sees(artifact) != false else {
                    throw ControlError.notFound("artifact \(reference) not found")
                }
                return artifact
            }
            let named = try await artifacts(namespace: namespace).filter { $0.name == reference }
            guard let artifact = named.first else { throw ControlError.notFound("artifact \(reference) not found") }
            let own = named.filter { $0.namespace == namespace }
            if named.count > 1, own.count == 1, let artifact = own.first { return artifact }
            guard named.count == 1 else {
                throw ControlError.invalid(
                    "\(named.count) artifacts are named '\(reference)'; name one by UUID: \(named.map { $0.uuid.lowercasedString }.joined(separator: ", "))")
            }
            return artifact
        }
    }

    /// The artifact's versions with their blobs, oldest first; each blob shows only the holders
    /// `namespace` sees.
    public func artifactVersions(_ reference: String, namespace: String? = nil) async throws -> [ArtifactVersionView] {
        let artifact = try await self.artifact(reference, namespace: namespace)
        return try await versionViews(of: artifact, namespace: namespace)
    }

    /// The artifact with its versions; each blob shows only the holders `namespace` sees.
    public func artifactView(_ reference: String, namespace: String? = nil) async throws -> ArtifactView {
        let artifact = try await self.artifact(reference, namespace: namespace)
        return ArtifactView(artifact: artifact, versions: try await versionViews(of: artifact, namespace: namespace))
    }

    func versionViews(of artifact: Artifact, namespace: String?) async throws -> [ArtifactVersionView] {
        let records = try blobRecords()
        let versions = try await controlled { try await records.artifactVersions(artifactUUID: artifact.uuid) }
        var views: [ArtifactVersionView] = []
        for version in versions {
            let blob = try await self.blob(uuid: version.blobUUID)
            views.append(ArtifactVersionView(version: version, blob: try await visibleHolders(of: blob, namespace: namespace)))
        }
        return views
    }

    // MARK: Changing

    /// Deletes the artifact: it becomes `deleted` and drops its versions in one transaction; a blob
    /// nothing else references is deleted with it, and its data on this node removed. Deleting a
    /// deleted artifact changes nothing.
    @discardableResult public func deleteArtifact(_ reference: String, namespace: String? = nil, storage: BlobStorage) async throws -> Artifact {
        let artifact = try await self.artifact(reference, namespace: namespace)
        try Self.checkOwned(artifact, by: namespace, reference)
        if artifact.state == .deleted { return artifact }
        let blobs = try blobStore(storage)
        return try await controlled {
            let held = try await blobs.records.references(holderType: "artifact", holderUUID: artifact.uuid.uuidString).map(\.blobUUID)
            let deleted = try await blobs.records.deleteArtifact(uuid: artifact.uuid)
            try await removeDataOfDeletedBlobs(held, blobs)
            return deleted
        }
    }

    /// Deletes one version of the artifact by its index (Shaken Fist's `DELETE …/versions/<v>`): its
    /// blob goes when nothing else holds it, with its data on this node; deleting the only version
    /// deletes the artifact. Indexes are never reused.
    @discardableResult public func deleteArtifactVersion(
        _ reference: String, index text: String, namespace: String? = nil, storage: BlobStorage
    ) async throws -> Artifact {
        let artifact = try await self.artifact(reference, namespace: namespace)
        try Self.checkOwned(artifact, by: namespace, reference)
        guard let index = Int(text) else { throw ControlError.invalid("version index is not an integer") }
        guard artifact.state != .deleted else { throw ControlError.conflict("artifact \(reference) is deleted; it has no versions to delete") }
        let blobs = try blobStore(storage)
        return try await controlled {
            let held = try await blobs.records.references(holderType: "artifact", holderUUID: artifact.uuid.uuidString).map(\.blobUUID)
            let changed: Artifact
            do {
                changed = try await blobs.records.deleteArtifactVersion(uuid: artifact.uuid, index: index)
            } catch StoreError.notFound(type: "artifact index", _) {
                throw ControlError.notFound("artifact index not found")
            }
            try await removeDataOfDeletedBlobs(held, blobs)
            return changed
        }
    }

    /// Sets how many versions the artifact keeps (at least 1), dropping the oldest beyond that at
    /// once, with the data of blobs nothing else references.
    @discardableResult public func setMaxVersions(
        _ reference: String, _ maxVersions: Int, namespace: String? = nil, storage: BlobStorage
    ) async throws -> Artifact {
        guard maxVersions >= 1 else { throw ControlError.invalid("max_versions \(maxVersions) is below 1; an artifact keeps at least one version") }
        let artifact = try await self.artifact(reference, namespace: namespace)
        try Self.checkOwned(artifact, by: namespace, reference)
        guard artifact.state != .deleted else {
            throw ControlError.conflict("artifact \(reference) is deleted; its max_versions cannot change")
        }
        let blobs = try blobStore(storage)
        return try await controlled {
            let held = try await blobs.records.artifactVersions(artifactUUID: artifact.uuid).map(\.blobUUID)
            let changed = try await blobs.records.setArtifactMaxVersions(uuid: artifact.uuid, maxVersions)
            try await removeDataOfDeletedBlobs(held, blobs)
            return changed
        }
    }

    /// Finishes an upload into a blob and records it as the newest version of the image artifact
    /// `name` in `namespace` (default: the upload's), as Shaken Fist's `artifact upload NAME FILE`
    /// does: the artifact (source URL `sf://upload/<namespace>/<name>`, 3 versions kept) is found
    /// or created, so uploading again under the same name adds a version. Content the cluster
    /// already has becomes that blob rather than a copy, and content equal to the newest version
    /// adds no version. The upload is gone afterwards.
    ///
    /// `shared` shares the artifact with every namespace (a `system` artifact only); `sourceURL`
    /// replaces `sf://upload/<namespace>/<name>` as the source a new artifact records.
    public func uploadArtifact(
        name: String, uploadUUID: UUID, namespace: String? = nil, shared: Bool = false, sourceURL: String? = nil, storage: BlobStorage
    ) async throws -> UploadedArtifact {
        try Names.checkName(name, "artifact name")
        if let namespace { try Names.checkName(namespace, "namespace") }
        try Self.checkSourceURL(sourceURL)
        let uploads = try uploadSessions(storage)
        let upload = try await checkLocal(upload: uploadUUID, storage)
        guard upload.received > 0 else {
            throw ControlError.invalid("upload \(uploadUUID.lowercasedString) is empty; append its data before making it an artifact")
        }
        let namespace = namespace ?? upload.namespace
        try Self.checkShareable(namespace: namespace, shared: shared)
        let artifact = try await imageArtifact(name: name, namespace: namespace, shared: shared, sourceURL: sourceURL)
        return try await controlled {
            // A crash between these leaves a blob that no version holds yet (and the upload gone);
            // uploading the same file again finds that blob by its content and adds it then.
            let blob = try await uploads.finish(uuid: uploadUUID)
            return try await addVersion(blob, to: artifact, uploads.blobs)
        }
    }

    /// Records an existing blob as the newest version of the image artifact `name` (Shaken Fist's
    /// `blob_artifact`, which a client uses when the cluster already has a file's sha512).
    /// The caller checks the blob is one it may see (``canSee(blob:namespace:)``), so no
    /// namespace adopts another's blob by its UUID; the operator and the admin may use any.
    public func blobArtifact(
        name: String, blobUUID: UUID, namespace: String? = nil, shared: Bool = false, sourceURL: String? = nil, storage: BlobStorage
    ) async throws -> UploadedArtifact {
        try Names.checkName(name, "artifact name")
        let namespace = namespace ?? settings.defaultNamespace
        try Names.checkName(namespace, "namespace")
        try Self.checkSourceURL(sourceURL)
        try Self.checkShareable(namespace: namespace, shared: shared)
        let blob = try await createdBlob(blobUUID)
        let artifact = try await imageArtifact(name: name, namespace: namespace, shared: shared, sourceURL: sourceURL)
        let blobs = try blobStore(storage)
        return try await controlled { try await addVersion(blob, to: artifact, blobs) }
    }

    /// Points the label `name` in `namespace` at a blob: its `label` artifact (source URL
    /// `sf://label/<namespace>/<name>`) is found or created and the blob added as its newest
    /// version, so `label:NAME` (and `sf://label/NAMESPACE/NAME`) resolves to it from now on. As
    /// with ``blobArtifact(name:blobUUID:namespace:shared:sourceURL:storage:)`` the caller checks it
    /// may see the blob; `shared` shares the label (a `system` one only).
    @discardableResult public func setLabel(
        name: String, blobUUID: UUID, namespace: String? = nil, shared: Bool = false, storage: BlobStorage
    ) async throws -> Artifact {
        try Names.checkName(name, "label name")
        let namespace = namespace ?? settings.defaultNamespace
        try Names.checkName(namespace, "namespace")
        try Self.checkShareable(namespace: namespace, shared: shared)
        let blob = try await createdBlob(blobUUID)
        let records = try blobRecords()
        let blobs = try blobStore(storage)
        return try await controlled {
            var label = try await Self.findOrCreate(
                Artifact(type: .label, name: name, sourceURL: "sf://label/\(namespace)/\(name)", namespace: namespace, shared: shared), in: records)
            if shared && !label.shared { label = try await records.setArtifactShared(uuid: label.uuid, true) }
            return try await addVersion(blob, to: label, blobs).artifact
        }
    }

    /// The blob `label:NAME` resolves to for an instance of `namespace` (default:
    /// ``ControlSettings/defaultNamespace``), as the agent resolves it: the namespace's own label,
    /// else the one `system` shares.
    public func label(_ name: String, namespace: String? = nil) async throws -> Blob {
        try Names.checkName(name, "label name")
        let namespace = namespace ?? settings.defaultNamespace
        try Names.checkName(namespace, "namespace")
        let access = try imageAccess()
        return try await controlled {
            guard let blob = try await access.blob(for: .label(namespace: nil, name: name), namespace: namespace) else {
                throw ControlError(.internal, "label \(name) resolved to no blob")
            }
            return blob
        }
    }

    /// Shares the artifact with every namespace, or stops sharing it (Shaken Fist's
    /// `artifact share` / `unshare`). Only a `system` artifact can be shared.
    @discardableResult public func setShared(_ reference: String, _ shared: Bool, namespace: String? = nil) async throws -> Artifact {
        let artifact = try await self.artifact(reference, namespace: namespace)
        try Self.checkOwned(artifact, by: namespace, reference)
        try Self.checkShareable(namespace: artifact.namespace, shared: shared)
        guard artifact.state != .deleted else { throw ControlError.conflict("artifact \(reference) is deleted; it cannot be shared") }
        let records = try blobRecords()
        return try await controlled { try await records.setArtifactShared(uuid: artifact.uuid, shared) }
    }

    // MARK: Helpers

    /// What `namespace` sees (nil: the admin, who sees everything).
    func visibility(for namespace: String?) async throws -> ImageAccess.Visibility? {
        guard let namespace else { return nil }
        return try await controlled { try await imageAccess().visibility(for: namespace) }
    }

    /// Refuses sharing an artifact of any namespace but `system` (Shaken Fist's rule: what is
    /// shared is the cluster's, not a tenant's).
    static func checkShareable(namespace: String, shared: Bool) throws(ControlError) {
        guard !shared || namespace == Namespace.system else {
            throw .invalid("only artifacts in the system namespace can be shared (this one is in namespace \(namespace))")
        }
    }

    /// A `source_url` a client gives an upload: recorded, never fetched, but bounded like a base.
    static func checkSourceURL(_ sourceURL: String?) throws(ControlError) {
        guard let sourceURL else { return }
        guard !sourceURL.isEmpty, sourceURL.utf8.count <= 2048,
            !sourceURL.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else { throw .invalid("source_url is empty, longer than 2048 bytes or holds a control character") }
    }

    /// Refuses a change to an artifact another namespace owns; as with reads, it is not found.
    static func checkOwned(_ artifact: Artifact, by namespace: String?, _ reference: String) throws(ControlError) {
        guard namespace == nil || artifact.namespace == namespace else { throw .notFound("artifact \(reference) not found") }
    }

    /// The live artifact of the same type, name and namespace, or `artifact` newly recorded; when
    /// another request records it first, that one.
    static func findOrCreate(_ artifact: Artifact, in records: any BlobRecords) async throws -> Artifact {
        if let existing = try await records.artifact(type: artifact.type, name: artifact.name, namespace: artifact.namespace) {
            return existing
        }
        do {
            try await records.createArtifact(artifact)
            return artifact
        } catch StoreError.alreadyExists {
            guard let existing = try await records.artifact(type: artifact.type, name: artifact.name, namespace: artifact.namespace) else {
                throw ControlError.conflict("artifact \(artifact.name) was made and deleted while this request made it; try again")
            }
            return existing
        }
    }

    /// The upload artifact `name`, found or created (and shared when asked).
    func imageArtifact(name: String, namespace: String, shared: Bool, sourceURL: String?) async throws -> Artifact {
        let records = try blobRecords()
        return try await controlled {
            var artifact = try await Self.findOrCreate(
                Artifact(
                    type: .image, name: name, sourceURL: sourceURL ?? "sf://upload/\(namespace)/\(name)", namespace: namespace,
                    shared: shared), in: records)
            if shared && !artifact.shared { artifact = try await records.setArtifactShared(uuid: artifact.uuid, true) }
            guard artifact.state != .error else {
                throw ControlError.conflict(
                    "artifact \(name) (\(artifact.uuid.lowercasedString)) is in error; delete it (sfnode artifact delete \(artifact.uuid.lowercasedString)) and upload again")
            }
            return artifact
        }
    }

    /// The blob, which must be created (have its data).
    func createdBlob(_ uuid: UUID) async throws -> Blob {
        let blob = try await self.blob(uuid: uuid).blob
        guard blob.state == .created else {
            throw ControlError.conflict("blob \(uuid.lowercasedString) is \(blob.state.rawValue), not created")
        }
        return blob
    }

    /// Adds `blob` as the artifact's newest version (nothing when it already is), then removes
    /// the data of blobs that dropping old versions deleted.
    func addVersion(_ blob: Blob, to artifact: Artifact, _ blobs: BlobStore) async throws -> UploadedArtifact {
        let before = try await blobs.records.artifactVersions(artifactUUID: artifact.uuid).map(\.blobUUID)
        let version = try await blobs.records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blob.uuid, lastModified: nil, contentLength: nil)
        try await removeDataOfDeletedBlobs(before, blobs)
        return UploadedArtifact(artifact: try await blobs.records.artifact(uuid: artifact.uuid), version: version, blob: blob)
    }

    /// Removes this node's data of those `candidates` that are now deleted. The store deletes a
    /// blob with its last reference in the same transaction; its data goes afterwards through the
    /// blob store's sweep, which removes the files of every deleted or unknown blob, so data a
    /// crash left behind here goes the next time too.
    func removeDataOfDeletedBlobs(_ candidates: [UUID], _ blobs: BlobStore) async throws {
        var anyDeleted = false
        for uuid in Set(candidates) where blobs.hasData(uuid) {
            if try await blobs.records.blob(uuid: uuid).state == .deleted { anyDeleted = true }
        }
        if anyDeleted { _ = try await blobs.sweep() }
    }
}
