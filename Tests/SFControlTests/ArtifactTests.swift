import Foundation
import SFControl
import SFStore
import Testing

/// The artifact, upload and blob use cases against a temporary store and a temporary storage
/// directory: no root, no libvirt, no network.
@Suite struct ArtifactTests {
    /// A control fixture plus a storage directory for blob data and uploads.
    struct Fixture {
        let base: ControlFixture
        let storage: BlobStorage
        var control: Control { base.control }
        var store: SQLStore { base.store }

        init() async throws {
            base = try await ControlFixture()
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("sft-artifacts-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            storage = BlobStorage(path: path, nodeName: "hv1")
        }

        func cleanup() {
            base.cleanup()
            try? FileManager.default.removeItem(atPath: storage.path)
        }

        /// The data file of blob `uuid` on this node.
        func dataPath(_ uuid: UUID) -> String { storage.blobDirectory + "/" + uuid.uuidString.lowercased() }

        /// Uploads `data` in one chunk as a version of artifact `name`.
        func upload(_ data: Data, name: String) async throws -> UploadedArtifact {
            let upload = try await control.createUpload(storage: storage)
            try await control.appendUpload(uuid: upload.uuid, bytes: data, storage: storage)
            return try await control.uploadArtifact(name: name, uploadUUID: upload.uuid, storage: storage)
        }
    }

    /// `count` bytes that differ from file to file (seeded) and within a file.
    static func bytes(_ count: Int, seed: UInt64) -> Data {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        var data = Data(capacity: count)
        for _ in 0..<count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            data.append(UInt8(truncatingIfNeeded: state >> 33))
        }
        return data
    }

    /// What `/usr/bin/sha512sum` says the file's sha512 is.
    static func sha512sum(_ path: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha512sum")
        process.arguments = [path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: output, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
    }

    // MARK: Caching

    @Test func cachingAURLQueuesOneFetchAndFindsTheSameArtifactAgain() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let url = "https://images.example.com/guest.qcow2"
        let artifact = try await fixture.control.cacheArtifact(url: url, requestID: "req-7")
        #expect(artifact.type == .image && artifact.name == url && artifact.sourceURL == url && artifact.namespace == "system")
        #expect(artifact.state == .initial)
        let jobs = try await fixture.store.jobs(states: [], limit: 10)
        #expect(jobs.map(\.kind) == ["artifact.fetch"])
        #expect(jobs.first?.target == .networkNode)
        #expect(jobs.first?.objectKey == "artifact:\(artifact.uuid.uuidString.lowercased())")
        #expect(jobs.first?.payload == .object(["artifact_uuid": .string(artifact.uuid.uuidString.lowercased()), "request_id": .string("req-7")]))

        // Again: the pending fetch is reused. From another namespace: its own artifact and fetch.
        #expect(try await fixture.control.cacheArtifactFetch(url: url).job.id == jobs.first?.id)
        let again = try await fixture.control.cacheArtifactFetch(url: url, namespace: "alice")
        #expect(again.artifact.uuid != artifact.uuid && again.artifact.namespace == "alice" && !again.artifact.shared)
        #expect(try await fixture.store.jobs(states: [], limit: 10).count == 2)
        #expect(try await fixture.control.artifact(url, namespace: "alice").uuid == again.artifact.uuid)

        // A short name expands as a disk base does.
        let short = try await fixture.control.cacheArtifact(url: "debian:12")
        #expect(short.name == "https://images.shakenfist.com/debian:12/latest.qcow2" && short.sourceURL == short.name)
        #expect(try await fixture.store.jobs(states: [.queued], limit: 10).count == 3)
    }

    // MARK: Uploads

    @Test func aChunkedUploadWithATruncateAndResumeMatchesSha512sumAndIsStoredOnce() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let content = Self.bytes(3 * 1_048_576 + 123, seed: 1)
        let file = fixture.storage.path + "/source.img"
        try content.write(to: URL(fileURLWithPath: file))

        let upload = try await fixture.control.createUpload(storage: fixture.storage)
        #expect(upload.node == "hv1" && upload.received == 0)
        let chunk = 1_048_576
        var sent = 0
        // Two good chunks, then one that "failed" half-way: cut back to what was acknowledged and resume.
        for _ in 0..<2 {
            let received = try await fixture.control.appendUpload(uuid: upload.uuid, bytes: content[sent..<sent + chunk], storage: fixture.storage).received
            sent += chunk
            #expect(received == Int64(sent))
        }
        try await fixture.control.appendUpload(uuid: upload.uuid, bytes: Self.bytes(5000, seed: 99), storage: fixture.storage)
        #expect(try await fixture.control.truncateUpload(uuid: upload.uuid, to: Int64(sent), storage: fixture.storage).received == Int64(sent))
        while sent < content.count {
            let end = min(sent + chunk, content.count)
            try await fixture.control.appendUpload(uuid: upload.uuid, bytes: content[sent..<end], storage: fixture.storage)
            sent = end
        }
        let result = try await fixture.control.uploadArtifact(name: "myimage", uploadUUID: upload.uuid, storage: fixture.storage)
        #expect(result.blob.sha512 == (try Self.sha512sum(file)))
        #expect(result.blob.size == Int64(content.count) && result.blob.state == .created && result.blob.locations == ["hv1"])
        #expect(result.artifact.type == .image && result.artifact.name == "myimage" && result.artifact.state == .created)
        #expect(result.artifact.sourceURL == "sf://upload/system/myimage" && result.artifact.maxVersions == 3)
        #expect(result.version.index == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: fixture.dataPath(result.blob.uuid))) == content)
        // The upload is gone, record and file.
        #expect(await controlError { _ = try await fixture.control.upload(uuid: upload.uuid) }?.code == .notFound)
        #expect(!FileManager.default.fileExists(atPath: fixture.storage.uploadDirectory + "/" + upload.uuid.uuidString.lowercased()))

        // The same content again, under another name: the same blob, now held by both artifacts.
        let copy = try await fixture.upload(content, name: "copy")
        #expect(copy.blob.uuid == result.blob.uuid && copy.artifact.uuid != result.artifact.uuid)
        let view = try await fixture.control.blob(uuid: result.blob.uuid)
        let holders = Set([result.artifact.uuid, copy.artifact.uuid].map { $0.uuidString.lowercased() })
        #expect(view.referenceCount == 2 && Set(view.referencesTo.map(\.holderUUID)) == holders)
        #expect(view.referencesTo.allSatisfy { $0.relationship == .artifactIndex } && view.referencesFrom.isEmpty)
        #expect(try await fixture.control.blob(sha512: try Self.sha512sum(file).uppercased())?.uuid == result.blob.uuid)
        // And under the same name: no new version, since it already is the newest.
        let same = try await fixture.upload(content, name: "myimage")
        #expect(same.version.index == 1 && same.blob.uuid == result.blob.uuid)
        #expect(try await fixture.control.artifactVersions("myimage").count == 1)
        #expect(try await fixture.control.blobs().count == 1)
    }

    @Test func uploadingANewVersionBeyondMaxVersionsDropsTheOldestWithItsData() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        var blobs: [UUID] = []
        for seed in 1...4 { blobs.append(try await fixture.upload(Self.bytes(4096, seed: UInt64(seed)), name: "img").blob.uuid) }
        let versions = try await fixture.control.artifactVersions("img")
        #expect(versions.map(\.version.index) == [2, 3, 4] && versions.map(\.blob.blob.uuid) == Array(blobs[1...]))
        #expect(try await fixture.control.blob(uuid: blobs[0]).blob.state == .deleted)
        #expect(!FileManager.default.fileExists(atPath: fixture.dataPath(blobs[0])))
        // Keeping one drops two more at once.
        let artifact = try await fixture.control.setMaxVersions("img", 1, storage: fixture.storage)
        #expect(artifact.maxVersions == 1)
        #expect(try await fixture.control.artifactView("img").versions.map(\.blob.blob.uuid) == [blobs[3]])
        for gone in blobs[1...2] { #expect(!FileManager.default.fileExists(atPath: fixture.dataPath(gone))) }
        #expect(FileManager.default.fileExists(atPath: fixture.dataPath(blobs[3])))
    }

    // MARK: Reading blobs

    @Test func readingABlobByOffsetAndLimitGivesExactlyThoseBytes() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let content = Self.bytes(10_000, seed: 3)
        let blob = try await fixture.upload(content, name: "data").blob
        func read(_ offset: Int64, _ limit: Int64?) async throws -> Data {
            try await fixture.control.readBlobData(uuid: blob.uuid, offset: offset, limit: limit, storage: fixture.storage)
        }
        #expect(try await read(0, nil) == content)
        #expect(try await read(100, 50) == content[100..<150])
        #expect(try await read(9_990, nil) == content[9_990...])
        #expect(try await read(9_990, 1_000) == content[9_990...])
        #expect(try await read(0, 0).isEmpty)
        #expect(try await read(10_000, nil).isEmpty)
        #expect(try await read(10_000, 5).isEmpty)
        #expect(try await read(20_000, nil).isEmpty)
        // Streamed in chunks of at most chunkSize.
        var sizes: [Int] = []
        var streamed = Data()
        for try await chunk in try await fixture.control.readBlob(uuid: blob.uuid, offset: 1, limit: 4_500, storage: fixture.storage, chunkSize: 2_000) {
            sizes.append(chunk.count)
            streamed.append(chunk)
        }
        #expect(sizes == [2_000, 2_000, 500] && streamed == content[1..<4_501])
        #expect(await controlError { _ = try await read(-1, nil) } == .invalid("offset -1 is negative"))
        #expect(await controlError { _ = try await read(0, -5) } == .invalid("limit -5 is negative"))
        #expect(await controlError { _ = try await fixture.control.readBlobData(uuid: UUID(), storage: fixture.storage) }?.code == .notFound)
    }

    // MARK: Deleting

    @Test func deletingAnArtifactDeletesTheBlobsNobodyElseHoldsWithTheirData() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let alone = try await fixture.upload(Self.bytes(8192, seed: 5), name: "alone")
        let shared = try await fixture.upload(Self.bytes(8192, seed: 6), name: "shared")
        _ = try await fixture.upload(Self.bytes(8192, seed: 6), name: "other")
        #expect(FileManager.default.fileExists(atPath: fixture.dataPath(alone.blob.uuid)))

        let deleted = try await fixture.control.deleteArtifact("alone", storage: fixture.storage)
        #expect(deleted.state == .deleted && deleted.uuid == alone.artifact.uuid)
        #expect(try await fixture.control.blob(uuid: alone.blob.uuid).blob.state == .deleted)
        #expect(!FileManager.default.fileExists(atPath: fixture.dataPath(alone.blob.uuid)))
        // Deleting again changes nothing; a deleted artifact is still shown by UUID, not by name.
        #expect(try await fixture.control.deleteArtifact(alone.artifact.uuid.uuidString, storage: fixture.storage).state == .deleted)
        #expect(await controlError { _ = try await fixture.control.artifact("alone") } == .notFound("artifact alone not found"))

        // A blob another artifact still holds stays, data and all.
        try await fixture.control.deleteArtifact("shared", storage: fixture.storage)
        let view = try await fixture.control.blob(uuid: shared.blob.uuid)
        #expect(view.blob.state == .created && view.referenceCount == 1)
        #expect(FileManager.default.fileExists(atPath: fixture.dataPath(shared.blob.uuid)))
        #expect(try await fixture.control.artifacts().map(\.name) == ["other"])
        #expect(try await fixture.control.artifacts(includeDeleted: true).count == 3)
    }

    // MARK: Labels

    @Test func aLabelResolvesToItsNewestVersion() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let first = try await fixture.upload(Self.bytes(4096, seed: 10), name: "build").blob
        let second = try await fixture.upload(Self.bytes(4096, seed: 11), name: "build").blob
        let label = try await fixture.control.setLabel(name: "golden", blobUUID: first.uuid, storage: fixture.storage)
        #expect(label.type == .label && label.name == "golden" && label.sourceURL == "sf://label/system/golden" && label.namespace == "system")
        #expect(try await fixture.control.label("golden").uuid == first.uuid)
        let moved = try await fixture.control.setLabel(name: "golden", blobUUID: second.uuid, storage: fixture.storage)
        #expect(moved.uuid == label.uuid)
        #expect(try await fixture.control.label("golden").uuid == second.uuid)
        #expect(try await fixture.control.artifactVersions(label.uuid.uuidString).map(\.version.index) == [1, 2])
        // label:golden is what a disk names; it parses to the label the agent looks up in system.
        #expect(try ImageReference.parse("label:golden", imageDownloadURL: "https://x") == .label(namespace: nil, name: "golden"))
        // A label of another namespace is another label.
        #expect(await controlError { _ = try await fixture.control.label("golden", namespace: "alice") }?.code == .notFound)
        // The build artifact and the label share the newest blob: two references.
        #expect(try await fixture.control.blob(uuid: second.uuid).referenceCount == 2)
    }

    // MARK: Refusals

    @Test func badInputIsRefusedWithItsCodeAndNamesTheField() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let control = fixture.control
        let storage = fixture.storage
        #expect(await controlError { try await control.cacheArtifact(url: "ftp://example.com/x.qcow2") }?.message.hasPrefix("url 'ftp://example.com/x.qcow2' is not a form sfnode knows") == true)
        #expect(await controlError { try await control.cacheArtifact(url: "sf://blob/\(UUID().uuidString)") }?.message.hasPrefix("url 'sf://blob/") == true)
        #expect(await controlError { try await control.cacheArtifact(url: "") }?.code == .invalidArgument)
        #expect(await controlError { try await control.cacheArtifact(url: "https://x/y", namespace: "a/b") } == .invalid("namespace 'a/b' contains '/' or a control character"))
        #expect(try await fixture.store.jobs(states: [], limit: 10).isEmpty)

        let upload = try await control.createUpload(storage: storage)
        #expect(await controlError { _ = try await control.uploadArtifact(name: "a/b", uploadUUID: upload.uuid, storage: storage) }
            == .invalid("artifact name 'a/b' contains '/' or a control character"))
        #expect(await controlError { _ = try await control.uploadArtifact(name: "", uploadUUID: upload.uuid, storage: storage) } == .invalid("artifact name is empty"))
        #expect(await controlError { _ = try await control.uploadArtifact(name: "x", uploadUUID: upload.uuid, storage: storage) }?.message.hasSuffix("is empty; append its data before making it an artifact") == true)
        #expect(await controlError { _ = try await control.uploadArtifact(name: "x", uploadUUID: UUID(), storage: storage) }?.code == .notFound)
        try await control.appendUpload(uuid: upload.uuid, bytes: Data([1, 2, 3]), storage: storage)
        #expect(await controlError { try await control.truncateUpload(uuid: upload.uuid, to: 4, storage: storage) }?.message.hasPrefix("truncate offset 4 is past the end of upload") == true)
        #expect(await controlError { try await control.truncateUpload(uuid: upload.uuid, to: -1, storage: storage) } == .invalid("truncate offset -1 is negative"))
        #expect(await controlError { try await control.appendUpload(uuid: UUID(), bytes: Data([1]), storage: storage) }?.code == .notFound)
        // An upload on another node takes its chunks there.
        let remote = Upload(node: "hv2", namespace: "system")
        try await fixture.store.createUpload(remote)
        #expect(await controlError { try await control.appendUpload(uuid: remote.uuid, bytes: Data([1]), storage: storage) }?.code == .conflict)

        #expect(await controlError { _ = try await control.artifact("nope") } == .notFound("artifact nope not found"))
        #expect(await controlError { _ = try await control.artifact(UUID().uuidString) }?.code == .notFound)
        #expect(await controlError { try await control.deleteArtifact("nope", storage: storage) }?.code == .notFound)
        let made = try await control.uploadArtifact(name: "x", uploadUUID: upload.uuid, storage: storage)
        #expect(await controlError { try await control.setMaxVersions("x", 0, storage: storage) }?.message.hasPrefix("max_versions 0 is below 1") == true)
        // Another namespace neither sees nor deletes it.
        #expect(await controlError { _ = try await control.artifact(made.artifact.uuid.uuidString, namespace: "alice") }?.code == .notFound)
        #expect(await controlError { try await control.deleteArtifact("x", namespace: "alice", storage: storage) }?.code == .notFound)

        #expect(await controlError { _ = try await control.blob(sha512: "abc") } == .invalid("sha512 'abc' is not 128 hexadecimal digits"))
        #expect(try await control.blob(sha512: String(repeating: "0", count: 128)) == nil)
        #expect(await controlError { _ = try await control.blob(uuid: UUID()) }?.code == .notFound)
        #expect(await controlError { try await control.setLabel(name: "l", blobUUID: UUID(), storage: storage) }?.code == .notFound)
        #expect(await controlError { try await control.setLabel(name: "bad/label", blobUUID: made.blob.uuid, storage: storage) }
            == .invalid("label name 'bad/label' contains '/' or a control character"))
    }
}
