import Foundation
import SFBlobs
import SFStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

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

    @Test("bytes written to an upload's file behind its appends' back are hashed too: the running hash is only a shortcut")
    func runningHashFallsBack() async throws {
        try await withBlobFixture { fixture in
            let content = BlobTesting.bytes(300_000, seed: 23)
            let sessions = fixture.uploads
            let upload = try await sessions.create(namespace: "ns")
            try await sessions.append(uuid: upload.uuid, bytes: content[0..<100_000])
            // Another writer of the file (a racing request, say) adds bytes the running hash never saw.
            let file = try #require(FileHandle(forWritingAtPath: sessions.path(of: upload.uuid)))
            file.seekToEndOfFile()
            file.write(Data(content[100_000..<200_000]))
            try file.close()
            try await sessions.append(uuid: upload.uuid, bytes: content[200_000...])
            let blob = try await sessions.finish(uuid: upload.uuid)
            #expect(blob.size == 300_000)
            #expect(blob.sha512 == (try BlobTesting.sha512sum(content, in: fixture.root)))
        }
    }

    @Test("an upload's file linked elsewhere (a finish under way) takes no append or truncate; a finish racing appends stores only what it hashed")
    func appendsDuringFinish() async throws {
        try await withBlobFixture { fixture in
            let sessions = fixture.uploads
            let upload = try await sessions.create(namespace: "ns")
            try await sessions.append(uuid: upload.uuid, bytes: BlobTesting.bytes(10_000, seed: 24))
            let linked = fixture.root + "/linked"
            #expect(link(sessions.path(of: upload.uuid), linked) == 0)
            let refused = await BlobTesting.blobError { try await sessions.append(uuid: upload.uuid, bytes: [1, 2, 3]) }
            #expect(refused.map { "\($0)" }?.contains("was finished or removed while this request waited") == true)
            #expect(await BlobTesting.blobError { try await sessions.truncate(uuid: upload.uuid, to: 0) } != nil)
            #expect(unlink(linked) == 0)
            #expect(try await sessions.append(uuid: upload.uuid, bytes: [1, 2, 3]).received == 10_003)
            // A finish that died after its link (the file linked, the upload not yet forgotten) is
            // completed by the next finish, with the bytes the upload holds.
            #expect(link(sessions.path(of: upload.uuid), linked) == 0)
            let resumed = try await sessions.finish(uuid: upload.uuid)
            #expect(resumed.size == 10_003)
            #expect(try fixture.blobs.read(resumed.uuid) == Data(BlobTesting.bytes(10_000, seed: 24) + [1, 2, 3]))
            unlink(linked)

            // A hostile client appends while its upload finishes: the blob's bytes must still be
            // exactly the ones its recorded sha512 names, or another tenant's identical upload
            // would be given different bytes.
            for round in 0..<5 {
                let racing = try await sessions.create(namespace: "ns")
                try await sessions.append(uuid: racing.uuid, bytes: BlobTesting.bytes(2_000_000, seed: UInt64(30 + round)))
                async let appends: Void = {
                    for index in 0..<40 {
                        _ = try? await sessions.append(uuid: racing.uuid, bytes: BlobTesting.bytes(50_000, seed: UInt64(100 + index)))
                    }
                }()
                let blob = try await sessions.finish(uuid: racing.uuid)
                await appends
                let stored = try fixture.blobs.read(blob.uuid)
                #expect(Int64(stored.count) == blob.size)
                #expect(blob.sha512 == (try BlobTesting.sha512sum([UInt8](stored), in: fixture.root)))
            }
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
