import Foundation
import SFStore
import Testing

/// The backend's blob records; every backend must keep them.
private func blobRecords(_ store: any NodeStore) throws -> any BlobRecords {
    try #require(store as? any BlobRecords, "the backend keeps no blob records")
}

/// A sha512-shaped hex string distinct per `seed`.
private func hash(_ seed: UInt8) -> String {
    let digits = String(seed, radix: 16)
    return String(repeating: (digits.count == 1 ? "0" : "") + digits, count: 64)
}

/// A created blob with its own content hash, as an ingest leaves it.
private func createdBlob(_ records: any BlobRecords, seed: UInt8, node: String = "sf-1") async throws -> UUID {
    let uuid = UUID()
    try await records.createBlob(Blob(uuid: uuid))
    try await records.completeBlob(uuid: uuid, size: Int64(seed) * 100, sha512: hash(seed), info: [:], node: node)
    return uuid
}

@Suite("Store contract: blobs, references, artifacts, uploads")
struct BlobContractTests {
    @Test("a blob goes initial → created with its data's size, hash and node, and refuses forbidden moves", arguments: Backend.all)
    func blobLifecycle(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let records = try blobRecords(store)
            let uuid = UUID()
            let id = uuid.uuidString.lowercased()
            let made = Blob(uuid: uuid, created: Date(timeIntervalSince1970: 1_700_000_000.5))
            try await records.createBlob(made)
            #expect(try await records.blob(uuid: uuid) == made)
            #expect(await storeError { try await records.createBlob(made) } == .alreadyExists(type: "blob", id: id))
            #expect(await storeError { try await records.createBlob(Blob(state: .deleted)) }.map { "\($0)" }?.contains("not deleted") == true)
            #expect(try await records.blob(sha512: hash(1)) == nil)

            let info: [String: JSONValue] = ["file format": "qcow2", "virtual size": 1_073_741_824, "mime-type": "application/octet-stream"]
            let complete = try await records.completeBlob(uuid: uuid, size: 4096, sha512: hash(1).uppercased(), info: info, node: "sf-2")
            #expect(complete.state == .created)
            #expect(complete.size == 4096)
            #expect(complete.sha512 == hash(1))
            #expect(complete.info == info)
            #expect(complete.locations == ["sf-2"])
            #expect(complete.fetchedAt != nil)
            #expect(try await records.blob(uuid: uuid) == complete)
            // Again with the same data (another node finished a copy) only adds the location.
            let again = try await records.completeBlob(uuid: uuid, size: 4096, sha512: hash(1), info: [:], node: "sf-1")
            #expect(again.locations == ["sf-1", "sf-2"])
            #expect(again.info == info)
            let other = await storeError { try await records.completeBlob(uuid: uuid, size: 1, sha512: hash(2), info: [:], node: "sf-1") }
            #expect(other.map { "\($0)" }?.contains("already created with sha512") == true)
            #expect(await storeError { try await records.completeBlob(uuid: uuid, size: 1, sha512: "abc", info: [:], node: "sf-1") }
                .map { "\($0)" }?.contains("not a sha512") == true)

            // Lookup by hash, in any case, from another handle too.
            #expect(try await records.blob(sha512: hash(1))?.uuid == uuid)
            #expect(try await blobRecords(try opened.reopen()).blob(sha512: hash(1).uppercased())?.uuid == uuid)

            #expect(try await records.removeBlobLocation(uuid: uuid, node: "sf-2").locations == ["sf-1"])
            #expect(try await records.addBlobLocation(uuid: uuid, node: "sf-1").locations == ["sf-1"])
            #expect(try await records.setBlobInfo(uuid: uuid, info: ["mime-type": "text/plain"]).info == ["mime-type": "text/plain"])
            try await records.touchBlob(uuid: uuid)
            #expect(try await records.blob(uuid: uuid).lastUsed != nil)

            #expect(await storeError { try await records.setBlobState(uuid: uuid, to: .initial) }
                == .invalidTransition(type: "blob", id: id, from: "created", to: "initial"))
            #expect(try await records.setBlobState(uuid: uuid, to: .error).state == .error)
            #expect(try await records.blob(sha512: hash(1)) == nil, "only created blobs are found by hash")
            #expect(try await records.setBlobState(uuid: uuid, to: .deleted).state == .deleted)
            #expect(await storeError { try await records.setBlobState(uuid: uuid, to: .created) }
                == .invalidTransition(type: "blob", id: id, from: "deleted", to: "created"))
            #expect(await storeError { try await records.completeBlob(uuid: uuid, size: 1, sha512: hash(1), info: [:], node: "sf-1") }
                == .invalidTransition(type: "blob", id: id, from: "deleted", to: "created"))
            #expect(try await records.blobs().map(\.uuid) == [uuid])

            let events = try await store.events(objectType: "blob", objectUUID: id, limit: 100)
            #expect(events.contains { $0.message == "db record created" })
            #expect(events.contains { $0.extra?["attribute"] == "state" && $0.extra?["value"] == "deleted" })
        }
    }

    @Test("the oldest created blob with a hash is the one found", arguments: Backend.all)
    func oldestByHash(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try blobRecords(store)
            let older = UUID()
            let newer = UUID()
            try await records.createBlob(Blob(uuid: newer, created: Date(timeIntervalSince1970: 1_700_000_100)))
            try await records.createBlob(Blob(uuid: older, created: Date(timeIntervalSince1970: 1_700_000_000)))
            for uuid in [newer, older] {
                try await records.completeBlob(uuid: uuid, size: 1, sha512: hash(7), info: [:], node: "sf-1")
            }
            #expect(try await records.blob(sha512: hash(7))?.uuid == older)
            #expect(try await records.blobs().map(\.uuid) == [older, newer])
        }
    }

    @Test("references count, and the last one going deletes the blob and what it depends on", arguments: Backend.all)
    func referenceCounting(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try blobRecords(store)
            let base = try await createdBlob(records, seed: 1)
            let overlay = try await createdBlob(records, seed: 2)
            let instance = UUID()
            let disk = BlobReference(blobUUID: overlay, holderType: "instance", holderUUID: instance, relationship: .disk)
            let index = BlobReference(blobUUID: overlay, holderType: "artifact", holderUUID: UUID(), relationship: .artifactIndex)
            let dependency = BlobReference(blobUUID: base, holderType: "blob", holderUUID: overlay, relationship: .dependsOn)
            try await records.addReference(disk)
            try await records.addReference(disk)
            try await records.addReference(index)
            try await records.addReference(dependency)
            #expect(try await records.references(to: overlay).count == 2, "adding a reference twice counts once")
            #expect(try await records.references(holderType: "instance", holderUUID: instance.uuidString) == [disk])
            #expect(disk.holderUUID == instance.uuidString.lowercased())

            // Releasing a reference the blob never had deletes nothing.
            let stray = BlobReference(blobUUID: overlay, holderType: "instance", holderUUID: UUID(), relationship: .disk)
            #expect(try await records.removeReference(stray) == 2)

            #expect(try await records.removeReference(disk) == 1)
            #expect(try await records.blob(uuid: overlay).state == .created)
            #expect(try await records.removeReference(index) == 0)
            #expect(try await records.blob(uuid: overlay).state == .deleted)
            // The deleted overlay no longer holds its base, whose last reference that was.
            #expect(try await records.references(to: base).isEmpty)
            #expect(try await records.blob(uuid: base).state == .deleted)
            #expect(try await records.removeReference(index) == 0)

            let refused = await storeError { try await records.addReference(disk) }
            #expect(refused.map { "\($0)" }?.contains("is deleted") == true)

            // A blob nobody has referenced yet stays until something does and lets go.
            let fresh = try await createdBlob(records, seed: 3)
            #expect(try await records.removeReference(BlobReference(
                blobUUID: fresh, holderType: "instance", holderUUID: instance, relationship: .disk)) == 0)
            #expect(try await records.blob(uuid: fresh).state == .created)
        }
    }

    @Test("artifact versions are numbered, trimmed to max_versions, and their blobs deleted when unreferenced", arguments: Backend.all)
    func artifactVersions(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try blobRecords(store)
            let url = "https://images.example.com/debian-12.qcow2"
            let artifact = Artifact(type: .image, name: url, sourceURL: url, namespace: "system", maxVersions: 2)
            try await records.createArtifact(artifact)
            #expect(try await records.artifact(uuid: artifact.uuid) == artifact)
            #expect(try await records.artifact(type: .image, name: url, namespace: "system") == artifact)
            #expect(try await records.artifact(type: .image, name: url, namespace: "other") == nil)
            #expect(try await records.artifact(type: .label, name: url, namespace: "system") == nil)
            let twin = await storeError { try await records.createArtifact(Artifact(type: .image, name: url, namespace: "system")) }
            #expect(twin.map { "\($0)" }?.contains("already exists") == true)
            #expect(try await records.artifactVersions(artifactUUID: artifact.uuid).isEmpty)

            let blobs = [try await createdBlob(records, seed: 1), try await createdBlob(records, seed: 2),
                         try await createdBlob(records, seed: 3), try await createdBlob(records, seed: 4)]
            let first = try await records.addArtifactVersion(
                artifactUUID: artifact.uuid, blobUUID: blobs[0], lastModified: "Tue, 14 Nov 2023 10:00:00 GMT", contentLength: 100)
            #expect(first.index == 1)
            #expect(first.lastModified == "Tue, 14 Nov 2023 10:00:00 GMT")
            #expect(first.contentLength == 100)
            #expect(try await records.artifact(uuid: artifact.uuid).state == .created)
            #expect(try await records.references(to: blobs[0])
                == [BlobReference(blobUUID: blobs[0], holderType: "artifact", holderUUID: artifact.uuid, relationship: .artifactIndex)])
            // The same blob again as the newest version changes nothing.
            #expect(try await records.addArtifactVersion(
                artifactUUID: artifact.uuid, blobUUID: blobs[0], lastModified: nil, contentLength: nil) == first)
            #expect(try await records.artifactVersions(artifactUUID: artifact.uuid) == [first])

            // blobs[1] is also an instance's disk, so dropping its version must not delete it.
            try await records.addReference(BlobReference(blobUUID: blobs[1], holderType: "instance", holderUUID: UUID(), relationship: .disk))
            try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blobs[1], lastModified: nil, contentLength: nil)
            try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blobs[2], lastModified: nil, contentLength: nil)
            #expect(try await records.artifactVersions(artifactUUID: artifact.uuid).map(\.index) == [2, 3])
            #expect(try await records.blob(uuid: blobs[0]).state == .deleted)
            try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blobs[3], lastModified: nil, contentLength: nil)
            #expect(try await records.artifactVersions(artifactUUID: artifact.uuid).map(\.blobUUID) == [blobs[2], blobs[3]])
            #expect(try await records.blob(uuid: blobs[1]).state == .created)
            #expect(try await records.references(to: blobs[1]).map(\.holderType) == ["instance"])

            // A deleted blob cannot become a version; an initial one is not ready to.
            let gone = await storeError {
                _ = try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blobs[0], lastModified: nil, contentLength: nil)
            }
            #expect(gone.map { "\($0)" }?.contains("is deleted, not created") == true)

            // Fewer versions kept drops the oldest; indexes are never reused.
            #expect(try await records.setArtifactMaxVersions(uuid: artifact.uuid, 1).maxVersions == 1)
            #expect(try await records.artifactVersions(artifactUUID: artifact.uuid).map(\.index) == [4])
            #expect(try await records.blob(uuid: blobs[2]).state == .deleted)
            #expect(await storeError { try await records.setArtifactMaxVersions(uuid: artifact.uuid, 0) }
                .map { "\($0)" }?.contains("below 1") == true)
            let fifth = try await records.addArtifactVersion(
                artifactUUID: artifact.uuid, blobUUID: try await createdBlob(records, seed: 5), lastModified: nil, contentLength: nil)
            #expect(fifth.index == 5)
            #expect(try await records.blob(uuid: blobs[3]).state == .deleted)
        }
    }

    @Test("a blob in two versions of one artifact lives while either version does", arguments: Backend.all)
    func sameBlobTwice(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try blobRecords(store)
            let artifact = Artifact(type: .label, name: "gold", namespace: "ns", maxVersions: 3)
            try await records.createArtifact(artifact)
            let a = try await createdBlob(records, seed: 1)
            let b = try await createdBlob(records, seed: 2)
            for blob in [a, b, a, b] {
                try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blob, lastModified: nil, contentLength: nil)
            }
            #expect(try await records.artifactVersions(artifactUUID: artifact.uuid).map(\.index) == [2, 3, 4])
            #expect(try await records.blob(uuid: a).state == .created)
            #expect(try await records.references(to: a).count == 1)
        }
    }

    @Test("deleting an artifact releases its blobs and frees its name", arguments: Backend.all)
    func deleteArtifact(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try blobRecords(store)
            let artifact = Artifact(type: .snapshot, name: "snap", namespace: "ns")
            try await records.createArtifact(artifact)
            let kept = try await createdBlob(records, seed: 1)
            let dropped = try await createdBlob(records, seed: 2)
            try await records.addReference(BlobReference(blobUUID: kept, holderType: "instance", holderUUID: UUID(), relationship: .disk))
            for blob in [kept, dropped] {
                try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blob, lastModified: nil, contentLength: nil)
            }
            #expect(try await records.deleteArtifact(uuid: artifact.uuid).state == .deleted)
            #expect(try await records.deleteArtifact(uuid: artifact.uuid).state == .deleted)
            #expect(try await records.artifactVersions(artifactUUID: artifact.uuid).isEmpty)
            #expect(try await records.references(holderType: "artifact", holderUUID: artifact.uuid.uuidString).isEmpty)
            #expect(try await records.blob(uuid: dropped).state == .deleted)
            #expect(try await records.blob(uuid: kept).state == .created)
            #expect(try await records.artifact(type: .snapshot, name: "snap", namespace: "ns") == nil)
            let id = artifact.uuid.uuidString.lowercased()
            #expect(await storeError {
                _ = try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: kept, lastModified: nil, contentLength: nil)
            } == .invalidTransition(type: "artifact", id: id, from: "deleted", to: "created"))

            let again = Artifact(type: .snapshot, name: "snap", namespace: "ns")
            try await records.createArtifact(again)
            #expect(try await records.artifact(type: .snapshot, name: "snap", namespace: "ns")?.uuid == again.uuid)
            #expect(try await records.artifacts(namespace: "ns").map(\.uuid) == [artifact.uuid, again.uuid])
            #expect(try await records.artifacts(namespace: "other").isEmpty)
            #expect(try await store.events(objectType: "artifact", objectUUID: id, limit: 100)
                .contains { $0.extra?["attribute"] == "state" && $0.extra?["value"] == "deleted" })
        }
    }

    @Test("uploads round-trip and are forgotten", arguments: Backend.all)
    func uploads(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try blobRecords(store)
            let upload = Upload(node: "sf-1", namespace: "system", created: Date(timeIntervalSince1970: 1_700_000_000))
            try await records.createUpload(upload)
            #expect(try await records.upload(uuid: upload.uuid) == upload)
            let id = upload.uuid.uuidString.lowercased()
            #expect(await storeError { try await records.createUpload(upload) } == .alreadyExists(type: "upload", id: id))
            #expect(try await records.setUploadReceived(uuid: upload.uuid, 8192).received == 8192)
            #expect(try await records.uploads().map(\.received) == [8192])
            try await records.deleteUpload(uuid: upload.uuid)
            #expect(await storeError { _ = try await records.upload(uuid: upload.uuid) } == .notFound(type: "upload", id: id))
            #expect(await storeError { try await records.deleteUpload(uuid: upload.uuid) } == .notFound(type: "upload", id: id))
        }
    }

    @Test("a missing blob, artifact or upload is named in the error", arguments: Backend.all)
    func notFound(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try blobRecords(store)
            let uuid = UUID()
            let id = uuid.uuidString.lowercased()
            let blob = await storeError { _ = try await records.blob(uuid: uuid) }
            #expect(blob == .notFound(type: "blob", id: id))
            #expect(blob?.description == "blob \(id) not found")
            #expect(await storeError { _ = try await records.references(to: uuid) } == .notFound(type: "blob", id: id))
            #expect(await storeError {
                try await records.addReference(BlobReference(blobUUID: uuid, holderType: "instance", holderUUID: UUID(), relationship: .disk))
            } == .notFound(type: "blob", id: id))
            #expect(await storeError { _ = try await records.artifact(uuid: uuid) }?.description == "artifact \(id) not found")
            #expect(await storeError { _ = try await records.artifactVersions(artifactUUID: uuid) } == .notFound(type: "artifact", id: id))
            #expect(await storeError { _ = try await records.upload(uuid: uuid) }?.description == "upload \(id) not found")
            let artifact = Artifact(type: .image, name: "x", namespace: "ns")
            try await records.createArtifact(artifact)
            #expect(await storeError {
                _ = try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: uuid, lastModified: nil, contentLength: nil)
            } == .notFound(type: "blob", id: id))
        }
    }
}
