import Foundation
import SFBlobs
import SFStore
import SFSystem

/// What `POST /instances/<ref>/snapshot` (and `sfnode instance snapshot`) asks for.
public struct SnapshotRequest: Sendable, Equatable {
    /// Every disk rather than disk 0 only.
    public var all: Bool
    /// One disk by its guest device name (`vda`); a name no disk has snapshots nothing.
    public var device: String?
    /// Keep the disk's base image as the copy's backing file instead of flattening the chain.
    public var thin: Bool
    /// How many versions a newly made snapshot artifact keeps; nil or 0 means 3 (Shaken Fist's
    /// default), at most ``NamespaceQuotas/snapshotVersions``.
    public var maxVersions: Int?
    /// Point this label at the copy once it is made (what sf-client does client-side).
    public var labelName: String?
    /// With ``labelName``: delete the snapshot artifact once the label holds the copy.
    public var deleteSnapshotAfterLabel: Bool

    public init(
        all: Bool = false, device: String? = nil, thin: Bool = false, maxVersions: Int? = nil, labelName: String? = nil,
        deleteSnapshotAfterLabel: Bool = false
    ) {
        self.all = all
        self.device = device
        self.thin = thin
        self.maxVersions = maxVersions
        self.labelName = labelName
        self.deleteSnapshotAfterLabel = deleteSnapshotAfterLabel
    }
}

/// Where one disk's copy goes: its snapshot artifact and the blob UUID handed out before the data exists.
public struct SnapshotTarget: Sendable, Equatable {
    /// Shaken Fist's pseudo-device for a UEFI instance's firmware variables, copied with `all`; its
    /// blob can be another instance's `nvram_template`.
    public static let nvramDevice = "nvram"

    public let device: String
    /// The disk's position in the instance's `disk_spec`; -1 for ``nvramDevice``.
    public let diskIndex: Int
    public let artifactUUID: UUID
    public let blobUUID: UUID
    /// `sf://instance/<instance uuid>/<device>`.
    public let sourceURL: String

    public init(device: String, diskIndex: Int, artifactUUID: UUID, blobUUID: UUID, sourceURL: String) {
        self.device = device
        self.diskIndex = diskIndex
        self.artifactUUID = artifactUUID
        self.blobUUID = blobUUID
        self.sourceURL = sourceURL
    }

    /// Whether this copies the firmware variables rather than a disk.
    public var isNVRAM: Bool { device == Self.nvramDevice }
}

/// What an `instance.snapshot` job copies: its payload's `snapshot` member.
public struct SnapshotPlan: Sendable, Equatable {
    public var thin: Bool
    /// One per disk, in disk order.
    public var targets: [SnapshotTarget]

    public init(thin: Bool, targets: [SnapshotTarget]) {
        self.thin = thin
        self.targets = targets
    }

    /// As stored in the job's payload.
    public var json: JSONValue {
        .object([
            "thin": .bool(thin),
            "disks": .array(
                targets.map {
                    .object([
                        "device": .string($0.device), "disk_index": .number(Double($0.diskIndex)),
                        "artifact_uuid": .string($0.artifactUUID.lowercasedString), "blob_uuid": .string($0.blobUUID.lowercasedString),
                        "source_url": .string($0.sourceURL),
                    ])
                }),
        ])
    }

    /// The plan of a stored payload's `snapshot` member, each malformed field refused by name (a job
    /// can be submitted by hand, so nothing here is trusted).
    public static func decode(_ value: JSONValue?) throws(ControlError) -> SnapshotPlan {
        guard case .object(let fields)? = value else { throw .invalid("an instance.snapshot job needs a \"snapshot\" object in its payload") }
        guard case .bool(let thin)? = fields["thin"] else { throw .invalid("\"snapshot.thin\" must be true or false") }
        guard let disks = fields["disks"]?.arrayValue, disks.count <= InstanceLimits.disks.upperBound else {
            throw .invalid("\"snapshot.disks\" must be a list of at most \(InstanceLimits.disks.upperBound) disks")
        }
        var targets: [SnapshotTarget] = []
        for (position, disk) in disks.enumerated() {
            guard case .object(let disk) = disk else { throw .invalid("\"snapshot.disks[\(position)]\" must be an object") }
            func uuid(_ key: String) throws(ControlError) -> UUID {
                guard let text = disk[key]?.stringValue, let uuid = UUID(uuidString: text) else {
                    throw .invalid("\"snapshot.disks[\(position)].\(key)\" must be a UUID")
                }
                return uuid
            }
            guard let device = disk["device"]?.stringValue, (1...16).contains(device.utf8.count),
                device.unicodeScalars.allSatisfy({ $0.isASCII && CharacterSet.alphanumerics.contains($0) })
            else { throw .invalid("\"snapshot.disks[\(position)].device\" must be a device name such as vda") }
            guard let index = disk["disk_index"]?.integerValue,
                (0..<InstanceLimits.disks.upperBound).contains(index) || (index == -1 && device == SnapshotTarget.nvramDevice)
            else {
                throw .invalid(
                    "\"snapshot.disks[\(position)].disk_index\" must be an integer from 0 to \(InstanceLimits.disks.upperBound - 1) (-1 for nvram)")
            }
            guard let sourceURL = disk["source_url"]?.stringValue, sourceURL.utf8.count <= 256 else {
                throw .invalid("\"snapshot.disks[\(position)].source_url\" must be a string")
            }
            targets.append(
                SnapshotTarget(device: device, diskIndex: index, artifactUUID: try uuid("artifact_uuid"), blobUUID: try uuid("blob_uuid"), sourceURL: sourceURL))
        }
        return SnapshotPlan(thin: thin, targets: targets)
    }
}

/// A snapshot asked for: what is copied where, and the job doing it (nil when no disk qualified:
/// Shaken Fist's `{}`).
public struct QueuedSnapshot: Sendable, Equatable {
    public let instance: Instance
    public let plan: SnapshotPlan
    public let jobID: Int64?

    public init(instance: Instance, plan: SnapshotPlan, jobID: Int64?) {
        self.instance = instance
        self.plan = plan
        self.jobID = jobID
    }
}

/// One version of one of an instance's snapshot artifacts: an element of `GET …/snapshot`.
public struct SnapshotVersion: Sendable, Equatable {
    public let artifact: Artifact
    /// The device the artifact copies (the last segment of its source URL).
    public let device: String
    public let version: ArtifactVersion
    public let blob: BlobView
}

extension Control {
    /// The instance's own disks (its `disk_spec`, without the config drive) with the device names
    /// the domain gives them (``InstanceDisk``).
    public static func disks(of instance: Instance) -> [InstanceDisk] {
        InstanceDisk.layout(of: instance).filter { !$0.isConfigDrive }
    }

    /// Snapshots an instance's disks, as Shaken Fist's `POST /instances/<ref>/snapshot` does: disk 0,
    /// the one `device` names, or every disk with `all`, CD-ROMs left out. Each disk's copy becomes
    /// the newest version of its `snapshot` artifact (`sf://instance/<uuid>/<device>`, found or
    /// made in the instance's namespace), and one `instance.snapshot` job on the instance's node
    /// makes the copies. The blob UUIDs are handed out now; the blobs exist once the job is done.
    ///
    /// Refused: another namespace's instance (not found), one still being made (not ready: 406,
    /// which the client retries), one that will never be `created` again (conflict: 409), and a
    /// namespace whose blob quota the disks may not fit in.
    public func snapshotInstance(
        _ reference: String, namespace: String? = nil, request: SnapshotRequest = SnapshotRequest(), requestID: String? = nil
    ) async throws -> QueuedSnapshot {
        let instance = try await self.instance(reference, namespace: namespace)
        let uuid = instance.uuid.lowercasedString
        switch instance.state {
        case .created: break
        case .initial, .preflight, .creating: throw ControlError.notReady("instance \(uuid) is not ready (\(instance.state.rawValue))")
        default: throw ControlError.conflict("instance \(uuid) is \(instance.state.rawValue); only a created instance can be snapshot")
        }
        let maxVersions = request.maxVersions.flatMap { $0 == 0 ? nil : $0 } ?? 3
        let versionLimit = settings.quotas.snapshotVersions
        guard (1...max(versionLimit, 1)).contains(maxVersions) else {
            throw ControlError.invalid(
                "max_versions \(maxVersions) is outside 1...\(versionLimit) (SFNODE_QUOTA_SNAPSHOT_VERSIONS; 0 means the default, 3)")
        }
        if let label = request.labelName {
            try Names.checkName(label, "label name")
            guard !request.all else {
                throw ControlError.invalid("label_name labels one disk's snapshot; ask for one device (or disk 0), not all")
            }
        } else if request.deleteSnapshotAfterLabel {
            throw ControlError.invalid("delete_snapshot_after_label needs label_name: without a label nothing would keep the snapshot")
        }
        let candidates = Self.disks(of: instance).filter { !$0.snapshotIgnores }
        let chosen: [InstanceDisk]
        if let device = request.device {
            chosen = candidates.filter { $0.device == device }
        } else if request.all {
            chosen = candidates
        } else {
            // Disk 0 only: a CD-ROM as disk 0 snapshots nothing, as in Shaken Fist.
            chosen = candidates.filter { $0.index == 0 }
        }
        // With every disk, a UEFI instance's firmware variables too, as Shaken Fist's `nvram`.
        let nvram = request.all && request.device == nil && instance.config.uefi
        guard !chosen.isEmpty || nvram else {
            return QueuedSnapshot(instance: instance, plan: SnapshotPlan(thin: request.thin, targets: []), jobID: nil)
        }
        guard let node = instance.node else { throw ControlError.conflict("instance \(uuid) is placed on no node; there is no disk to copy") }
        if instance.namespace != Namespace.system {
            let nvramBytes = nvram ? InstanceLimits.nvramTemplateBytes : 0
            let disksBytes = try await largestCopy(of: chosen, instance: instance)
            try await checkBlobBytes(namespace: instance.namespace, adding: disksBytes.addingReportingOverflow(nvramBytes).overflow ? .max : disksBytes + nvramBytes)
        }
        let records = try blobRecords()
        let order = try JobOrder(.instanceSnapshot, .instance(instance.uuid), requestID: requestID)
        return try await controlled {
            var targets: [SnapshotTarget] = []
            let devices = chosen.map { (device: $0.device, index: $0.index) } + (nvram ? [(device: SnapshotTarget.nvramDevice, index: -1)] : [])
            for disk in devices {
                let sourceURL = "sf://instance/\(uuid)/\(disk.device)"
                let artifact = try await Self.findOrCreate(
                    Artifact(type: .snapshot, name: "\(uuid)/\(disk.device)", sourceURL: sourceURL, namespace: instance.namespace, maxVersions: maxVersions),
                    in: records)
                guard artifact.state != .error else {
                    throw ControlError.conflict(
                        "snapshot artifact \(artifact.uuid.lowercasedString) of \(disk.device) is in error; delete it (sfnode artifact delete \(artifact.uuid.lowercasedString)) and snapshot again")
                }
                targets.append(SnapshotTarget(device: disk.device, diskIndex: disk.index, artifactUUID: artifact.uuid, blobUUID: UUID(), sourceURL: sourceURL))
            }
            let plan = SnapshotPlan(thin: request.thin, targets: targets)
            // admitJob coalesces a job behind a queued one of the same kind: for a snapshot that is
            // only right when the queued one copies the same disks the same way (it then copies the
            // same state this one would). Its blob UUIDs are answered, so the caller waits for them.
            if case .coalesced(let queued) = try await admitJob(order) {
                if case .object(let fields) = queued.payload, let earlier = try? SnapshotPlan.decode(fields["snapshot"]),
                    earlier.thin == plan.thin, earlier.targets.map(\.device) == plan.targets.map(\.device)
                {
                    return QueuedSnapshot(instance: instance, plan: earlier, jobID: queued.id)
                }
                throw ControlError(.tooBusy, "a different snapshot of instance \(uuid) is already queued (job \(queued.id)); wait for it to run")
            }
            guard case .object(var payload) = order.payload else { throw ControlError(.internal, "a job order's payload is not an object") }
            payload["snapshot"] = plan.json
            let job = NewJob(kind: order.kind.rawValue, payload: .object(payload), target: .node(node), objectKey: order.objectKey)
            guard let queued = try await store.enqueue([job]).first else { throw ControlError(.internal, "the store queued no instance.snapshot job") }
            return QueuedSnapshot(instance: instance, plan: plan, jobID: queued.id)
        }
    }

    /// The most bytes the copies of `disks` can take: a flattened copy holds at most the disk's
    /// virtual size (its size, else its base image's), so a snapshot is no way around the blob quota.
    func largestCopy(of disks: [InstanceDisk], instance: Instance) async throws -> Int64 {
        let access = try imageAccess()
        var total: Int64 = 0
        for disk in disks {
            var bytes: Int64 = 0
            if let size = disk.spec?.size {
                bytes = Int64(size).multipliedReportingOverflow(by: 1 << 30).overflow ? .max : Int64(size) << 30
            } else if let base = disk.spec?.base, let reference = try? ImageReference.parse(base, imageDownloadURL: settings.imageDownloadURL),
                let blob = try? await access.blob(for: reference, namespace: instance.namespace)
            {
                bytes = blob.info["virtual-size"]?.integerValue.map(Int64.init) ?? blob.size
            }
            total = total.addingReportingOverflow(bytes).overflow ? .max : total + bytes
        }
        return total
    }

    /// Waits (up to `timeout`, see ``waitForJob(_:timeout:poll:)``) until the snapshot's job has run: returns
    /// when it succeeded; a failed job is an error carrying the job's own, and one still queued or
    /// running at the deadline is not ready. A snapshot without a job returns at once.
    public func waitForSnapshot(_ snapshot: QueuedSnapshot, timeout: Duration) async throws {
        guard let id = snapshot.jobID else { return }
        let instance = snapshot.instance.uuid.lowercasedString
        guard let job = try await waitForJob(id, timeout: timeout) else {
            throw ControlError.notReady("snapshot job \(id) of instance \(instance) is still running after \(timeout.components.seconds) s")
        }
        if job.state == .failed {
            throw ControlError(.internal, "snapshot of instance \(instance) failed: \(job.lastError ?? "no reason recorded")")
        }
    }

    /// Points label `name` (in the instance's namespace) at the snapshot's copy of `device` (default:
    /// its first disk), as sf-client does after a snapshot with `--label_name`; with
    /// `deleteSnapshot` the snapshot artifact goes afterwards, and the label keeps the blob. The
    /// snapshot's job must have succeeded (``waitForSnapshot(_:timeout:)``).
    public func labelSnapshot(
        _ snapshot: QueuedSnapshot, name: String, device: String? = nil, deleteSnapshot: Bool = false, storage: BlobStorage
    ) async throws -> Artifact {
        guard let target = snapshot.plan.targets.first(where: { device == nil || $0.device == device }) else {
            throw ControlError.notFound("the snapshot of instance \(snapshot.instance.uuid.lowercasedString) copied no disk\(device.map { " \($0)" } ?? ""); there is nothing to label")
        }
        let label = try await setLabel(name: name, blobUUID: target.blobUUID, namespace: snapshot.instance.namespace, storage: storage)
        if deleteSnapshot { try await deleteArtifact(target.artifactUUID.lowercasedString, storage: storage) }
        return label
    }

    /// The versions of the instance's snapshot artifacts (in any state), artifacts oldest first and
    /// each one's versions oldest first: Shaken Fist's `GET /instances/<ref>/snapshot`. Each blob
    /// shows only the holders `namespace` sees.
    public func instanceSnapshots(_ reference: String, namespace: String? = nil) async throws -> [SnapshotVersion] {
        let instance = try await self.instance(reference, namespace: namespace)
        let prefix = "sf://instance/\(instance.uuid.lowercasedString)/"
        let records = try blobRecords()
        let artifacts = try await controlled { try await records.artifacts(namespace: instance.namespace) }
            .filter { $0.type == .snapshot && $0.namespace == instance.namespace && ($0.sourceURL?.hasPrefix(prefix) ?? false) }
        var versions: [SnapshotVersion] = []
        for artifact in artifacts {
            let device = String(artifact.sourceURL?.dropFirst(prefix.count) ?? "")
            for view in try await versionViews(of: artifact, namespace: namespace) {
                versions.append(SnapshotVersion(artifact: artifact, device: device, version: view.version, blob: view.blob))
            }
        }
        return versions
    }
}
