import Foundation

extension SQLStore {
}

// MARK: - Blobs

extension SQLStore: BlobRecords {
    public func createBlob(_ blob: Blob) async throws {
        guard blob.state == .initial || blob.state == .created else {
            throw StoreError.invalidArgument("a new blob starts initial or created, not \(blob.state.rawValue)")
        }
        let sha512 = try blob.sha512.map(Self.normalisedSHA512)
        let insert = try BlobTable.insert(blob, sha512: sha512)
        try await write { db in
            let id = blob.uuid.lowercasedString
            if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM blob WHERE uuid = ?", arguments: [id]) != nil {
                throw StoreError.alreadyExists(type: "blob", id: id)
            }
            try db.execute(insert)
            try self.insertEvent(
                db, Event(objectType: "blob", objectUUID: id, type: .audit, fqdn: self.fqdn, message: "db record created"))
        }
    }

    public func blob(uuid: UUID) async throws -> Blob {
        try await read { db in try Self.fetchBlob(db, uuid) }
    }

    public func blob(sha512: String) async throws -> Blob? {
        let hash = try Self.normalisedSHA512(sha512)
        return try await read { db in
            try db.firstRow(BlobTable.self, BlobTable.select + "WHERE sha512 = ? AND state = 'created' ORDER BY created, uuid LIMIT 1", [hash])
        }
    }

    public func blobs() async throws -> [Blob] {
        try await read { db in try db.allRows(BlobTable.self, BlobTable.select + "ORDER BY created, uuid") }
    }

    @discardableResult public func setBlobState(uuid: UUID, to state: BlobState) async throws -> Blob {
        try await write { db in
            let blob = try Self.fetchBlob(db, uuid)
            guard blob.state.canTransition(to: state) else {
                throw StoreError.invalidTransition(type: "blob", id: uuid.lowercasedString, from: blob.state.rawValue, to: state.rawValue)
            }
            guard blob.state != state else { return blob }
            if state == .deleted {
                // Deleting drops what the blob itself holds, as its last reference going would.
                try self.markBlobDeleted(db, uuid)
            } else {
                try self.updateBlobState(db, uuid, state)
            }
            return try Self.fetchBlob(db, uuid)
        }
    }

    @discardableResult public func completeBlob(
        uuid: UUID, size: Int64, sha512: String, info: [String: JSONValue], node: String
    ) async throws -> Blob {
        guard size >= 0 else { throw StoreError.invalidArgument("blob \(uuid.lowercasedString): size \(size) is negative") }
        let hash = try Self.normalisedSHA512(sha512)
        let infoText = try JSONValue.object(info).jsonText()
        return try await write { db in
            var blob = try Self.fetchBlob(db, uuid)
            switch blob.state {
            case .created:
                guard blob.sha512 == hash else {
                    throw StoreError.invalidArgument(
                        "blob \(uuid.lowercasedString) is already created with sha512 \(blob.sha512 ?? "none"), not \(hash)")
                }
            case .initial:
                let now = Date.storableNow()
                try db.execute(
                    sql: "UPDATE blob SET size = ?, sha512 = ?, info = ?, fetched_at = ? WHERE uuid = ?",
                    arguments: [size, hash, infoText, now.timeIntervalSince1970, uuid.lowercasedString])
                try self.recordMutation(db, type: "blob", uuid: uuid.lowercasedString, attribute: "sha512", value: hash)
                try self.updateBlobState(db, uuid, .created)
            case .deleted, .error:
                throw StoreError.invalidTransition(
                    type: "blob", id: uuid.lowercasedString, from: blob.state.rawValue, to: BlobState.created.rawValue)
            }
            blob = try Self.fetchBlob(db, uuid)
            if !blob.locations.contains(node) { try self.writeLocations(db, &blob, blob.locations + [node]) }
            return blob
        }
    }

    @discardableResult public func setBlobInfo(uuid: UUID, info: [String: JSONValue]) async throws -> Blob {
        let infoText = try JSONValue.object(info).jsonText()
        return try await write { db in
            var blob = try Self.fetchBlob(db, uuid)
            blob.info = info
            try db.execute(sql: "UPDATE blob SET info = ? WHERE uuid = ?", arguments: [infoText, uuid.lowercasedString])
            try self.recordMutation(db, type: "blob", uuid: uuid.lowercasedString, attribute: "info", value: infoText)
            return blob
        }
    }

    @discardableResult public func addBlobLocation(uuid: UUID, node: String) async throws -> Blob {
        try await write { db in
            var blob = try Self.fetchBlob(db, uuid)
            if !blob.locations.contains(node) { try self.writeLocations(db, &blob, blob.locations + [node]) }
            return blob
        }
    }

    @discardableResult public func removeBlobLocation(uuid: UUID, node: String) async throws -> Blob {
        try await write { db in
            var blob = try Self.fetchBlob(db, uuid)
            if blob.locations.contains(node) { try self.writeLocations(db, &blob, blob.locations.filter { $0 != node }) }
            return blob
        }
    }

    public func touchBlob(uuid: UUID) async throws {
        try await write { db in
            _ = try Self.fetchBlob(db, uuid)
            // No mutate event: Shaken Fist exempts last_used, which changes on every use.
            try db.execute(
                sql: "UPDATE blob SET last_used = ? WHERE uuid = ?",
                arguments: [Date.storableNow().timeIntervalSince1970, uuid.lowercasedString])
        }
    }

    // MARK: - References

    public func addReference(_ reference: BlobReference) async throws {
        try await write { db in
            let blob = try Self.fetchBlob(db, reference.blobUUID)
            guard blob.state != .deleted else {
                throw StoreError.invalidArgument(
                    "blob \(blob.uuid.lowercasedString) is deleted and cannot be referenced by "
                        + "\(reference.holderType) \(reference.holderUUID)")
            }
            try Self.insertReference(db, reference)
        }
    }

    @discardableResult public func removeReference(_ reference: BlobReference) async throws -> Int {
        try await write { db in
            _ = try Self.fetchBlob(db, reference.blobUUID)
            return try self.dropReference(db, reference)
        }
    }

    public func references(to blobUUID: UUID) async throws -> [BlobReference] {
        try await read { db in
            _ = try Self.fetchBlob(db, blobUUID)
            return try db.allRows(BlobReferenceTable.self, BlobReferenceTable.select + "WHERE blob_uuid = ? ORDER BY holder_type, holder_uuid, relationship",
                [blobUUID.lowercasedString])
        }
    }

    public func references(holderType: String, holderUUID: String) async throws -> [BlobReference] {
        try await read { db in
            try db.allRows(BlobReferenceTable.self,
                BlobReferenceTable.select + "WHERE holder_type = ? AND holder_uuid = ? ORDER BY blob_uuid, relationship",
                [holderType, holderUUID.lowercased()])
        }
    }

    // MARK: - Artifacts

    public func createArtifact(_ artifact: Artifact) async throws {
        guard artifact.state == .initial else {
            throw StoreError.invalidArgument("a new artifact starts in state initial, not \(artifact.state.rawValue)")
        }
        guard artifact.maxVersions >= 1 else {
            throw StoreError.invalidArgument("artifact \(artifact.name): max_versions \(artifact.maxVersions) is below 1")
        }
        try await write { db in
            let id = artifact.uuid.lowercasedString
            if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM artifact WHERE uuid = ?", arguments: [id]) != nil {
                throw StoreError.alreadyExists(type: "artifact", id: id)
            }
            if let live = try Self.liveArtifact(db, artifact.type, artifact.name, artifact.namespace) {
                throw StoreError.alreadyExists(
                    type: "artifact",
                    id: "\(artifact.type.rawValue) \(artifact.name) in namespace \(artifact.namespace) (\(live.uuid.lowercasedString))")
            }
            try db.execute(ArtifactTable.insert(artifact))
            try self.insertEvent(
                db, Event(objectType: "artifact", objectUUID: id, type: .audit, fqdn: self.fqdn, message: "db record created"))
        }
    }

    public func artifact(uuid: UUID) async throws -> Artifact {
        try await read { db in try Self.fetchArtifact(db, uuid) }
    }

    public func artifact(type: ArtifactType, name: String, namespace: String) async throws -> Artifact? {
        try await read { db in try Self.liveArtifact(db, type, name, namespace) }
    }

    public func artifacts(namespace: String?) async throws -> [Artifact] {
        try await read { db in
            try db.allRows(ArtifactTable.self, ArtifactTable.select + "WHERE ?1 IS NULL OR namespace = ?1 ORDER BY created, uuid", [namespace])
        }
    }

    @discardableResult public func addArtifactVersion(artifactUUID: UUID, blobUUID: UUID, lastModified: String?, contentLength: Int64?)
        async throws -> ArtifactVersion
    {
        try await write { db in
            let artifact = try Self.fetchArtifact(db, artifactUUID)
            guard artifact.state == .initial || artifact.state == .created else {
                throw StoreError.invalidTransition(
                    type: "artifact", id: artifactUUID.lowercasedString, from: artifact.state.rawValue,
                    to: ArtifactState.created.rawValue)
            }
            let blob = try Self.fetchBlob(db, blobUUID)
            guard blob.state == .created else {
                throw StoreError.invalidArgument(
                    "blob \(blobUUID.lowercasedString) is \(blob.state.rawValue), not created, so it cannot be a version of "
                        + "artifact \(artifactUUID.lowercasedString)")
            }
            if let newest = try Self.fetchVersions(db, artifactUUID).last, newest.blobUUID == blobUUID {
                return newest
            }
            let highest = try db.fetchOne(Int.self, sql: "SELECT highest_index FROM artifact WHERE uuid = ?", arguments: [artifactUUID.lowercasedString]) ?? 0
            let version = ArtifactVersion(
                artifactUUID: artifactUUID, index: highest + 1, blobUUID: blobUUID, created: Date.storableNow(),
                lastModified: lastModified, contentLength: contentLength)
            try db.execute(ArtifactVersionTable.insert(version))
            try db.execute(
                sql: "UPDATE artifact SET highest_index = ? WHERE uuid = ?", arguments: [version.index, artifactUUID.lowercasedString])
            try self.recordMutation(
                db, type: "artifact", uuid: artifactUUID.lowercasedString, attribute: "index_\(Self.paddedIndex(version.index))",
                value: blobUUID.lowercasedString)
            try Self.insertReference(db, Self.indexReference(artifactUUID, blobUUID))
            if artifact.state == .initial {
                try db.execute(
                    sql: "UPDATE artifact SET state = ? WHERE uuid = ?",
                    arguments: [ArtifactState.created.rawValue, artifactUUID.lowercasedString])
                try self.recordMutation(
                    db, type: "artifact", uuid: artifactUUID.lowercasedString, attribute: "state", value: ArtifactState.created.rawValue)
            }
            try self.trimVersions(db, artifactUUID, keep: artifact.maxVersions)
            return version
        }
    }

    public func artifactVersions(artifactUUID: UUID) async throws -> [ArtifactVersion] {
        try await read { db in
            _ = try Self.fetchArtifact(db, artifactUUID)
            return try Self.fetchVersions(db, artifactUUID)
        }
    }

    @discardableResult public func setArtifactMaxVersions(uuid: UUID, _ maxVersions: Int) async throws -> Artifact {
        guard maxVersions >= 1 else {
            throw StoreError.invalidArgument("artifact \(uuid.lowercasedString): max_versions \(maxVersions) is below 1")
        }
        return try await write { db in
            var artifact = try Self.fetchArtifact(db, uuid)
            artifact.maxVersions = maxVersions
            try db.execute(sql: "UPDATE artifact SET max_versions = ? WHERE uuid = ?", arguments: [maxVersions, uuid.lowercasedString])
            try self.recordMutation(db, type: "artifact", uuid: uuid.lowercasedString, attribute: "max_versions", value: "\(maxVersions)")
            try self.trimVersions(db, uuid, keep: maxVersions)
            return artifact
        }
    }

    @discardableResult public func setArtifactShared(uuid: UUID, _ shared: Bool) async throws -> Artifact {
        try await write { db in
            var artifact = try Self.fetchArtifact(db, uuid)
            guard artifact.shared != shared else { return artifact }
            artifact.shared = shared
            try db.execute(sql: "UPDATE artifact SET shared = ? WHERE uuid = ?", arguments: [shared, uuid.lowercasedString])
            try self.recordMutation(db, type: "artifact", uuid: uuid.lowercasedString, attribute: "shared", value: "\(shared)")
            return artifact
        }
    }

    @discardableResult public func deleteArtifact(uuid: UUID) async throws -> Artifact {
        try await write { db in try self.markArtifactDeleted(db, uuid) }
    }

    @discardableResult public func deleteArtifactVersion(uuid: UUID, index: Int) async throws -> Artifact {
        try await write { db in
            let artifact = try Self.fetchArtifact(db, uuid)
            guard artifact.state != .deleted else {
                throw StoreError.invalidArgument("artifact \(uuid.lowercasedString) is deleted; it has no versions to delete")
            }
            let versions = try Self.fetchVersions(db, uuid)
            guard let version = versions.first(where: { $0.index == index }) else {
                throw StoreError.notFound(type: "artifact index", id: "\(index)")
            }
            let kept = versions.filter { $0.index != index }
            try self.dropVersions(db, uuid, [version], keeping: kept)
            // Its last version gone, the artifact is gone, as in Shaken Fist.
            return kept.isEmpty ? try self.markArtifactDeleted(db, uuid) : try Self.fetchArtifact(db, uuid)
        }
    }

    /// Deletes the artifact in `db`'s transaction: its versions, the references they hold, its state.
    private func markArtifactDeleted(_ db: any StoreDatabase, _ uuid: UUID) throws -> Artifact {
        var artifact = try Self.fetchArtifact(db, uuid)
        guard artifact.state != .deleted else { return artifact }
        try db.execute(sql: "DELETE FROM artifact_version WHERE artifact_uuid = ?", arguments: [uuid.lowercasedString])
        try self.dropHeldReferences(db, holderType: "artifact", holderUUID: uuid.lowercasedString)
        artifact.state = .deleted
        try db.execute(sql: "UPDATE artifact SET state = ? WHERE uuid = ?", arguments: [ArtifactState.deleted.rawValue, uuid.lowercasedString])
        try self.recordMutation(db, type: "artifact", uuid: uuid.lowercasedString, attribute: "state", value: ArtifactState.deleted.rawValue)
        return artifact
    }

    // MARK: - Uploads

    public func createUpload(_ upload: Upload) async throws {
        try await write { db in
            let id = upload.uuid.lowercasedString
            if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM upload WHERE uuid = ?", arguments: [id]) != nil {
                throw StoreError.alreadyExists(type: "upload", id: id)
            }
            try db.execute(UploadTable.insert(upload))
        }
    }

    public func upload(uuid: UUID) async throws -> Upload {
        try await read { db in try Self.fetchUpload(db, uuid) }
    }

    public func uploads() async throws -> [Upload] {
        try await read { db in try db.allRows(UploadTable.self, UploadTable.select + "ORDER BY created, uuid") }
    }

    @discardableResult public func setUploadReceived(uuid: UUID, _ received: Int64) async throws -> Upload {
        guard received >= 0 else { throw StoreError.invalidArgument("upload \(uuid.lowercasedString): received \(received) is negative") }
        return try await write { db in
            var upload = try Self.fetchUpload(db, uuid)
            upload.received = received
            try db.execute(sql: "UPDATE upload SET received = ? WHERE uuid = ?", arguments: [received, uuid.lowercasedString])
            return upload
        }
    }

    public func deleteUpload(uuid: UUID) async throws {
        try await write { db in
            _ = try Self.fetchUpload(db, uuid)
            try db.execute(sql: "DELETE FROM upload WHERE uuid = ?", arguments: [uuid.lowercasedString])
        }
    }
}
