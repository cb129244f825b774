import Foundation
import Logging
import SFBlobs
import SFStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A temporary store plus blob and upload directories, removed however the test ends.
struct BlobFixture {
    let store: SQLStore
    let root: String
    let blobs: BlobStore
    let uploads: UploadSessions

    init() throws {
        store = try SQLStore.temporary()
        root = FileManager.default.temporaryDirectory.appendingPathComponent("sfblobs-\(UUID().uuidString.lowercased())").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let quiet = Logger(label: "test.blobs", factory: { _ in SwiftLogNoOpLogHandler() })
        blobs = BlobStore(records: store, directory: root + "/blobs", nodeName: "sf-1", logger: quiet)
        uploads = UploadSessions(blobs: blobs, records: store, directory: root + "/uploads")
    }

    func cleanup() {
        store.removeFiles()
        try? FileManager.default.removeItem(atPath: root)
    }

    /// The names in the blob directory, sorted.
    func blobFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: blobs.directory)) ?? []).sorted()
    }
}

func withBlobFixture<T>(_ body: (BlobFixture) async throws -> T) async throws -> T {
    let fixture = try BlobFixture()
    defer { fixture.cleanup() }
    return try await body(fixture)
}

/// Helpers the blob tests share, in a namespace of their own beside the other SFBlobs tests.
enum BlobTesting {
    /// `count` reproducible bytes that no two seeds share.
    static func bytes(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    /// What `/usr/bin/sha512sum` says of `bytes`: the reference the streaming hash must match.
    static func sha512sum(_ bytes: [UInt8], in directory: String) throws -> String {
        let path = directory + "/reference-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha512sum")
        process.arguments = [path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return String(text.prefix { $0 != " " })
    }

    /// The BlobError `body` throws, or nil.
    static func blobError(_ body: () async throws -> Void) async -> BlobError? {
        do {
            try await body()
            return nil
        } catch let error as BlobError {
            return error
        } catch {
            return nil
        }
    }

    /// The StoreError `body` throws, or nil.
    static func storeError(_ body: () async throws -> Void) async -> StoreError? {
        do {
            try await body()
            return nil
        } catch let error as StoreError {
            return error
        } catch {
            return nil
        }
    }
}

@Suite("Blob store: ingest, read, dedup, sweep, release")
struct BlobStoreTests {
    @Test("ingested data reads back exactly by offset and limit, with sha512sum's hash")
    func ingestAndRead() async throws {
        try await withBlobFixture { fixture in
            let bytes = BlobTesting.bytes(300_001)
            let ingest = try fixture.blobs.beginIngest()
            // Every append flavour, in uneven pieces.
            try ingest.append(Array(bytes[0..<1]))
            try ingest.append(contentsOf: Data(bytes[1..<70_000]))
            try bytes[70_000..<250_000].withUnsafeBytes { try ingest.append($0) }
            try ingest.append(contentsOf: bytes[250_000...].lazy.map { $0 })
            #expect(ingest.bytesWritten == 300_001)
            let blob = try await ingest.finish(info: ["mime-type": "application/octet-stream"])

            #expect(blob.uuid == ingest.uuid)
            #expect(blob.state == .created)
            #expect(blob.size == 300_001)
            #expect(blob.sha512 == (try BlobTesting.sha512sum(bytes, in: fixture.root)))
            #expect(blob.locations == ["sf-1"])
            #expect(blob.info == ["mime-type": "application/octet-stream"])
            #expect(try await fixture.store.blob(uuid: blob.uuid) == blob)
            #expect(fixture.blobs.hasData(blob.uuid))
            #expect(fixture.blobFiles() == [blob.uuid.uuidString.lowercased()])

            let size = Int64(bytes.count)
            #expect(try fixture.blobs.read(blob.uuid) == Data(bytes))
            #expect(try fixture.blobs.read(blob.uuid, offset: 1000, limit: 5000) == Data(bytes[1000..<6000]))
            #expect(try fixture.blobs.read(blob.uuid, offset: size - 10, limit: 1000) == Data(bytes[(bytes.count - 10)...]))
            #expect(try fixture.blobs.read(blob.uuid, offset: size).isEmpty)
            #expect(try fixture.blobs.read(blob.uuid, offset: size + 1, limit: 10).isEmpty)
            #expect(try fixture.blobs.read(blob.uuid, offset: 5, limit: 0).isEmpty)

            let negative = await BlobTesting.blobError { _ = try fixture.blobs.read(blob.uuid, offset: -1) }
            #expect(negative.map { "\($0)" }?.contains("offset -1") == true)
            let badLimit = await BlobTesting.blobError { _ = try fixture.blobs.read(blob.uuid, offset: 0, limit: -5) }
            #expect(badLimit.map { "\($0)" }?.contains("limit -5") == true)

            var streamed = Data()
            var largest = 0
            let chunks = try fixture.blobs.chunks(blob.uuid, offset: 10, limit: 100_000, chunkSize: 4096)
            #expect(chunks.count == 100_000)
            for try await chunk in chunks {
                largest = max(largest, chunk.count)
                streamed.append(chunk)
            }
            #expect(streamed == Data(bytes[10..<100_010]))
            #expect(largest == 4096)
            var pastEnd = 0
            for try await _ in try fixture.blobs.chunks(blob.uuid, offset: size) { pastEnd += 1 }
            #expect(pastEnd == 0)

            let unknown = UUID()
            let missing = await BlobTesting.blobError { _ = try fixture.blobs.read(unknown) }
            #expect(missing.map { "\($0)" }?.contains(unknown.uuidString.lowercased()) == true)
        }
    }

    @Test("a checksum mismatch leaves no partial file and no blob")
    func checksumMismatch() async throws {
        try await withBlobFixture { fixture in
            let bytes = BlobTesting.bytes(10_000)
            let wrong = try BlobTesting.sha512sum(BlobTesting.bytes(10_000, seed: 2), in: fixture.root)
            let ingest = try fixture.blobs.beginIngest(expectedSHA512: wrong.uppercased())
            try ingest.append(bytes)
            let error = await BlobTesting.blobError { _ = try await ingest.finish() }
            guard case .checksumMismatch(let expected, let actual) = error else {
                Issue.record("expected a checksum mismatch, got \(String(describing: error))")
                return
            }
            #expect(expected == wrong)
            #expect(actual == (try BlobTesting.sha512sum(bytes, in: fixture.root)))
            #expect(fixture.blobFiles().isEmpty)
            #expect(try await fixture.store.blobs().isEmpty)

            // The right hash is accepted.
            let right = try fixture.blobs.beginIngest(expectedSHA512: actual)
            try right.append(bytes)
            #expect(try await right.finish().sha512 == actual)
        }
    }

    @Test("identical content is stored once, and becomes this node's copy when only elsewhere")
    func dedup() async throws {
        try await withBlobFixture { fixture in
            let bytes = BlobTesting.bytes(50_000, seed: 3)
            let first = try fixture.blobs.beginIngest()
            try first.append(bytes)
            let original = try await first.finish()
            let second = try fixture.blobs.beginIngest()
            try second.append(bytes)
            #expect(try await second.finish().uuid == original.uuid)
            #expect(fixture.blobFiles() == [original.uuid.uuidString.lowercased()])
            #expect(try await fixture.store.blobs().count == 1)

            // Another node holds the blob and this one does not: the new copy is adopted.
            unlink(fixture.blobs.path(of: original.uuid))
            try await fixture.store.removeBlobLocation(uuid: original.uuid, node: "sf-1")
            try await fixture.store.addBlobLocation(uuid: original.uuid, node: "sf-2")
            let third = try fixture.blobs.beginIngest()
            try third.append(bytes)
            let adopted = try await third.finish()
            #expect(adopted.uuid == original.uuid)
            #expect(adopted.locations == ["sf-1", "sf-2"])
            #expect(try fixture.blobs.read(original.uuid) == Data(bytes))
            #expect(fixture.blobFiles() == [original.uuid.uuidString.lowercased()])

            // Different content is a different blob.
            let other = try fixture.blobs.beginIngest()
            try other.append(BlobTesting.bytes(50_000, seed: 4))
            #expect(try await other.finish().uuid != original.uuid)
        }
    }

    @Test("a crash's leftover partial is no blob and is swept once stale; deleted and unknown data goes too")
    func sweep() async throws {
        try await withBlobFixture { fixture in
            let kept = try fixture.blobs.beginIngest()
            try kept.append(BlobTesting.bytes(1000, seed: 5))
            let keptBlob = try await kept.finish()
            let doomed = try fixture.blobs.beginIngest()
            try doomed.append(BlobTesting.bytes(1000, seed: 6))
            let doomedBlob = try await doomed.finish()
            try await fixture.store.setBlobState(uuid: doomedBlob.uuid, to: .deleted)

            // What a crash mid-write leaves: a partial nobody will finish, and one still fresh.
            let crashed = UUID()
            let stale = fixture.blobs.path(of: crashed) + ".partial"
            try Data(BlobTesting.bytes(500, seed: 7)).write(to: URL(fileURLWithPath: stale))
            var old = [timeval(tv_sec: time(nil) - 600, tv_usec: 0), timeval(tv_sec: time(nil) - 600, tv_usec: 0)]
            #expect(utimes(stale, &old) == 0)
            let fresh = fixture.blobs.path(of: UUID()) + ".partial"
            try Data(BlobTesting.bytes(500, seed: 8)).write(to: URL(fileURLWithPath: fresh))
            // A data file the records never heard of, and a file that is not sfnode's.
            let unknown = fixture.blobs.path(of: UUID())
            try Data(BlobTesting.bytes(500, seed: 9)).write(to: URL(fileURLWithPath: unknown))
            let foreign = fixture.blobs.directory + "/README"
            try Data("not a blob".utf8).write(to: URL(fileURLWithPath: foreign))

            let lookup = await BlobTesting.storeError { _ = try await fixture.store.blob(uuid: crashed) }
            #expect(lookup == .notFound(type: "blob", id: crashed.uuidString.lowercased()))
            #expect(!fixture.blobs.hasData(crashed))

            let removed = try await fixture.blobs.sweep()
            #expect(Set(removed) == [stale, unknown, fixture.blobs.path(of: doomedBlob.uuid)])
            #expect(fixture.blobs.hasData(keptBlob.uuid))
            #expect(FileManager.default.fileExists(atPath: fresh))
            #expect(FileManager.default.fileExists(atPath: foreign))
            #expect(try await fixture.store.blob(uuid: doomedBlob.uuid).locations.isEmpty)
            #expect(try await fixture.blobs.sweep().isEmpty)
        }
    }

    @Test("releasing the last reference deletes the blob and its data")
    func release() async throws {
        try await withBlobFixture { fixture in
            let ingest = try fixture.blobs.beginIngest()
            try ingest.append(BlobTesting.bytes(2000, seed: 10))
            let blob = try await ingest.finish()
            let first = BlobReference(blobUUID: blob.uuid, holderType: "instance", holderUUID: UUID(), relationship: .disk)
            let second = BlobReference(blobUUID: blob.uuid, holderType: "instance", holderUUID: UUID(), relationship: .disk)
            try await fixture.store.addReference(first)
            try await fixture.store.addReference(second)

            #expect(try await fixture.blobs.release(first) == 1)
            #expect(fixture.blobs.hasData(blob.uuid))
            #expect(try await fixture.blobs.release(second) == 0)
            #expect(!fixture.blobs.hasData(blob.uuid))
            let after = try await fixture.store.blob(uuid: blob.uuid)
            #expect(after.state == .deleted)
            #expect(after.locations.isEmpty)
            #expect(fixture.blobFiles().isEmpty)
        }
    }

    @Test("an abandoned ingest leaves nothing behind")
    func abandon() async throws {
        try await withBlobFixture { fixture in
            let ingest = try fixture.blobs.beginIngest()
            try ingest.append(BlobTesting.bytes(100))
            #expect(FileManager.default.fileExists(atPath: ingest.partialPath))
            ingest.abandon()
            ingest.abandon()
            #expect(fixture.blobFiles().isEmpty)
            #expect(await BlobTesting.blobError { try ingest.append(BlobTesting.bytes(1)) } != nil)
            #expect(try await fixture.store.blobs().isEmpty)
        }
    }
}
