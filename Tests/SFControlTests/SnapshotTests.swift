import Foundation
import SFControl
import SFStore
import Testing

/// The snapshot use case's checks and what it queues, against a temporary store: no root, no
/// libvirt. The copy itself is tested through the real agent (SFAgentTests' SnapshotPathTests).
@Suite struct SnapshotTests {
    /// An instance of `namespace` on hv1 with `disks`, walked to `state`.
    static func instance(
        _ fixture: ControlFixture, namespace: String = "system", state: InstanceState = .created,
        disks: [DiskSpec] = [DiskSpec(base: "/images/guest.qcow2", size: 8)]
    ) async throws -> Instance {
        let instance = Instance(name: "web", namespace: namespace, cpus: 1, memory: 256, diskSpec: disks, node: "hv1")
        try await fixture.store.createInstance(instance)
        let path: [InstanceState]
        switch state {
        case .initial: path = []
        case .creating: path = [.preflight, .creating]
        case .error: path = [.preflight, .creating, .created, .createdError, .error]
        case .deleted: path = [.preflight, .creating, .created, .deleted]
        default: path = [.preflight, .creating, .created]
        }
        for next in path { try await fixture.store.setInstanceState(uuid: instance.uuid, to: next) }
        return try await fixture.store.instance(uuid: instance.uuid)
    }

    @Test func refusalsFollowShakenFistWith409ForTerminalStates() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let control = fixture.control
        let mine = try await Self.instance(fixture, namespace: "tenant")
        let uuid = mine.uuid.lowercasedString
        // Another namespace's instance is not found, never forbidden.
        #expect(await controlError { _ = try await control.snapshotInstance(uuid, namespace: "other") } == .notFound("instance \(uuid) not found"))
        // Still being made: 406, which the client retries; never to be created again: 409.
        for state in [InstanceState.initial, .creating] {
            let instance = try await Self.instance(fixture, state: state)
            let error = await controlError { _ = try await control.snapshotInstance(instance.uuid.lowercasedString) }
            #expect(error == .notReady("instance \(instance.uuid.lowercasedString) is not ready (\(state.rawValue))"))
        }
        for state in [InstanceState.error, .deleted] {
            let instance = try await Self.instance(fixture, state: state)
            #expect(await controlError { _ = try await control.snapshotInstance(instance.uuid.lowercasedString) }?.code == .conflict)
        }
        // Bad requests, each by name.
        #expect(await controlError { _ = try await control.snapshotInstance(uuid, request: SnapshotRequest(maxVersions: 101)) }?.message
            .hasPrefix("max_versions 101 is outside 1...100 (SFNODE_QUOTA_SNAPSHOT_VERSIONS") == true)
        #expect(await controlError { _ = try await control.snapshotInstance(uuid, request: SnapshotRequest(all: true, labelName: "l")) }?.code
            == .invalidArgument)
        #expect(await controlError { _ = try await control.snapshotInstance(uuid, request: SnapshotRequest(deleteSnapshotAfterLabel: true)) }?
            .message.hasPrefix("delete_snapshot_after_label needs label_name") == true)
        #expect(await controlError { _ = try await control.snapshotInstance(uuid, request: SnapshotRequest(labelName: "a/b")) }?.code == .invalidArgument)
        // An unknown device snapshots nothing and queues nothing: Shaken Fist's {}.
        let none = try await control.snapshotInstance(uuid, request: SnapshotRequest(device: "vdz"))
        #expect(none.plan.targets.isEmpty && none.jobID == nil)
        #expect(try await fixture.store.jobs(states: [.queued], limit: 100).isEmpty)
        // A CD-ROM as disk 0 is ignored, so disk 0 alone snapshots nothing either.
        let cdrom = try await Self.instance(fixture, disks: [DiskSpec(base: "/images/x.iso", type: .cdrom), DiskSpec(size: 4)])
        #expect(try await control.snapshotInstance(cdrom.uuid.lowercasedString).plan.targets.isEmpty)
    }

    @Test func oneJobCarriesEveryDiskAndARepeatWhileQueuedIsTheSameSnapshot() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let control = fixture.control
        let instance = try await Self.instance(
            fixture, namespace: "tenant",
            disks: [DiskSpec(base: "/images/guest.qcow2", size: 8), DiskSpec(base: "/images/x.iso", type: .cdrom), DiskSpec(size: 4)])
        #expect(Control.disks(of: instance).map(\.device) == ["vda", "sda", "vdb"])
        let uuid = instance.uuid.lowercasedString
        let snapshot = try await control.snapshotInstance(uuid, namespace: "tenant", request: SnapshotRequest(all: true), requestID: "req-1")
        #expect(snapshot.plan.targets.map(\.device) == ["vda", "vdb"])
        #expect(snapshot.plan.targets.map(\.diskIndex) == [0, 2])
        #expect(Set(snapshot.plan.targets.map(\.blobUUID)).count == 2)
        for target in snapshot.plan.targets {
            let artifact = try await control.artifact(target.artifactUUID.lowercasedString, namespace: "tenant")
            #expect(artifact.type == .snapshot && artifact.namespace == "tenant" && artifact.state == .initial && artifact.maxVersions == 3)
            #expect(artifact.sourceURL == "sf://instance/\(uuid)/\(target.device)" && target.sourceURL == artifact.sourceURL)
            #expect(artifact.name == "\(uuid)/\(target.device)")
        }
        let jobs = try await fixture.store.jobs(states: [.queued], limit: 100)
        #expect(jobs.count == 1)
        let job = try #require(jobs.first)
        #expect(job.id == snapshot.jobID && job.kind == "instance.snapshot" && job.target == .node("hv1") && job.objectKey == "instance:\(uuid)")
        // The agent decodes the same order and plan from what was stored.
        let order = try JobOrder.decode(kind: job.kind, payload: job.payload)
        #expect(order.subject == .instance(instance.uuid) && order.requestID == "req-1")
        guard case .object(let fields) = job.payload else { Issue.record("payload is not an object"); return }
        #expect(try SnapshotPlan.decode(fields["snapshot"]) == snapshot.plan)

        // The same snapshot asked again while the first is queued is that snapshot (the client waits
        // for its blobs); a different one is refused until the first has run.
        let again = try await control.snapshotInstance(uuid, namespace: "tenant", request: SnapshotRequest(all: true))
        #expect(again.plan == snapshot.plan && again.jobID == snapshot.jobID)
        #expect(await controlError { _ = try await control.snapshotInstance(uuid, request: SnapshotRequest(device: "vdb")) }?.code == .tooBusy)
        #expect(try await fixture.store.jobs(states: [.queued], limit: 100).count == 1)
        // Both snapshot artifacts are listed by the instance's snapshots once they have versions; none yet.
        #expect(try await control.instanceSnapshots(uuid, namespace: "tenant").isEmpty)
        #expect(await controlError { _ = try await control.instanceSnapshots(uuid, namespace: "other") }?.code == .notFound)
    }

    @Test func aSnapshotCountsAgainstTheBlobQuota() async throws {
        var settings = ControlSettings()
        settings.quotas.blobBytes = 4 << 30
        let fixture = try await ControlFixture(settings: settings)
        defer { fixture.cleanup() }
        let instance = try await Self.instance(fixture, namespace: "tenant", disks: [DiskSpec(base: "/images/guest.qcow2", size: 8)])
        let error = await controlError { _ = try await fixture.control.snapshotInstance(instance.uuid.lowercasedString) }
        #expect(error?.code == .tooLarge)
        #expect(error?.message.contains("SFNODE_QUOTA_BLOB_GIB") == true)
        #expect(try await fixture.store.jobs(states: [.queued], limit: 100).isEmpty)
    }

    @Test func aSnapshotBaseResolvesOnlyToAVisibleSnapshotArtifact() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let control = fixture.control
        let records: any BlobRecords = fixture.store
        let artifact = Artifact(type: .snapshot, name: "x/vda", sourceURL: "sf://instance/x/vda", namespace: "tenant")
        try await records.createArtifact(artifact)
        let blob = Blob(size: 10)
        try await records.createBlob(blob)
        try await records.completeBlob(uuid: blob.uuid, size: 10, sha512: String(repeating: "a", count: 128), info: [:], node: "hv1")
        try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blob.uuid, lastModified: nil, contentLength: nil)
        let base = "sf://snapshot/\(artifact.uuid.lowercasedString)"
        #expect(try ImageReference.parse(base, imageDownloadURL: "http://127.0.0.1") == .snapshot(artifact.uuid))
        #expect(try ImageReference.parse(base, imageDownloadURL: "http://127.0.0.1").description == base)
        func request(_ base: String, _ namespace: String) -> InstanceRequest {
            InstanceRequest(name: "from-snap", cpus: 1, memoryMiB: 256, disks: [DiskSpec(base: base)], networks: [], namespace: namespace)
        }
        // The owner boots it; another namespace and an unknown UUID get the same 404.
        let (made, _) = try await control.createInstance(request(base, "tenant"))
        #expect(made.diskSpec.first?.base == base)
        #expect(await controlError { _ = try await control.createInstance(request(base, "other")) } == .notFound("artifact not found"))
        #expect(await controlError { _ = try await control.createInstance(request("sf://snapshot/\(UUID().uuidString)", "tenant")) }
            == .notFound("artifact not found"))
        // sf://snapshot/ names snapshot artifacts only, not an image artifact by its UUID.
        let image = Artifact(type: .image, name: "img", sourceURL: "sf://upload/tenant/img", namespace: "tenant")
        try await records.createArtifact(image)
        try await records.addArtifactVersion(artifactUUID: image.uuid, blobUUID: blob.uuid, lastModified: nil, contentLength: nil)
        #expect(await controlError { _ = try await control.createInstance(request("sf://snapshot/\(image.uuid.uuidString)", "tenant")) }
            == .notFound("artifact not found"))
        #expect(await controlError { _ = try await control.createInstance(request("sf://snapshot/nope", "tenant")) }?.code == .invalidArgument)
    }

    @Test func aHandMadePayloadIsRefusedByName() throws {
        #expect(throws: ControlError.invalid("an instance.snapshot job needs a \"snapshot\" object in its payload")) { try SnapshotPlan.decode(nil) }
        let disk: JSONValue = ["device": "vda", "disk_index": 0, "artifact_uuid": "not-a-uuid", "blob_uuid": .string(UUID().uuidString), "source_url": "s"]
        #expect(throws: ControlError.invalid("\"snapshot.disks[0].artifact_uuid\" must be a UUID")) {
            try SnapshotPlan.decode(["thin": false, "disks": [disk]])
        }
        let badDevice: JSONValue = ["device": "../x", "disk_index": 0, "artifact_uuid": .string(UUID().uuidString), "blob_uuid": .string(UUID().uuidString), "source_url": "s"]
        #expect(throws: ControlError.self) { try SnapshotPlan.decode(["thin": false, "disks": [badDevice]]) }
        // The extra member is the snapshot kind's alone.
        #expect(throws: ControlError.self) {
            try JobOrder.decode(kind: "instance.poweron", payload: ["instance_uuid": .string(UUID().uuidString), "snapshot": ["thin": false]])
        }
    }
}
