import Foundation
import SFBlobs
import SFStore
import Testing

@Suite("Upload sessions: chunks, truncate and resume, finish into a blob")
struct UploadTests {
    @Test("chunks with a truncate back to an offset and a resume give the file's sha512, and the upload is gone")
    func chunkedWithTruncate() async throws {
        try await withBlobFixture { fixture in
            let content = BlobTesting.bytes(200_000, seed: 20)
            let sessions = fixture.uploads
            let upload = try await sessions.create(namespace: "system")
            #expect(upload.node == "sf-1")
            #expect(upload.received == 0)
            #expect(FileManager.default.fileExists(atPath: sessions.path(of: upload.uuid)))

            #expect(try await sessions.append(uuid: upload.uuid, bytes: content[0..<65_536]).received == 65_536)
            #expect(try await sessions.append(uuid: upload.uuid, bytes: Data(content[65_536..<131_072])).received == 131_072)
            // A chunk the client saw fail halfway: it truncates back and sends the rest again.
            try await sessions.append(uuid: upload.uuid, bytes: BlobTesting.bytes(1000, seed: 21))
            #expect(try await sessions.truncate(uuid: upload.uuid, to: 131_072).received == 131_072)
            let past = await BlobTesting.blobError { try await sessions.truncate(uuid: upload.uuid, to: 131_073) }
            #expect(past.map { "\($0)" }?.contains("cannot truncate to 131073") == true)
            #expect(try await sessions.append(uuid: upload.uuid, bytes: content[131_072...]).received == 200_000)
            #expect(try await fixture.store.upload(uuid: upload.uuid).received == 200_000)

            let blob = try await sessions.finish(uuid: upload.uuid)
            #expect(blob.state == .created)
            #expect(blob.size == 200_000)
            #expect(blob.sha512 == (try BlobTesting.sha512sum(content, in: fixture.root)))
            #expect(try fixture.blobs.read(blob.uuid) == Data(content))
            #expect(!FileManager.default.fileExists(atPath: sessions.path(of: upload.uuid)))
            #expect(await BlobTesting.storeError { _ = try await fixture.store.upload(uuid: upload.uuid) }
                == .notFound(type: "upload", id: upload.uuid.uuidString.lowercased()))
            #expect(await BlobTesting.storeError { try await sessions.append(uuid: upload.uuid, bytes: [1]) } != nil)
        }
    }

    @Test("uploading the same file again gives the same blob")
    func reupload() async throws {
        try await withBlobFixture { fixture in
            let content = BlobTesting.bytes(70_000, seed: 22)
            var made: [UUID] = []
            for _ in 0..<2 {
                let upload = try await fixture.uploads.create(namespace: "ns")
                for start in stride(from: 0, to: content.count, by: 30_000) {
                    try await fixture.uploads.append(uuid: upload.uuid, bytes: content[start..<min(start + 30_000, content.count)])
                }
                made.append(try await fixture.uploads.finish(uuid: upload.uuid).uuid)
            }
            #expect(made[0] == made[1])
            #expect(fixture.blobFiles() == [made[0].uuidString.lowercased()])
            #expect(try await fixture.store.uploads().isEmpty)
        }
    }

    @Test("an upload held by another node is refused here; stale and orphaned uploads expire")
    func elsewhereAndExpiry() async throws {
        try await withBlobFixture { fixture in
            let remote = Upload(node: "sf-2", namespace: "ns")
            try await fixture.store.createUpload(remote)
            let refused = await BlobTesting.blobError { try await fixture.uploads.append(uuid: remote.uuid, bytes: [1, 2, 3]) }
            #expect(refused.map { "\($0)" }?.contains("on node sf-2") == true)

            let stale = try await fixture.uploads.create(namespace: "ns")
            let second = try await fixture.uploads.create(namespace: "ns")
            let orphan = fixture.uploads.path(of: UUID())
            try Data([1]).write(to: URL(fileURLWithPath: orphan))
            let removed = try await fixture.uploads.expire(now: stale.created.addingTimeInterval(UploadSessions.lifetime + 1))
            // Both of this node's uploads are past the lifetime at that moment; sf-2's is not ours.
            #expect(Set(removed) == [fixture.uploads.path(of: stale.uuid), fixture.uploads.path(of: second.uuid), orphan])
            #expect(try await fixture.store.uploads().map(\.uuid) == [remote.uuid])
        }
    }
}
