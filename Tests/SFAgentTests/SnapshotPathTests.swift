import Foundation
import SFAgent
import SFBlobs
import SFControl
import SFLibvirt
import SFStore
import SFSystem
import SFTestSupport
import Synchronization
import Testing

/// Snapshots through the real agent, libvirtd and qemu-img: a running guest's disk copied into a
/// blob while the guest is paused, the copy a version of its snapshot artifact, and a new instance
/// made from `sf://snapshot/<artifact uuid>`. The source guest only needs to run (an instance in
/// `created` whose domain is on), not to have booted, so it is snapshot at once under TCG.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct SnapshotPathTests {
    @Test func aRunningGuestIsPausedCopiedAndResumedAndANewInstanceIsMadeFromTheSnapshot() async throws {
        try #require(FileManager.default.fileExists(atPath: TestGuest.baseImage), "no \(TestGuest.baseImage): run scripts/build-test-image")
        try await withImageLab { lab in
            let resolver = lab.resolver()
            let (agent, runner) = try await lab.agent(images: resolver)
            try await agent.checkIn()
            lab.server.register("/guest.qcow2", file: TestGuest.baseImage)
            var settings = ControlSettings()
            settings.imageDownloadURL = lab.server.baseURL
            let control = Control(store: lab.store, settings: settings, logger: lab.logger)
            let source = try await lab.instance("source", base: lab.server.url("/guest.qcow2"))
            try await agent.instanceJobs.create(source.uuid)
            let libvirt = agent.realInstances.libvirt
            #expect(try await libvirt.state(of: .uuid(source.uuid)) == .on)

            // libvirt's own account of the domain's lifecycle while the snapshot runs.
            let seen = LifecycleLog()
            let lifecycle = try await libvirt.domainLifecycleEvents()
            let watcher = Task { for await event in lifecycle where event.identity.uuid == source.uuid { seen.kinds.withLock { $0.append(event.kind) } } }
            defer { watcher.cancel() }

            func snapshot(_ request: SnapshotRequest = SnapshotRequest()) async throws -> SnapshotTarget {
                let queued = try await control.snapshotInstance(source.uuid.lowercasedString, request: request)
                let target = try #require(queued.plan.targets.first)
                while try await runner.runOne() {}
                let job = try await lab.store.job(id: try #require(queued.jobID))
                #expect(job.state == .succeeded, "snapshot job: \(job.lastError ?? "")")
                return target
            }

            let first = try await snapshot()
            #expect(first.device == "vda")
            let blob = try await lab.store.blob(uuid: first.blobUUID)
            let data = resolver.blobs.path(of: blob.uuid)
            #expect(blob.state == .created && blob.locations == [lab.nodeName])
            #expect(blob.sha512 == (try lab.sha512(of: data)))
            // Flattened: a qcow2 with no backing file, whole on its own.
            let info = try lab.qemuInfo(data)
            #expect(info["format"] == "qcow2" && info["backing-filename"] == nil)
            let artifact = try await lab.store.artifact(uuid: first.artifactUUID)
            #expect(artifact.state == .created && artifact.type == .snapshot)
            #expect(try await lab.store.artifactVersions(artifactUUID: artifact.uuid).map(\.blobUUID) == [blob.uuid])
            // Paused while read, running again after, and told as events.
            #expect(await eventually(timeout: .seconds(10)) { seen.kinds.withLock { $0.contains(.suspended) && $0.contains(.resumed) } })
            #expect(seen.kinds.withLock { kinds in kinds.firstIndex(of: .suspended).map { kinds[$0...].contains(.resumed) } ?? false })
            #expect(try await libvirt.state(of: .uuid(source.uuid)) == .on)
            let messages = try await lab.events(of: source.uuid)
            #expect(messages.contains("paused for snapshot") && messages.contains("resumed after snapshot"))
            #expect(lab.files(in: agent.realInstances.directory(of: source.uuid)).filter { $0.hasPrefix("snapshot-") }.isEmpty)
            let recorded = try await lab.store.events(objectType: "instance", objectUUID: source.uuid.uuidString.lowercased())
            if let pausedAt = recorded.first(where: { $0.message == "paused for snapshot" })?.timestamp,
                let resumedAt = recorded.first(where: { $0.message == "resumed after snapshot" })?.timestamp
            {
                print("snapshot path: guest paused for \(resumedAt.timeIntervalSince(pausedAt)) s to copy a \(blob.size)-byte qcow2")
            }

            // The job run again (as after the agent died under it) adds no second version.
            let job = try #require(try await lab.store.jobs(states: [.succeeded], limit: 100).first { $0.kind == "instance.snapshot" })
            let rerun = try await lab.store.enqueue(kind: job.kind, payload: job.payload, target: job.target, objectKey: job.objectKey)
            while try await runner.runOne() {}
            #expect(try await lab.store.job(id: rerun.id).state == .succeeded)
            #expect(try await lab.store.artifactVersions(artifactUUID: artifact.uuid).count == 1)

            // A second snapshot is a second version, newest last, and what sf://snapshot/ resolves to.
            let second = try await snapshot()
            #expect(second.artifactUUID == artifact.uuid && second.blobUUID != first.blobUUID)
            #expect(try await lab.store.artifactVersions(artifactUUID: artifact.uuid).map(\.blobUUID) == [first.blobUUID, second.blobUUID])
            let listed = try await control.instanceSnapshots(source.uuid.lowercasedString)
            #expect(listed.map(\.blob.blob.uuid) == [first.blobUUID, second.blobUUID] && listed.allSatisfy { $0.device == "vda" })
            let access = ImageAccess(records: lab.store) { _ in nil }
            #expect(try await access.blob(for: .snapshot(artifact.uuid), namespace: "system")?.uuid == second.blobUUID)

            // An instance from the snapshot: accepted, and its disk an overlay on the snapshot's blob.
            let (clone, _) = try await control.createInstance(
                InstanceRequest(
                    name: "clone", cpus: 1, memoryMiB: 256, disks: [DiskSpec(base: "sf://snapshot/\(artifact.uuid.lowercasedString)")],
                    namespace: "system"))
            while try await runner.runOne() {}
            #expect(try await lab.store.instance(uuid: clone.uuid).state == .created)
            let cloneDisk = agent.realInstances.directory(of: clone.uuid) + "/disk0.qcow2"
            #expect(try lab.qemuInfo(cloneDisk)["backing-filename"] == .string(resolver.cache.path(for: second.blobUUID, purpose: .disk)))
            // Only the source's guest need run under TCG.
            try await agent.instanceJobs.power(.poweroff, clone.uuid)

            // A copy that fails still resumes the guest, and fails the job, not the instance: the
            // disk's file is moved away (QEMU keeps its open descriptor), so qemu-img finds nothing.
            let diskPath = agent.realInstances.directory(of: source.uuid) + "/disk0.qcow2"
            try FileManager.default.moveItem(atPath: diskPath, toPath: diskPath + ".away")
            let failing = try await control.snapshotInstance(source.uuid.lowercasedString)
            while try await runner.runOne() {}
            try FileManager.default.moveItem(atPath: diskPath + ".away", toPath: diskPath)
            let failed = try await lab.store.job(id: try #require(failing.jobID))
            #expect(failed.state == .failed && failed.lastError?.contains("has no disk file") == true, "\(failed)")
            #expect(try await libvirt.state(of: .uuid(source.uuid)) == .on)
            #expect(try await lab.store.instance(uuid: source.uuid).state == .created)
            let afterFailure = try await lab.events(of: source.uuid)
            #expect(afterFailure.filter { $0 == "paused for snapshot" }.count == 3 && afterFailure.filter { $0 == "resumed after snapshot" }.count == 3)
            #expect((try? await lab.store.blob(uuid: try #require(failing.plan.targets.first).blobUUID)) == nil)

            // An agent that died half-way through recording a copy left its blob `initial`: the rerun
            // removes that blob and fails, without pausing the guest again.
            let interrupted = try await control.snapshotInstance(source.uuid.lowercasedString)
            let halfMade = try #require(interrupted.plan.targets.first).blobUUID
            try await lab.store.createBlob(Blob(uuid: halfMade, state: .initial))
            while try await runner.runOne() {}
            let refused = try await lab.store.job(id: try #require(interrupted.jobID))
            #expect(refused.state == .failed && refused.lastError?.contains("interrupted copy; snapshot again") == true, "\(refused)")
            #expect(try await lab.store.blob(uuid: halfMade).state == .deleted)
            #expect(try await lab.events(of: source.uuid).filter { $0 == "paused for snapshot" }.count == 3)

            // Thin: the copy keeps the source's base as its backing file and depends on its blob.
            let thin = try await snapshot(SnapshotRequest(thin: true))
            let baseBlob = try #require(try await lab.store.references(holderType: "instance", holderUUID: source.uuid.uuidString).first?.blobUUID)
            #expect(try lab.qemuInfo(resolver.blobs.path(of: thin.blobUUID))["backing-filename"] == .string(resolver.cache.path(for: baseBlob, purpose: .disk)))
            #expect(try await lab.store.references(to: baseBlob).contains {
                $0.holderType == "blob" && $0.holderUUID == thin.blobUUID.uuidString.lowercased() && $0.relationship == .dependsOn
            })
            // The thin job run again after the agent died before recording the claim on the base:
            // the rerun records it, and copies nothing.
            let dependsOn = BlobReference(blobUUID: baseBlob, holderType: "blob", holderUUID: thin.blobUUID, relationship: .dependsOn)
            try await lab.store.removeReference(dependsOn)
            func isThin(_ job: Job) -> Bool {
                guard case .object(let fields) = job.payload, case .object(let plan)? = fields["snapshot"] else { return false }
                return job.kind == "instance.snapshot" && plan["thin"] == true
            }
            let thinJob = try #require(try await lab.store.jobs(states: [.succeeded], limit: 100).first(where: isThin))
            let thinRerun = try await lab.store.enqueue(kind: thinJob.kind, payload: thinJob.payload, target: thinJob.target, objectKey: thinJob.objectKey)
            while try await runner.runOne() {}
            #expect(try await lab.store.job(id: thinRerun.id).state == .succeeded)
            #expect(try await lab.store.references(to: baseBlob).contains(dependsOn))
            #expect(try await lab.events(of: source.uuid).filter { $0 == "paused for snapshot" }.count == 4)

            // max_versions 3: the fourth snapshot would drop the first; three are kept now.
            #expect(try await lab.store.artifactVersions(artifactUUID: artifact.uuid).count == 3)

            // Labelled server-side as sf-client does it: the label holds the copy, and the snapshot
            // artifact may go without taking the blob with it.
            let labelled = try await control.snapshotInstance(
                source.uuid.lowercasedString, request: SnapshotRequest(device: "vda", labelName: "golden", deleteSnapshotAfterLabel: true))
            while try await runner.runOne() {}
            try await control.waitForSnapshot(labelled, timeout: .seconds(5))
            let storage = BlobStorage(path: lab.storage, nodeName: lab.nodeName)
            _ = try await control.labelSnapshot(labelled, name: "golden", device: "vda", deleteSnapshot: true, storage: storage)
            let golden = try #require(labelled.plan.targets.first).blobUUID
            #expect(try await control.label("golden", namespace: "system").uuid == golden)
            #expect(try await lab.store.artifact(uuid: artifact.uuid).state == .deleted)
            #expect(try await lab.store.blob(uuid: golden).state == .created && resolver.blobs.hasData(golden))
        }
    }
}

/// The lifecycle events of one domain, in the order libvirt sent them.
private final class LifecycleLog: Sendable {
    let kinds = Mutex<[DomainLifecycleEvent.Kind]>([])
}
