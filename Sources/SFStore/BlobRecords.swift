import Foundation

/// The records of blobs, the references that keep them alive, artifacts and uploads.
///
/// The bytes live on disk (SFBlobs); these are what the cluster knows about them. Each method is
/// atomic: it commits completely or changes nothing. Errors are ``StoreError``; a missing object
/// is ``StoreError/notFound(type:id:)`` naming it ("blob", "artifact", "upload").
///
/// The reference rule: a blob lives while something references it. Whenever a change removes a
/// blob's last reference, the blob becomes `deleted` in the same transaction, and the references
/// that blob itself held (`depends_on`, `transcode`) are removed by the same rule.
public protocol BlobRecords: Sendable {
    // MARK: Blobs

    /// Records a new blob, which must be `initial` or `created`; ``StoreError/alreadyExists(type:id:)``
    /// if its UUID is taken.
    func createBlob(_ blob: Blob) async throws
    /// The blob, deleted ones included.
    func blob(uuid: UUID) async throws -> Blob
    /// The oldest `created` blob whose sha512 is `sha512` (hex, any case), or nil.
    func blob(sha512: String) async throws -> Blob?
    /// Every blob, deleted ones included, oldest first.
    func blobs() async throws -> [Blob]
    /// Moves the blob to `state`, refusing what ``BlobState/canTransition(to:)`` forbids.
    @discardableResult func setBlobState(uuid: UUID, to state: BlobState) async throws -> Blob
    /// Marks the data complete on `node`: `initial → created` with its size, sha512 and info, `node`
    /// added to the locations and `fetched_at` set, in one transaction. A blob already `created`
    /// with the same sha512 only gains the location; any other sha512 is refused.
    @discardableResult func completeBlob(
        uuid: UUID, size: Int64, sha512: String, info: [String: JSONValue], node: String
    ) async throws -> Blob
    /// Replaces the blob's `info`.
    @discardableResult func setBlobInfo(uuid: UUID, info: [String: JSONValue]) async throws -> Blob
    /// Records that `node` holds the blob's data. Idempotent.
    @discardableResult func addBlobLocation(uuid: UUID, node: String) async throws -> Blob
    /// Records that `node` no longer holds the blob's data. Idempotent.
    @discardableResult func removeBlobLocation(uuid: UUID, node: String) async throws -> Blob
    /// Sets `last_used` to now.
    func touchBlob(uuid: UUID) async throws

    // MARK: References

    /// Adds a reference; adding one that exists changes nothing. A deleted blob takes none.
    func addReference(_ reference: BlobReference) async throws
    /// Removes a reference and returns how many the blob has left. When that is 0 and the
    /// reference existed, the blob becomes `deleted` in the same transaction.
    @discardableResult func removeReference(_ reference: BlobReference) async throws -> Int
    /// The references to a blob.
    func references(to blobUUID: UUID) async throws -> [BlobReference]
    /// The references one object holds.
    func references(holderType: String, holderUUID: String) async throws -> [BlobReference]

    // MARK: Artifacts

    /// Records a new artifact in state `initial`. There is at most one live (not deleted) artifact
    /// per type, name and namespace; another is ``StoreError/alreadyExists(type:id:)``.
    func createArtifact(_ artifact: Artifact) async throws
    /// The artifact, deleted ones included.
    func artifact(uuid: UUID) async throws -> Artifact
    /// The live (not deleted) artifact of that type, name and namespace, or nil.
    func artifact(type: ArtifactType, name: String, namespace: String) async throws -> Artifact?
    /// Artifacts, all or of one namespace, deleted ones included, oldest first.
    func artifacts(namespace: String?) async throws -> [Artifact]
    /// Adds `blobUUID` (a `created` blob) as the artifact's newest version, in one transaction: the
    /// next index, an `artifact_index` reference from the artifact to the blob, the artifact moved
    /// to `created`, and the versions beyond `maxVersions` dropped oldest first with the rule above
    /// for their blobs. When the blob already is the newest version, nothing changes and that
    /// version is returned. An artifact in `error` or `deleted` takes no versions.
    @discardableResult func addArtifactVersion(
        artifactUUID: UUID, blobUUID: UUID, lastModified: String?, contentLength: Int64?
    ) async throws -> ArtifactVersion
    /// The artifact's versions, oldest first.
    func artifactVersions(artifactUUID: UUID) async throws -> [ArtifactVersion]
    /// Sets how many versions are kept (at least 1), dropping the excess as
    /// ``addArtifactVersion(artifactUUID:blobUUID:lastModified:contentLength:)`` does.
    @discardableResult func setArtifactMaxVersions(uuid: UUID, _ maxVersions: Int) async throws -> Artifact
    /// Shares the artifact with every namespace, or stops sharing it.
    @discardableResult func setArtifactShared(uuid: UUID, _ shared: Bool) async throws -> Artifact
    /// Moves the artifact to `deleted` and drops all its versions and references, with the rule
    /// above for their blobs. Deleting a deleted artifact changes nothing.
    @discardableResult func deleteArtifact(uuid: UUID) async throws -> Artifact
    /// Removes one version by its index (the blob's reference goes unless another version holds
    /// it); the last one's removal deletes the artifact. notFound ("artifact index") for an index it
    /// does not have; invalidArgument for a deleted artifact.
    @discardableResult func deleteArtifactVersion(uuid: UUID, index: Int) async throws -> Artifact

    // MARK: Uploads

    /// Records a new upload; ``StoreError/alreadyExists(type:id:)`` if its UUID is taken.
    func createUpload(_ upload: Upload) async throws
    /// The upload.
    func upload(uuid: UUID) async throws -> Upload
    /// Every upload, oldest first (to expire abandoned ones).
    func uploads() async throws -> [Upload]
    /// Records how many bytes the upload's file holds.
    @discardableResult func setUploadReceived(uuid: UUID, _ received: Int64) async throws -> Upload
    /// Forgets the upload.
    func deleteUpload(uuid: UUID) async throws
}
