import Foundation
import SFControl
import SFStore
import Testing

/// Images belong to namespaces: which bases an instance may boot, which URL caches and blobs a
/// namespace sees, and URLs redacted for others. A temporary store and storage directory; no root.
@Suite struct ImageNamespaceTests {
    typealias Fixture = ArtifactTests.Fixture

    /// Uploads `data` in one chunk as a version of artifact `name` in `namespace`.
    static func upload(_ fixture: Fixture, _ data: Data, name: String, namespace: String, shared: Bool = false) async throws -> UploadedArtifact {
        let upload = try await fixture.control.createUpload(namespace: namespace, storage: fixture.storage)
        try await fixture.control.appendUpload(uuid: upload.uuid, bytes: data, storage: fixture.storage)
        return try await fixture.control.uploadArtifact(name: name, uploadUUID: upload.uuid, shared: shared, storage: fixture.storage)
    }

    /// A small instance of `namespace` booting from `base`, with no network.
    static func request(_ namespace: String, base: String) -> InstanceRequest {
        var request = InstanceRequest(name: "vm", cpus: 1, memoryMiB: 512, disks: [DiskSpec(base: base, size: 8)], networks: [])
        request.namespace = namespace
        return request
    }

    @Test func anotherNamespacesUploadIsNotFoundAtCreateUnlessShared() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        _ = try await Self.upload(fixture, ArtifactTests.bytes(4096, seed: 1), name: "db-image", namespace: "victim")
        let stolen = await controlError { _ = try await fixture.control.createInstance(Self.request("tenant", base: "sf://upload/victim/db-image")) }
        #expect(stolen == .notFound("artifact not found"), "a foreign private upload looks exactly like a missing one")
        let missing = await controlError { _ = try await fixture.control.createInstance(Self.request("tenant", base: "sf://upload/victim/nothing")) }
        #expect(missing == stolen)
        let label = await controlError { _ = try await fixture.control.createInstance(Self.request("tenant", base: "sf://label/victim/db-image")) }
        #expect(label == .notFound("artifact not found"))
        // The owner boots it, and so do the admin's instances.
        _ = try await fixture.control.createInstance(Self.request("victim", base: "sf://upload/victim/db-image"))
        _ = try await fixture.control.createInstance(Self.request("system", base: "sf://upload/victim/db-image"))
        // A system upload is the tenant's only once shared.
        _ = try await Self.upload(fixture, ArtifactTests.bytes(4096, seed: 2), name: "gold", namespace: "system")
        #expect(await controlError { _ = try await fixture.control.createInstance(Self.request("tenant", base: "sf://upload/system/gold")) } == stolen)
        try await fixture.control.setShared("gold", true)
        _ = try await fixture.control.createInstance(Self.request("tenant", base: "sf://upload/system/gold"))
        // Only system shares.
        #expect(await controlError { try await fixture.control.setShared("db-image", true, namespace: "victim") }?.code == .invalidArgument)
    }

    @Test func labelResolvesInTheNamespaceThenSystemsSharedLabels() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let system = try await Self.upload(fixture, ArtifactTests.bytes(4096, seed: 3), name: "base", namespace: "system").blob
        let own = try await Self.upload(fixture, ArtifactTests.bytes(4096, seed: 4), name: "mine", namespace: "tenant").blob
        try await fixture.control.setLabel(name: "gold", blobUUID: system.uuid, shared: true, storage: fixture.storage)
        try await fixture.control.setLabel(name: "silver", blobUUID: system.uuid, storage: fixture.storage)
        try await fixture.control.setLabel(name: "gold", blobUUID: own.uuid, namespace: "tenant", storage: fixture.storage)
        #expect(try await fixture.control.label("gold", namespace: "tenant").uuid == own.uuid, "the namespace's own label first")
        #expect(try await fixture.control.label("gold", namespace: "other").uuid == system.uuid, "then system's shared one")
        #expect(await controlError { _ = try await fixture.control.label("silver", namespace: "other") } == .notFound("artifact not found"))
        #expect(try await fixture.control.label("silver", namespace: "system").uuid == system.uuid)
        _ = try await fixture.control.createInstance(Self.request("other", base: "label:gold"))
        let refused = await controlError { _ = try await fixture.control.createInstance(Self.request("other", base: "label:silver")) }
        #expect(refused == .notFound("artifact not found"))
        // An upload session is no base: it must become an artifact first.
        #expect(await controlError { _ = try await fixture.control.createInstance(Self.request("other", base: "sf://upload/\(UUID().uuidString)")) }?.code == .invalidArgument)
    }

    @Test func aURLCacheIsTheCallersAndOnlyTheAdminShares() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let url = "https://user:secret@images.example.com/guest.qcow2?token=abc"
        let mine = try await fixture.control.cacheArtifact(url: url, namespace: "alice")
        #expect(mine.namespace == "alice" && !mine.shared && mine.sourceURL == url, "source_url is kept whole for its owner")
        #expect(try await fixture.control.artifacts(namespace: "bob").isEmpty)
        #expect(await controlError { _ = try await fixture.control.artifact(mine.uuid.uuidString, namespace: "bob") }?.code == .notFound)
        let bobs = try await fixture.control.cacheArtifact(url: url, namespace: "bob")
        #expect(bobs.uuid != mine.uuid)
        #expect(await controlError { try await fixture.control.cacheArtifact(url: url, namespace: "alice", shared: true) }?.code == .invalidArgument)
        let shared = try await fixture.control.cacheArtifact(url: url, shared: true)
        #expect(shared.namespace == "system" && shared.shared)
        #expect(try await fixture.control.artifacts(namespace: "carol").map(\.uuid) == [shared.uuid])
        // By name, a namespace's own cache wins over the shared one.
        #expect(try await fixture.control.artifact(url, namespace: "bob").uuid == bobs.uuid)
    }

    @Test func aBlobIsSeenOnlyThroughWhatHoldsIt() async throws {
        let fixture = try await Fixture()
        defer { fixture.cleanup() }
        let blob = try await Self.upload(fixture, ArtifactTests.bytes(8192, seed: 5), name: "private", namespace: "alice").blob
        let sha512 = try #require(blob.sha512)
        #expect(try await fixture.control.blob(sha512: sha512, namespace: "bob") == nil, "no oracle for what others hold")
        #expect(try await fixture.control.blob(sha512: sha512, namespace: "alice")?.uuid == blob.uuid)
        #expect(try await fixture.control.blob(sha512: sha512)?.uuid == blob.uuid, "the operator sees all")
        #expect(await controlError { _ = try await fixture.control.blob(uuid: blob.uuid, namespace: "bob") } == .notFound("blob not found"))
        let base = "sf://blob/\(blob.uuid.uuidString.lowercased())"
        #expect(await controlError { _ = try await fixture.control.createInstance(Self.request("bob", base: base)) } == .notFound("blob not found"))
        let (instance, _) = try await fixture.control.createInstance(Self.request("alice", base: base))
        // An instance disk holds the blob: alice sees the instance, bob still sees nothing.
        try await fixture.store.addReference(BlobReference(blobUUID: blob.uuid, holderType: "instance", holderUUID: instance.uuid, relationship: .disk))
        let forAlice = try await fixture.control.blob(uuid: blob.uuid, namespace: "alice")
        #expect(forAlice.instances == [instance.uuid.uuidString.lowercased()])
        // Shared through a system artifact, bob sees the blob but not alice's instance.
        _ = try await fixture.control.blobArtifact(name: "published", blobUUID: blob.uuid, namespace: "system", shared: true, storage: fixture.storage)
        let forBob = try await fixture.control.blob(uuid: blob.uuid, namespace: "bob")
        #expect(forBob.instances.isEmpty && forBob.referencesTo.allSatisfy { $0.holderType == "artifact" })
        #expect(forBob.referenceCount == 3)
    }

    @Test func credentialsAndQueriesAreRedacted() {
        #expect(URLRedaction.redacted("https://user:pass@example.com/a.qcow2?X-Amz-Signature=abc#top") == "https://redacted@example.com/a.qcow2?redacted")
        #expect(URLRedaction.redacted("http://example.com/a.qcow2") == "http://example.com/a.qcow2")
        #expect(URLRedaction.redacted("http://u:p/ss@host/x") == "http://redacted@host/x", "a '/' in a password leaks nothing")
        #expect(URLRedaction.redacted("sf://upload/system/gold") == "sf://upload/system/gold")
        #expect(URLRedaction.hasSecrets("https://h/x?token=1") && !URLRedaction.hasSecrets("https://h/x"))
    }
}
