import Foundation
import Logging
import SFBlobs
import SFControl
import SFLibvirt
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// The instance.snapshot job: copies an instance's disks into blobs, each the newest version of its
/// snapshot artifact (see ``Control/snapshotInstance(_:namespace:request:requestID:)``).
///
/// A running guest is paused while its disks are read, and resumed after, whatever happens, so the
/// copy is what the disk held at one moment (Shaken Fist reads the live disk and gets a
/// crash-consistent copy at best). Only the reading is paused: the copies become blobs (hashed,
/// synced) after the guest runs again.
///
/// Idempotent: a target whose blob already exists was copied by an earlier run (which the agent's
/// death cut short), so a rerun adds what is missing and never a second version.
struct SnapshotJobs: Sendable {
    let context: AgentContext

    var store: any NodeStore { context.store }

    /// The job as the runner hands it over: the plan is in the payload's `snapshot` member.
    func run(_ order: JobOrder, _ job: Job) async throws {
        guard case .object(let fields) = job.payload else { throw JobError.refusal("instance.snapshot job \(job.id) has no payload object") }
        let plan: SnapshotPlan
        do {
            plan = try SnapshotPlan.decode(fields["snapshot"])
        } catch {
            throw JobError.refusal(error.message)
        }
        try await snapshot(try order.uuid(), plan)
    }

    /// Copies the plan's disks of instance `uuid`.
    func snapshot(_ uuid: UUID, _ plan: SnapshotPlan) async throws {
        guard let images = context.images else { throw JobError.refusal("this agent was built without the image store; it cannot keep snapshots") }
        let started = ContinuousClock.now
        try await context.locks.objectStep([HostLocks.instance(uuid)]) {
            let instance = try await store.instance(uuid: uuid)
            guard instance.state == .created else {
                throw JobError.refusal("cannot snapshot instance \(uuid): it is \(instance.state.rawValue), not created")
            }
            try context.refuseIfElsewhere(instance)
            let pending = try await pendingTargets(plan, of: instance, images)
            guard !pending.isEmpty else { return }
            let directory = InstanceFiles(storagePath: context.instances.storagePath).directory(of: uuid)
            let copies = try await readPaused(instance, pending, thin: plan.thin, directory: directory, images)
            defer { for copy in copies { unlink(copy.path) } }
            for copy in copies {
                try await keep(copy, of: instance, images)
            }
            try await context.event(
                "instance", uuid, .status, "snapshot complete: \(pending.map(\.device).joined(separator: ", "))", since: started)
        }
    }

    /// The targets still to copy, after checking each names a disk of this instance and an artifact
    /// of this instance's (a job can be submitted by hand: it must not write into another's artifact).
    private func pendingTargets(_ plan: SnapshotPlan, of instance: Instance, _ images: ImageResolver) async throws -> [SnapshotTarget] {
        let records = images.blobs.records
        let disks = Control.disks(of: instance)
        var pending: [SnapshotTarget] = []
        for target in plan.targets {
            let sourceURL = "sf://instance/\(instance.uuid.lowercasedString)/\(target.device)"
            if target.isNVRAM {
                guard instance.config.uefi else { throw JobError.refusal("instance \(instance.uuid) boots without UEFI: it has no NVRAM to snapshot") }
            } else if !disks.contains(where: { $0.index == target.diskIndex && $0.device == target.device && !$0.snapshotIgnores }) {
                throw JobError.refusal("instance \(instance.uuid) has no disk \(target.device) at position \(target.diskIndex) to snapshot")
            }
            let artifact = try await records.artifact(uuid: target.artifactUUID)
            guard artifact.type == .snapshot, artifact.namespace == instance.namespace, artifact.sourceURL == sourceURL else {
                throw JobError.refusal("artifact \(target.artifactUUID.lowercasedString) is not the snapshot artifact of \(sourceURL)")
            }
            if let blob = try? await records.blob(uuid: target.blobUUID) {
                guard blob.state == .created else {
                    // An agent that died between recording the blob and completing it: its UUID
                    // cannot be used again, so the half-made blob goes (with any data) and the
                    // caller is told to snapshot again.
                    if blob.state == .initial {
                        try await records.setBlobState(uuid: blob.uuid, to: .deleted)
                        _ = try await images.blobs.sweep()
                    }
                    throw JobError.refusal(
                        "blob \(target.blobUUID.lowercasedString) of the snapshot of \(target.device) was left \(blob.state.rawValue) by an interrupted copy; snapshot again")
                }
                // Copied by an earlier run: only its version (and a thin copy's claim on its base)
                // may be missing.
                if plan.thin, try await records.references(holderType: "blob", holderUUID: blob.uuid.uuidString).isEmpty,
                    let base = try await backing(of: images.blobs.path(of: blob.uuid), instance: instance.uuid, images)
                {
                    try await records.addReference(BlobReference(blobUUID: base.blob, holderType: "blob", holderUUID: blob.uuid, relationship: .dependsOn))
                }
                try await addVersion(blob, to: artifact, device: target.device, of: instance, images)
                continue
            }
            pending.append(target)
        }
        return pending
    }

    /// One disk read into a file of its own, not yet a blob.
    struct Copy: Sendable {
        let target: SnapshotTarget
        let path: String
        /// The blob the copy is built on (thin only).
        let base: UUID?
    }

    /// Pauses a running guest, reads every disk into a file of its own, and resumes the guest however
    /// the reading ended. A guest that is off, or that its owner paused, is left as it is.
    private func readPaused(
        _ instance: Instance, _ targets: [SnapshotTarget], thin: Bool, directory: String, _ images: ImageResolver
    ) async throws -> [Copy] {
        let uuid = instance.uuid
        let domains = context.instances.domainControl
        let reference = DomainReference.uuid(uuid)
        let paused = try await context.locks.hostStep { () -> Bool in
            guard try await domains.state(of: reference) == .on else { return false }
            try await domains.suspend(reference)
            return true
        }
        if paused { try await context.event("instance", uuid, .audit, "paused for snapshot") }
        let outcome: Result<[Copy], any Error>
        do {
            var copies: [Copy] = []
            for target in targets {
                copies.append(try await convert(target, directory: directory, thin: thin, instance: uuid, images))
            }
            outcome = .success(copies)
        } catch {
            outcome = .failure(error)
        }
        if paused {
            do {
                try await context.locks.hostStep { try await domains.resume(reference) }
                try await context.event("instance", uuid, .audit, "resumed after snapshot")
            } catch {
                // The copies are of no use if the guest stays paused: its owner must hear of it.
                context.logger.error("could not resume the instance after its snapshot", metadata: ["instance.uuid": "\(uuid)", "error": "\(error)"])
                if case .success(let copies) = outcome { for copy in copies { unlink(copy.path) } }
                throw ControlError(.internal, "instance \(uuid) could not be resumed after its snapshot: \(error)")
            }
        }
        return try outcome.get()
    }

    /// `qemu-img convert` of the disk into `<instance directory>/snapshot-<blob>.partial`: flattened,
    /// or with `thin` on the disk's base as its backing file. `-U`: the running domain holds the
    /// disk's lock, and the guest is paused, so the read is consistent.
    private func convert(_ target: SnapshotTarget, directory: String, thin: Bool, instance: UUID, _ images: ImageResolver) async throws -> Copy {
        let output = "\(directory)/snapshot-\(target.blobUUID.lowercasedString).partial"
        if target.isNVRAM { return try await copyVariables(to: output, target, instance: instance) }
        let disk = "\(directory)/disk\(target.diskIndex).qcow2"
        var base: (blob: UUID, path: String)?
        if thin { base = try await backing(of: disk, instance: instance, images) }
        let timeLimit = (context.instances as? InstanceRealizer)?.qemuImgTimeLimit ?? ImageLimits().qemuImgTimeLimit
        // Two MiB clusters: the image cache takes such a qcow2 as it is when an instance boots from it.
        var argv = ["/usr/bin/qemu-img", "convert", "-q", "-U", "-f", "qcow2", "-O", "qcow2", "-o", "cluster_size=2M"]
        if let base { argv += ["-B", base.path, "-F", "qcow2"] }
        argv += [disk, output]
        let command = argv
        try await runBlocking {
            unlink(output)
            guard FileManager.default.fileExists(atPath: disk) else {
                throw ControlError.notFound("instance \(instance) has no disk file \(disk) on this node")
            }
            let result: CommandOutput
            do {
                result = try ChildProcess.run(command, timeLimit: timeLimit)
            } catch ChildProcessError.timedOut {
                unlink(output)
                throw ImageError.qemuImgTimedOut(operation: "convert", path: disk, seconds: timeLimit.components.seconds)
            }
            guard result.status == 0 else {
                unlink(output)
                throw ImageError.qemuImg(operation: "convert", path: disk, message: result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        return Copy(target: target, path: output, base: base?.blob)
    }

    /// The instance's firmware variables (a raw flash image, read while the guest is paused) copied
    /// to `output`; an instance that has not started yet has none.
    private func copyVariables(to output: String, _ target: SnapshotTarget, instance: UUID) async throws -> Copy {
        let variables = InstanceFiles(storagePath: context.instances.storagePath).firmwareVariables(of: instance)
        try await runBlocking {
            guard let data = FileManager.default.contents(atPath: variables) else {
                throw ControlError.notFound("instance \(instance) has no NVRAM file \(variables) on this node (it has not started yet)")
            }
            try AtomicFile.write(data, to: output, mode: 0o600)
        }
        return Copy(target: target, path: output, base: nil)
    }

    /// The blob the disk's backing file is the cached base of, and that file; nil for a blank disk.
    private func backing(of disk: String, instance: UUID, _ images: ImageResolver) async throws -> (blob: UUID, path: String)? {
        let info = try await runBlocking { try ChildProcess.run(["/usr/bin/qemu-img", "info", "-U", "--output=json", disk], timeLimit: .seconds(60)) }
        guard info.status == 0, case .object(let fields)? = try? JSONValue.parse(info.stdout) else {
            throw ImageError.qemuImg(operation: "info", path: disk, message: info.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard let backing = fields["backing-filename"]?.stringValue else { return nil }
        for reference in try await images.blobs.records.references(holderType: "instance", holderUUID: instance.uuidString)
        where images.cache.path(for: reference.blobUUID, purpose: .disk) == backing {
            return (reference.blobUUID, backing)
        }
        throw ControlError.conflict("the base \(backing) of \(disk) is no blob this instance holds; snapshot it flattened (without thin)")
    }

    /// Makes the copy a blob (hashed, synced, under the UUID handed out) and the newest version of
    /// its artifact; the copy's file is removed by the caller.
    private func keep(_ copy: Copy, of instance: Instance, _ images: ImageResolver) async throws {
        let blobs = images.blobs
        let ingest = try blobs.beginIngest(uuid: copy.target.blobUUID, deduplicate: false)
        let path = copy.path
        do {
            try await runBlocking {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                if fd < 0 { throw BlobError.io(SystemError("open \(path)", code: errno).description) }
                defer { close(fd) }
                var buffer = [UInt8](repeating: 0, count: 1 << 20)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw BlobError.io(SystemError("read \(path)", code: errno).description)
                    }
                    if n == 0 { break }
                    try buffer.withUnsafeBytes { try ingest.append(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                }
            }
        } catch {
            ingest.abandon()
            throw error
        }
        var info: [String: JSONValue] = ["mime-type": .string(copy.target.isNVRAM ? "application/octet-stream" : "application/x-qemu-disk")]
        if copy.base == nil, !copy.target.isNVRAM, let inspected = try? await ImageInspector(logger: context.logger).inspect(ingest.partialPath, allowRaw: false) {
            info = ImageResolver.blobInfo(inspected)
        }
        let blob = try await ingest.finish(info: info)
        if let base = copy.base {
            try await blobs.records.addReference(BlobReference(blobUUID: base, holderType: "blob", holderUUID: blob.uuid, relationship: .dependsOn))
        }
        let artifact = try await blobs.records.artifact(uuid: copy.target.artifactUUID)
        try await addVersion(blob, to: artifact, device: copy.target.device, of: instance, images)
    }

    /// Adds the blob as the artifact's newest version unless it is a version already; then removes
    /// the data of the versions that dropped out. An artifact deleted meanwhile keeps nothing: the
    /// blob is deleted, as Shaken Fist does.
    private func addVersion(_ blob: Blob, to artifact: Artifact, device: String, of instance: Instance, _ images: ImageResolver) async throws {
        let records = images.blobs.records
        let before = try await records.artifactVersions(artifactUUID: artifact.uuid)
        if before.contains(where: { $0.blobUUID == blob.uuid }) { return }
        guard artifact.state != .deleted && artifact.state != .error else {
            if try await records.references(to: blob.uuid).isEmpty { try await records.setBlobState(uuid: blob.uuid, to: .deleted) }
            _ = try await images.blobs.sweep()
            try await context.event(
                "instance", instance.uuid, .status,
                "snapshot of \(device) not kept: artifact \(artifact.uuid.lowercasedString) is \(artifact.state.rawValue)")
            return
        }
        let version = try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blob.uuid, lastModified: nil, contentLength: nil)
        var dropped = false
        for old in before where images.blobs.hasData(old.blobUUID) {
            if try await records.blob(uuid: old.blobUUID).state == .deleted { dropped = true }
        }
        if dropped { _ = try await images.blobs.sweep() }
        try await context.event(
            "instance", instance.uuid, .status,
            "snapshot of \(device) is blob \(blob.uuid.lowercasedString), version \(version.index) of artifact \(artifact.uuid.lowercasedString)")
    }
}
