import Foundation

/// Row conversions and the in-transaction steps the blob records share: the reference rule and the
/// trimming of artifact versions.
extension SQLStore {
    // MARK: - The reference rule

    /// Removes `reference` and returns how many references its blob has left; when the reference
    /// existed and none are left, the blob is deleted.
    func dropReference(_ db: any StoreDatabase, _ reference: BlobReference) throws -> Int {
        try db.execute(
            sql: "DELETE FROM blob_reference WHERE blob_uuid = ? AND holder_type = ? AND holder_uuid = ? AND relationship = ?",
            arguments: [
                reference.blobUUID.lowercasedString, reference.holderType, reference.holderUUID.lowercased(),
                reference.relationship.rawValue,
            ])
        let removed = db.changesCount > 0
        let remaining = try db.fetchOne(Int.self, sql: "SELECT count(*) FROM blob_reference WHERE blob_uuid = ?", arguments: [reference.blobUUID.lowercasedString]) ?? 0
        // Only a removal deletes: a blob just made and not yet referenced must survive a stray
        // release of a reference it never had.
        if removed && remaining == 0 { try markBlobDeleted(db, reference.blobUUID) }
        return remaining
    }

    /// Drops every reference `holderUUID` holds, with the rule for each blob.
    func dropHeldReferences(_ db: any StoreDatabase, holderType: String, holderUUID: String) throws {
        let held = try db.allRows(BlobReferenceTable.self, BlobReferenceTable.select + "WHERE holder_type = ? AND holder_uuid = ?", [holderType, holderUUID])
        for reference in held { _ = try dropReference(db, reference) }
    }

    /// Moves the blob to `deleted` and drops what it held itself (`depends_on`, `transcode`), as
    /// Shaken Fist decrements a deleted blob's dependencies. The state is written first, so a
    /// reference cycle ends when it comes back to a blob already deleted.
    func markBlobDeleted(_ db: any StoreDatabase, _ uuid: UUID) throws {
        let blob = try Self.fetchBlob(db, uuid)
        guard blob.state != .deleted else { return }
        try updateBlobState(db, uuid, .deleted)
        try dropHeldReferences(db, holderType: "blob", holderUUID: uuid.lowercasedString)
    }

    func updateBlobState(_ db: any StoreDatabase, _ uuid: UUID, _ state: BlobState) throws {
        try db.execute(sql: "UPDATE blob SET state = ? WHERE uuid = ?", arguments: [state.rawValue, uuid.lowercasedString])
        try recordMutation(db, type: "blob", uuid: uuid.lowercasedString, attribute: "state", value: state.rawValue)
    }

    func writeLocations(_ db: any StoreDatabase, _ blob: inout Blob, _ locations: [String]) throws {
        blob.locations = Set(locations).sorted()
        let text = try Self.jsonText(blob.locations)
        try db.execute(sql: "UPDATE blob SET locations = ? WHERE uuid = ?", arguments: [text, blob.uuid.lowercasedString])
        try recordMutation(db, type: "blob", uuid: blob.uuid.lowercasedString, attribute: "locations", value: text)
    }

    static func insertReference(_ db: any StoreDatabase, _ reference: BlobReference) throws {
        try db.execute(BlobReferenceTable.insert(reference, created: Date.storableNow()))
    }

    // MARK: - Artifact versions

    static func indexReference(_ artifactUUID: UUID, _ blobUUID: UUID) -> BlobReference {
        BlobReference(blobUUID: blobUUID, holderType: "artifact", holderUUID: artifactUUID, relationship: .artifactIndex)
    }

    /// Shaken Fist's `index_%012d` spelling, used in the artifact's mutate events.
    static func paddedIndex(_ index: Int) -> String {
        let digits = String(index)
        return String(repeating: "0", count: max(0, 12 - digits.count)) + digits
    }

    /// Drops the oldest versions beyond `keep`. One reference covers every version of the artifact
    /// on the same blob, so it goes only with the last of them.
    func trimVersions(_ db: any StoreDatabase, _ artifactUUID: UUID, keep: Int) throws {
        let versions = try Self.fetchVersions(db, artifactUUID)
        guard versions.count > keep else { return }
        try dropVersions(db, artifactUUID, Array(versions.prefix(versions.count - keep)), keeping: Array(versions.suffix(keep)))
    }

    /// Removes `dropped` of the artifact's versions, and the references of their blobs that no
    /// version `keeping` still holds.
    func dropVersions(_ db: any StoreDatabase, _ artifactUUID: UUID, _ dropped: [ArtifactVersion], keeping kept: [ArtifactVersion]) throws {
        for version in dropped {
            try db.execute(
                sql: "DELETE FROM artifact_version WHERE artifact_uuid = ? AND \"index\" = ?",
                arguments: [artifactUUID.lowercasedString, version.index])
            try recordMutation(
                db, type: "artifact", uuid: artifactUUID.lowercasedString, attribute: "index_\(Self.paddedIndex(version.index))",
                value: nil)
        }
        for blobUUID in Set(dropped.map(\.blobUUID)).subtracting(kept.map(\.blobUUID)) {
            _ = try dropReference(db, Self.indexReference(artifactUUID, blobUUID))
        }
    }

    static func fetchVersions(_ db: any StoreDatabase, _ artifactUUID: UUID) throws -> [ArtifactVersion] {
        try db.allRows(ArtifactVersionTable.self, ArtifactVersionTable.selectOfArtifact, [artifactUUID.lowercasedString])
    }

    // MARK: - Rows

    /// Lower-case hex of exactly 128 digits, or ``StoreError/invalidArgument(_:)``.
    static func normalisedSHA512(_ text: String) throws -> String {
        let hash = text.lowercased()
        guard hash.utf8.count == 128, hash.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw StoreError.invalidArgument("'\(text)' is not a sha512 (128 hex digits)")
        }
        return hash
    }

    static func fetchBlob(_ db: any StoreDatabase, _ uuid: UUID) throws -> Blob {
        guard let blob = try db.firstRow(BlobTable.self, BlobTable.selectByUUID, [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "blob", id: uuid.lowercasedString) }
        return blob
    }

    static func fetchArtifact(_ db: any StoreDatabase, _ uuid: UUID) throws -> Artifact {
        guard let artifact = try db.firstRow(ArtifactTable.self, ArtifactTable.selectByUUID, [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "artifact", id: uuid.lowercasedString) }
        return artifact
    }

    static func liveArtifact(_ db: any StoreDatabase, _ type: ArtifactType, _ name: String, _ namespace: String) throws -> Artifact? {
        try db.firstRow(ArtifactTable.self, ArtifactTable.select + "WHERE type = ? AND name = ? AND namespace = ? AND state != 'deleted'",
            [type.rawValue, name, namespace])
    }

    static func fetchUpload(_ db: any StoreDatabase, _ uuid: UUID) throws -> Upload {
        guard let upload = try db.firstRow(UploadTable.self, UploadTable.selectByUUID, [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "upload", id: uuid.lowercasedString) }
        return upload
    }
}
