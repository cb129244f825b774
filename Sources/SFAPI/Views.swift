import Foundation
import SFControl
import SFStore
import SFSystem

// The objects on the wire, in the shapes of Shaken Fist's `external_view()` (the API reference's
// §4 and §12). Every documented key is always present, null when unknown: the client and sf-client
// index many of them without defaults. `version` is the object format version Shaken Fist sends.

/// A dynamic key, for the objects whose members are built field by field.
struct Key: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

extension KeyedEncodingContainer<Key> {
    /// Encodes `value`, writing `null` for nil (never leaving the key out).
    mutating func put<T: Encodable>(_ name: String, _ value: T?) throws {
        let key = Key(name)
        if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
    }
}

struct InstanceView: Encodable {
    let instance: Instance
    let interfaces: [InterfaceView]
    let metadata: [String: JSONValue]

    init(_ record: InstanceRecord) {
        instance = record.instance
        interfaces = record.interfaces.map { InterfaceView(interface: $0, metadata: record.interfaceMetadata[$0.uuid] ?? [:]) }
        metadata = record.metadata
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        let config = instance.config
        try c.put("uuid", instance.uuid.lowercasedString)
        try c.put("name", instance.name)
        try c.put("namespace", instance.namespace)
        try c.put("state", instance.state.rawValue)
        try c.put("metadata", metadata)
        try c.put("version", 14)
        try c.put("cpus", instance.cpus)
        try c.put("memory", instance.memory)
        try c.put("disk_spec", instance.diskSpec.map(DiskSpecView.init))
        try c.put("disks", [String]())
        try c.put("video", VideoView(video: instance.video))
        try c.put("ssh_key", config.sshKey)
        try c.put("user_data", config.userData)
        try c.put("uefi", config.uefi)
        try c.put("secure_boot", config.secureBoot)
        try c.put("nvram_template", config.nvramTemplate)
        try c.put("configdrive", config.configDrive.rawValue)
        try c.put("machine_type", "pc")
        try c.put("side_channels", config.sideChannels)
        // No in-guest agent answers yet; a string, since the client calls startswith on it.
        try c.put("agent_state", config.sideChannels.isEmpty ? nil : "not ready (no contact)")
        try c.put("agent_start_time", Double?.none)
        try c.put("agent_system_boot_time", Double?.none)
        try c.put("error_message", instance.errorMessage)
        try c.put("node", instance.node)
        try c.put("power_state", instance.powerState.rawValue)
        try c.put("console_port", Int?.none)
        try c.put("vdi_port", Int?.none)
        try c.put("vdi_tls_port", Int?.none)
        try c.put("interfaces", interfaces)
    }
}

struct DiskSpecView: Encodable {
    let spec: DiskSpec

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("base", spec.base)
        try c.put("bus", spec.bus)
        try c.put("size", spec.size)
        try c.put("type", spec.type.rawValue)
    }
}

struct VideoView: Encodable {
    let video: VideoSpec

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("model", video.model)
        try c.put("memory", video.memory)
        try c.put("vdi", video.vdi)
    }
}

struct InterfaceView: Encodable {
    let interface: Interface
    let metadata: [String: JSONValue]

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("uuid", interface.uuid.lowercasedString)
        try c.put("state", interface.state.rawValue)
        try c.put("metadata", metadata)
        try c.put("version", 3)
        try c.put("network_uuid", interface.networkUUID.lowercasedString)
        try c.put("instance_uuid", interface.instanceUUID.lowercasedString)
        try c.put("macaddr", interface.macaddr.description)
        try c.put("ipv4", interface.ipv4?.description)
        try c.put("order", interface.order)
        try c.put("model", interface.model)
        try c.put("floating", interface.floating?.description)
    }
}

struct NetworkView: Encodable {
    let network: Network
    let metadata: [String: JSONValue]

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("uuid", network.uuid.lowercasedString)
        try c.put("state", network.state.rawValue)
        try c.put("metadata", metadata)
        try c.put("version", 6)
        try c.put("name", network.name)
        try c.put("namespace", network.namespace)
        try c.put("netblock", network.netblock.description)
        try c.put("provide_dhcp", network.provideDHCP)
        try c.put("provide_nat", network.provideNAT)
        try c.put("provide_dns", false)
        try c.put("floating_gateway", network.floatingGateway?.description)
        try c.put("vxlan_id", network.vxid)
    }
}

struct EventView: Encodable {
    let event: Event

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("type", event.type.rawValue)
        try c.put("timestamp", event.timestamp.timeIntervalSince1970)
        try c.put("fqdn", event.fqdn)
        try c.put("duration", event.duration)
        try c.put("message", event.message)
        try c.put("extra", event.extra)
        try c.put("request_id", event.requestID)
    }
}

/// A blob: its record, what references it, and what `qemu-img info` said, merged in as Shaken
/// Fist merges it (keys with spaces included).
struct BlobWireView: Encodable {
    let view: BlobView
    let metadata: [String: JSONValue]

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        let blob = view.blob
        let own: Set = [
            "uuid", "state", "metadata", "version", "size", "modified", "fetched_at", "depends_on", "transcodes", "locations",
            "reference_count", "sha512", "last_used", "instances", "references_to", "references_from",
        ]
        for (key, value) in blob.info where !own.contains(key) { try c.put(key, value) }
        try c.put("uuid", blob.uuid.lowercasedString)
        try c.put("state", blob.state.rawValue)
        try c.put("metadata", metadata)
        try c.put("version", 6)
        try c.put("size", blob.size)
        try c.put("modified", blob.modified.timeIntervalSince1970)
        try c.put("fetched_at", blob.fetchedAt?.timeIntervalSince1970)
        try c.put("last_used", blob.lastUsed?.timeIntervalSince1970)
        try c.put("depends_on", view.referencesFrom.first { $0.relationship == .dependsOn }?.blobUUID.lowercasedString)
        let transcodes = Dictionary(
            view.referencesFrom.filter { $0.relationship == .transcode }.map { ("qcow2", $0.blobUUID.lowercasedString) },
            uniquingKeysWith: { first, _ in first })
        try c.put("transcodes", transcodes)
        try c.put("locations", blob.locations)
        try c.put("reference_count", view.referenceCount)
        try c.put("sha512", blob.sha512)
        // Always present: sf-client's blob list iterates it.
        try c.put("instances", view.instances)
        try c.put("references_to", BlobView.grouped(view.referencesTo))
        try c.put("references_from", BlobView.grouped(view.referencesFrom))
    }
}

/// An artifact: Shaken Fist's object with `index`, `blob_uuid` only when it has a version, and
/// `blobs` keyed by the version number as a decimal string.
struct ArtifactWireView: Encodable {
    let view: ArtifactView
    let metadata: [String: JSONValue]
    /// The instances booted from any of its versions, on `GET /artifacts/<ref>` only.
    let instances: [String]?

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        let artifact = view.artifact
        try c.put("uuid", artifact.uuid.lowercasedString)
        try c.put("state", artifact.state.rawValue)
        try c.put("metadata", metadata)
        try c.put("version", 6)
        try c.put("artifact_type", artifact.type.rawValue)
        try c.put("source_url", artifact.sourceURL)
        try c.put("max_versions", artifact.maxVersions)
        try c.put("namespace", artifact.namespace)
        try c.put("shared", Control.isSharedURLCache(artifact))
        try c.put("index", view.index)
        if let blob = view.blobUUID { try c.put("blob_uuid", blob.lowercasedString) }
        var blobs: [String: VersionSummary] = [:]
        for version in view.versions {
            blobs[String(version.version.index)] = VersionSummary(
                uuid: version.blob.blob.uuid.lowercasedString, size: version.blob.blob.size,
                referenceCount: version.blob.referenceCount, instances: version.blob.instances)
        }
        try c.put("blobs", blobs)
        if let instances { try c.put("instances", instances) }
    }

    struct VersionSummary: Encodable {
        let uuid: String
        let size: Int64
        let referenceCount: Int
        let instances: [String]

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.put("uuid", uuid)
            try c.put("size", size)
            try c.put("reference_count", referenceCount)
            try c.put("depends_on", String?.none)
            try c.put("instances", instances)
        }
    }
}

/// One version of an artifact: its blob object plus `index`.
struct ArtifactVersionWireView: Encodable {
    let version: ArtifactVersionView

    func encode(to encoder: any Encoder) throws {
        try BlobWireView(view: version.blob, metadata: [:]).encode(to: encoder)
        var c = encoder.container(keyedBy: Key.self)
        try c.put("index", version.version.index)
    }
}

struct UploadView: Encodable {
    let upload: Upload

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("uuid", upload.uuid.lowercasedString)
        try c.put("state", "created")
        try c.put("metadata", [String: JSONValue]())
        try c.put("version", 3)
        try c.put("node", upload.node)
        try c.put("created_at", upload.created.timeIntervalSince1970)
    }
}

struct NodeView: Encodable {
    let node: Node
    let metadata: [String: JSONValue]
    /// Whether the node checked in recently enough to be `created` rather than `missing`.
    let isLive: Bool

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("uuid", node.name)
        try c.put("state", isLive ? "created" : "missing")
        try c.put("metadata", metadata)
        try c.put("version", 7)
        try c.put("name", node.name)
        try c.put("ip", node.meshAddress?.description)
        try c.put("lastseen", node.lastSeen?.timeIntervalSince1970 ?? 0)
        try c.put("release", "sfnode")
        try c.put("is_etcd_master", node.roles.contains(.etcdMaster))
        try c.put("is_hypervisor", node.roles.contains(.hypervisor))
        try c.put("is_network_node", node.roles.contains(.networkNode))
        try c.put("is_eventlog_node", node.roles.contains(.eventlog))
        try c.put("is_cluster_maintainer", node.roles.contains(.networkNode))
    }
}

struct NamespaceView: Encodable {
    let namespace: Namespace
    let keys: [String]
    let metadata: [String: JSONValue]

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.put("name", namespace.name)
        try c.put("state", namespace.state.rawValue)
        try c.put("metadata", metadata)
        try c.put("version", 5)
        try c.put("keys", keys)
        try c.put("trust", ["full": [Caller.adminNamespace]])
    }
}
