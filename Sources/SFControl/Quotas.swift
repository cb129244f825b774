import Foundation
import SFStore

/// What one namespace may hold and queue at once. Every tenant is hostile: without these, one
/// namespace fills the disk, the floating range or the job queue that every other one shares.
/// The admin namespace (``Namespace/system``) is exempt. Each is a setting (`SFNODE_QUOTA_…`).
public struct NamespaceQuotas: Sendable, Equatable {
    /// Live instances.
    public var instances = 100
    /// vCPUs over the live instances.
    public var vcpus = 400
    /// Memory over the live instances, in MiB.
    public var memoryMiB = 1 << 20
    /// Disk over the live instances' disks, in GiB (a disk without a size counts as 0: its size is
    /// its base image's, which the blob quota already counts).
    public var diskGiB = 10_240
    /// Bytes of blob data the namespace's artifacts hold plus what its uploads hold so far.
    public var blobBytes: Int64 = 500 << 30
    /// Uploads started and not yet made artifacts.
    public var pendingUploads = 10
    /// The largest single upload, in bytes.
    public var uploadBytes: Int64 = 100 << 30
    /// Live networks.
    public var networks = 50
    /// Floating addresses: floating interfaces, NAT networks (each takes a floating gateway) and
    /// floats still queued.
    public var floatingAddresses = 50
    /// Jobs queued and not yet started for the namespace's objects.
    public var queuedJobs = 200
    /// Metadata keys on one object.
    public var metadataKeys = 256
    /// Namespaces one namespace trusts.
    public var trusts = 64
    /// Versions one snapshot artifact may keep: each is a whole disk (the bytes quota counts them too).
    public var snapshotVersions = 100
    /// Requests of one namespace waiting at once for their jobs (power operations, labelled snapshots).
    public var waitingRequests = 16

    public init() {}
}

/// Why a quota refused a request (the API answers 403, 413 for bytes, 429 for the queue).
extension ControlError {
    static func quota(_ namespace: String, _ what: String, have: Int, asking: Int, limit: Int, setting: String) -> ControlError {
        ControlError(
            .quotaExceeded,
            "namespace \(namespace) would have \(have &+ asking) \(what) (has \(have), asks for \(asking)); its quota is \(limit) (\(setting))")
    }
}

extension Control {
    /// The requests' own bounds that do not depend on the namespace (L3): metadata given at create
    /// obeys the limits of metadata set later, and user_data's text is bounded before it is decoded.
    func checkCreateLimits(_ request: InstanceRequest) throws {
        guard request.metadata.count <= settings.quotas.metadataKeys else {
            throw ControlError.invalid("metadata has \(request.metadata.count) keys; an object has at most \(settings.quotas.metadataKeys) (SFNODE_QUOTA_METADATA_KEYS)")
        }
        for (key, value) in request.metadata {
            try checkMetadataKey(key)
            try Self.checkMetadataValue(key, value)
        }
        if let userData = request.config.userData {
            // base64 of the largest user data, with room for line breaks every 76 characters.
            let limit = (InstanceLimits.userDataBytes + 2) / 3 * 4 * 80 / 76 + 4
            guard userData.utf8.count <= limit else {
                throw ControlError.invalid("user_data is \(userData.utf8.count) bytes of base64; at most \(limit) (\(InstanceLimits.userDataBytes) bytes decoded) are allowed")
            }
        }
    }

    /// The largest metadata value, as JSON text.
    public static let metadataValueLimit = 65_536

    static func checkMetadataValue(_ key: String, _ value: JSONValue) throws(ControlError) {
        let size = (try? value.jsonText().utf8.count) ?? 0
        guard size <= metadataValueLimit else {
            throw .invalid("metadata value for \"\(key)\" is \(size) bytes; the limit is \(metadataValueLimit)")
        }
    }

    /// Refuses a new metadata key past ``NamespaceQuotas/metadataKeys`` (replacing a key is fine).
    func checkMetadataCount(_ object: ObjectKey, key: String) async throws {
        let existing = try await metadata(object)
        guard existing[key] != nil || existing.count < settings.quotas.metadataKeys else {
            throw ControlError(
                .quotaExceeded,
                "\(object) has \(existing.count) metadata keys; the limit is \(settings.quotas.metadataKeys) (SFNODE_QUOTA_METADATA_KEYS)")
        }
    }

    /// Refuses an instance the namespace has no room for: instances, vCPUs, memory, disk and the
    /// floating addresses it asks for.
    func checkInstanceQuota(_ request: InstanceRequest, namespace: String, floats: Int) async throws {
        try checkCreateLimits(request)
        guard namespace != Namespace.system else { return }
        let quotas = settings.quotas
        let live = try await controlled { try await store.instanceRecords(namespace: namespace) }.filter { $0.instance.state != .deleted }
        func check(_ what: String, _ have: Int, _ asking: Int, _ limit: Int, _ setting: String) throws {
            let (total, overflow) = have.addingReportingOverflow(asking)
            if overflow || total > limit { throw ControlError.quota(namespace, what, have: have, asking: asking, limit: limit, setting: setting) }
        }
        try check("instances", live.count, 1, quotas.instances, "SFNODE_QUOTA_INSTANCES")
        try check("vCPUs", live.reduce(0) { $0 &+ $1.instance.cpus }, request.cpus, quotas.vcpus, "SFNODE_QUOTA_VCPUS")
        try check("MiB of memory", live.reduce(0) { $0 &+ $1.instance.memory }, request.memoryMiB, quotas.memoryMiB, "SFNODE_QUOTA_MEMORY_GIB")
        let disk = { (disks: [DiskSpec]) -> Int in disks.reduce(0) { $0 &+ ($1.size ?? 0) } }
        try check("GiB of disk", live.reduce(0) { $0 &+ disk($1.instance.diskSpec) }, disk(request.disks), quotas.diskGiB, "SFNODE_QUOTA_DISK_GIB")
        if floats > 0 {
            try check("floating addresses", try await floatingAddresses(namespace), floats, quotas.floatingAddresses, "SFNODE_QUOTA_FLOATING_ADDRESSES")
        }
    }

    /// Refuses a network the namespace has no room for (and its floating gateway, for NAT).
    func checkNetworkQuota(namespace: String, provideNAT: Bool) async throws {
        guard namespace != Namespace.system else { return }
        let quotas = settings.quotas
        let networks = try await controlled { try await store.networks(namespace: namespace) }.filter { $0.state != .deleted }
        guard networks.count < quotas.networks else {
            throw ControlError.quota(namespace, "networks", have: networks.count, asking: 1, limit: quotas.networks, setting: "SFNODE_QUOTA_NETWORKS")
        }
        if provideNAT {
            let floating = try await floatingAddresses(namespace)
            guard floating < quotas.floatingAddresses else {
                throw ControlError.quota(
                    namespace, "floating addresses", have: floating, asking: 1, limit: quotas.floatingAddresses,
                    setting: "SFNODE_QUOTA_FLOATING_ADDRESSES")
            }
        }
    }

    /// Refuses a new upload past the pending-upload quota, or when the namespace's blob bytes are
    /// already at their quota.
    func checkUploadQuota(namespace: String) async throws {
        guard namespace != Namespace.system else { return }
        let quotas = settings.quotas
        let records = try blobRecords()
        let pending = try await controlled { try await records.uploads() }.filter { $0.namespace.utf8.elementsEqual(namespace.utf8) }
        guard pending.count < quotas.pendingUploads else {
            throw ControlError.quota(
                namespace, "pending uploads", have: pending.count, asking: 1, limit: quotas.pendingUploads, setting: "SFNODE_QUOTA_PENDING_UPLOADS")
        }
        try await checkBlobBytes(namespace: namespace, adding: 0)
    }

    /// Refuses `count` more bytes for `upload`: past the per-upload cap (for everyone, the admin
    /// too: it protects the disk), or past the namespace's blob bytes.
    func checkUploadGrowth(_ upload: Upload, adding count: Int) async throws {
        let quotas = settings.quotas
        let (total, overflow) = upload.received.addingReportingOverflow(Int64(count))
        guard !overflow, total <= quotas.uploadBytes else {
            throw ControlError(
                .tooLarge,
                "upload \(upload.uuid.lowercasedString) would hold \(upload.received) + \(count) bytes; one upload holds at most \(quotas.uploadBytes) bytes (SFNODE_UPLOAD_MAX_GIB)")
        }
        guard upload.namespace != Namespace.system else { return }
        try await checkBlobBytes(namespace: upload.namespace, adding: Int64(count))
    }

    /// Refuses `adding` more bytes when the namespace's artifacts and uploads already hold its quota.
    func checkBlobBytes(namespace: String, adding: Int64) async throws {
        let limit = settings.quotas.blobBytes
        let records = try blobRecords()
        let held: Int64 = try await controlled {
            var total: Int64 = 0
            for upload in try await records.uploads() where upload.namespace.utf8.elementsEqual(namespace.utf8) {
                total = total.addingReportingOverflow(upload.received).partialValue
            }
            var blobs = Set<UUID>()
            for artifact in try await records.artifacts(namespace: namespace)
            where artifact.state != .deleted && artifact.namespace.utf8.elementsEqual(namespace.utf8) {
                for version in try await records.artifactVersions(artifactUUID: artifact.uuid) where blobs.insert(version.blobUUID).inserted {
                    total = total.addingReportingOverflow(try await records.blob(uuid: version.blobUUID).size).partialValue
                }
            }
            return total
        }
        let (total, overflow) = held.addingReportingOverflow(adding)
        guard !overflow, total <= limit else {
            throw ControlError(
                .tooLarge,
                "namespace \(namespace) would hold \(held) + \(adding) bytes of uploads and artifacts; its quota is \(limit) bytes (SFNODE_QUOTA_BLOB_GIB)")
        }
    }

    /// The namespace's floating addresses: floating interfaces, NAT networks' gateways, and floats
    /// still queued.
    private func floatingAddresses(_ namespace: String) async throws -> Int {
        try await controlled {
            let records = try await store.instanceRecords(namespace: namespace).filter { $0.instance.state != .deleted }
            let interfaces = records.flatMap(\.interfaces).filter { $0.state != .deleted }
            let floating = interfaces.filter { $0.floating != nil }.count
            let gateways = try await store.networks(namespace: namespace).filter { $0.state != .deleted && $0.provideNAT }.count
            let keys = Set(interfaces.filter { $0.floating == nil }.map { ObjectKey.interface($0.uuid).text })
            let queuedFloats = Set(
                try await store.jobs(states: [.queued], limit: Self.queueScanLimit)
                    .filter { $0.kind == JobKind.interfaceFloat.rawValue }.compactMap(\.objectKey).filter(keys.contains)
            ).count
            return floating + gateways + queuedFloats
        }
    }

    /// How many queued jobs a quota check reads at most.
    static let queueScanLimit = 10_000

    /// What ``admitJob(_:)`` decided.
    enum JobAdmission {
        /// Queue it.
        case admitted
        /// The newest queued job of the same object is already this kind; it stands for this one.
        case coalesced(into: Job)
    }

    /// Admits `order` to the queue for its object's namespace: coalesced when the newest queued job
    /// of the same object is already this kind (a second reboot queued behind a first changes
    /// nothing, so it is coalesced into it); a ``ControlError/Code/tooBusy`` error when the
    /// namespace already has its quota of queued jobs. The admin is never refused.
    func admitJob(_ order: JobOrder) async throws -> JobAdmission {
        guard let key = order.objectKey else { return .admitted }
        let (namespace, keys) = try await namespaceKeys(of: order.subject)
        let queued = try await controlled { try await store.jobs(states: [.queued], limit: Self.queueScanLimit) }
        // Newest first: the first of this object is its newest queued job.
        if let newest = queued.first(where: { $0.objectKey == key }), newest.kind == order.kind.rawValue { return .coalesced(into: newest) }
        guard namespace != Namespace.system else { return .admitted }
        let mine = queued.filter { $0.objectKey.map(keys.contains) ?? false }.count
        guard mine < settings.quotas.queuedJobs else {
            throw ControlError(
                .tooBusy,
                "namespace \(namespace) already has \(mine) jobs queued; its quota is \(settings.quotas.queuedJobs) (SFNODE_QUOTA_QUEUED_JOBS): wait for them to run")
        }
        return .admitted
    }

    /// The namespace the subject belongs to and the object keys of all its instances, interfaces
    /// and networks.
    private func namespaceKeys(of subject: JobOrder.Reference) async throws -> (String, Set<String>) {
        try await controlled {
            let namespace: String
            switch subject {
            case .instance(let uuid): namespace = try await store.instance(uuid: uuid).namespace
            case .interface(let uuid): namespace = try await store.instance(uuid: try await store.interface(uuid: uuid).instanceUUID).namespace
            case .network(let uuid): namespace = try await store.network(uuid: uuid).namespace
            case .artifact(let uuid): namespace = try await blobRecords().artifact(uuid: uuid).namespace
            case .namespace(let name): namespace = name
            }
            if namespace == Namespace.system { return (namespace, []) }
            var keys = Set<String>()
            for record in try await store.instanceRecords(namespace: namespace) {
                keys.insert(ObjectKey(.instance, record.instance.uuid).text)
                for interface in record.interfaces { keys.insert(ObjectKey.interface(interface.uuid).text) }
            }
            for network in try await store.networks(namespace: namespace) { keys.insert(ObjectKey(.network, network.uuid).text) }
            return (namespace, keys)
        }
    }
}
