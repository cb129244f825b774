import Foundation
import SFControl
import SFStore
import SFSystem

// The objects on the wire, in the shapes of Shaken Fist's `external_view()`. Every documented key is always present, null when unknown: the client and sf-client
// index many of them without defaults. `version` is the object format version Shaken Fist sends.

extension JSONWriter {
    /// The members every Shaken Fist object starts with: its identity, state, metadata and the
    /// version of its format.
    mutating func putHeader(uuid: String, state: String, metadata: [String: JSONValue], version: Int) {
        put("uuid", uuid)
        put("state", state)
        put("metadata", metadata)
        put("version", version)
    }
}

/// One of an instance's `disks`.
struct DiskView: WireValue {
    let disk: InstanceDisk

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.put("device", disk.device)
            c.put("bus", disk.bus.rawValue)
            c.put("size", disk.sizeGiB)
            c.put("blob_uuid", disk.blobUUID?.lowercasedString)
            c.put("snapshot_ignores", disk.snapshotIgnores)
        }
    }
}

struct InstanceView: WireValue {
    let instance: Instance
    let interfaces: [InterfaceView]
    let metadata: [String: JSONValue]
    /// ``Control/shownPowerState(of:missingNodes:)``.
    let powerState: String

    init(_ record: InstanceRecord, missingNodes: Set<String> = []) {
        instance = record.instance
        interfaces = record.interfaces.map { InterfaceView(interface: $0, metadata: record.interfaceMetadata[$0.uuid] ?? [:]) }
        metadata = record.metadata
        powerState = Control.shownPowerState(of: record.instance, missingNodes: missingNodes)
    }

    func write(to json: inout JSONWriter) {
        json.object { c in
            let config = instance.config
            c.put("uuid", instance.uuid.lowercasedString)
            c.put("name", instance.name)
            c.put("namespace", instance.namespace)
            c.put("state", instance.state.rawValue)
            c.put("metadata", metadata)
            c.put("version", 14)
            c.put("cpus", instance.cpus)
            c.put("memory", instance.memory)
            c.put("disk_spec", instance.diskSpec.map(DiskSpecView.init))
            c.put("disks", InstanceDisk.of(instance).map(DiskView.init))
            c.put("video", VideoView(video: instance.video))
            c.put("ssh_key", config.sshKey)
            c.put("user_data", config.userData)
            c.put("uefi", config.uefi)
            c.put("secure_boot", config.secureBoot)
            c.put("nvram_template", config.nvramTemplate)
            c.put("configdrive", config.configDrive.rawValue)
            c.put("machine_type", "pc")
            c.put("side_channels", config.sideChannels)
            // No in-guest agent answers yet; a string, since the client calls startswith on it.
            c.put("agent_state", config.sideChannels.isEmpty ? nil : "not ready (no contact)")
            c.put("agent_start_time", Double?.none)
            c.put("agent_system_boot_time", Double?.none)
            c.put("error_message", instance.errorMessage)
            c.put("node", instance.node)
            c.put("power_state", powerState)
            c.put("console_port", instance.consolePort)
            c.put("vdi_port", instance.vdiPort)
            c.put("vdi_tls_port", Int?.none)
            c.put("interfaces", interfaces)
        }
    }
}

struct DiskSpecView: WireValue {
    let spec: DiskSpec

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.put("base", spec.base)
            c.put("bus", spec.bus)
            c.put("size", spec.size)
            c.put("type", spec.type.rawValue)
        }
    }
}

struct VideoView: WireValue {
    let video: VideoSpec

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.put("model", video.model)
            c.put("memory", video.memory)
            c.put("vdi", video.vdi)
        }
    }
}

struct InterfaceView: WireValue {
    let interface: Interface
    let metadata: [String: JSONValue]

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.putHeader(uuid: interface.uuid.lowercasedString, state: interface.state.rawValue, metadata: metadata, version: 3)
            c.put("network_uuid", interface.networkUUID.lowercasedString)
            c.put("instance_uuid", interface.instanceUUID.lowercasedString)
            c.put("macaddr", interface.macaddr.description)
            c.put("ipv4", interface.ipv4?.description)
            c.put("order", interface.order)
            c.put("model", interface.model)
            c.put("floating", interface.floating?.description)
        }
    }
}

struct NetworkView: WireValue {
    let network: Network
    let metadata: [String: JSONValue]

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.putHeader(uuid: network.uuid.lowercasedString, state: network.state.rawValue, metadata: metadata, version: 6)
            c.put("name", network.name)
            c.put("namespace", network.namespace)
            c.put("netblock", network.netblock.description)
            c.put("provide_dhcp", network.provideDHCP)
            c.put("provide_nat", network.provideNAT)
            c.put("spoof_filter", network.spoofFilter)
            c.put("provide_dns", network.provideDNS)
            c.put("floating_gateway", network.floatingGateway?.description)
            c.put("vxlan_id", network.vxid)
        }
    }
}

struct EventView: WireValue {
    let event: Event

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.put("type", event.type.rawValue)
            c.put("timestamp", event.timestamp.timeIntervalSince1970)
            c.put("fqdn", event.fqdn)
            c.put("duration", event.duration)
            c.put("message", event.message)
            c.put("extra", event.extra)
            c.put("request_id", event.requestID)
        }
    }
}

/// A blob: its record, what references it, and what `qemu-img info` said, merged in as Shaken
/// Fist merges it (keys with spaces included). The view's references are already those the caller
/// sees; qemu's file names (host paths) are for the admin only.
struct BlobWireView: WireValue {
    let view: BlobView
    let metadata: [String: JSONValue]
    /// Whether the caller is the admin, who also sees where on the host the file is.
    let admin: Bool

    func write(to json: inout JSONWriter) {
        json.object { c in members(&c) }
    }

    /// Its members, for the objects that extend it.
    func members(_ c: inout JSONWriter) {
        let blob = view.blob
        let own: Set = [
            "uuid", "state", "metadata", "version", "size", "modified", "fetched_at", "depends_on", "transcodes", "locations",
            "reference_count", "sha512", "last_used", "instances", "references_to", "references_from",
        ]
        for (key, value) in blob.info where !own.contains(key) && (admin || !Self.isHostPath(key)) { c.put(key, value) }
        c.putHeader(uuid: blob.uuid.lowercasedString, state: blob.state.rawValue, metadata: metadata, version: 6)
        c.put("size", blob.size)
        c.put("modified", blob.modified.timeIntervalSince1970)
        c.put("fetched_at", blob.fetchedAt?.timeIntervalSince1970)
        c.put("last_used", blob.lastUsed?.timeIntervalSince1970)
        c.put("depends_on", view.referencesFrom.first { $0.relationship == .dependsOn }?.blobUUID.lowercasedString)
        let transcodes = Dictionary(
            view.referencesFrom.filter { $0.relationship == .transcode }.map { ("qcow2", $0.blobUUID.lowercasedString) },
            uniquingKeysWith: { first, _ in first })
        c.put("transcodes", transcodes)
        c.put("locations", blob.locations)
        c.put("reference_count", view.referenceCount)
        c.put("sha512", blob.sha512)
        // Always present: sf-client's blob list iterates it.
        c.put("instances", view.instances)
        c.put("references_to", BlobView.grouped(view.referencesTo))
        c.put("references_from", BlobView.grouped(view.referencesFrom))
    }

    /// qemu-img info's keys naming files on the host (`filename`, `backing-filename`,
    /// `full-backing-filename`, `data-file`).
    static func isHostPath(_ key: String) -> Bool { key.hasSuffix("filename") || key == "data-file" }
}

/// An artifact: Shaken Fist's object with `index`, `blob_uuid` only when it has a version, and
/// `blobs` keyed by the version number as a decimal string.
struct ArtifactWireView: WireValue {
    /// The artifact, its blobs showing only the instances the caller sees.
    let view: ArtifactView
    let metadata: [String: JSONValue]
    /// The instances booted from any of its versions, on `GET /artifacts/<ref>` only.
    let instances: [String]?
    /// The caller's namespace: anyone but the owner and the admin sees `source_url` without
    /// credentials or query (``URLRedaction``).
    let viewer: String

    /// `source_url` as the viewer may see it.
    var sourceURL: String? {
        let artifact = view.artifact
        guard let url = artifact.sourceURL else { return nil }
        return viewer == Namespace.system || viewer == artifact.namespace ? url : URLRedaction.redacted(url)
    }

    func write(to json: inout JSONWriter) {
        json.object { c in
            let artifact = view.artifact
            c.putHeader(uuid: artifact.uuid.lowercasedString, state: artifact.state.rawValue, metadata: metadata, version: 6)
            c.put("artifact_type", artifact.type.rawValue)
            c.put("source_url", sourceURL)
            c.put("max_versions", artifact.maxVersions)
            c.put("namespace", artifact.namespace)
            c.put("shared", artifact.shared)
            c.put("index", view.index)
            if let blob = view.blobUUID { c.put("blob_uuid", blob.lowercasedString) }
            var blobs: [String: VersionSummary] = [:]
            for version in view.versions {
                blobs[String(version.version.index)] = VersionSummary(
                    uuid: version.blob.blob.uuid.lowercasedString, size: version.blob.blob.size,
                    referenceCount: version.blob.referenceCount, instances: version.blob.instances)
            }
            c.put("blobs", blobs)
            if let instances { c.put("instances", instances) }
        }
    }

    struct VersionSummary: WireValue {
        let uuid: String
        let size: Int64
        let referenceCount: Int
        let instances: [String]

        func write(to json: inout JSONWriter) {
            json.object { c in
                c.put("uuid", uuid)
                c.put("size", size)
                c.put("reference_count", referenceCount)
                c.put("depends_on", String?.none)
                c.put("instances", instances)
            }
        }
    }
}

/// One version of an artifact: its blob object plus `index`.
struct ArtifactVersionWireView: WireValue {
    let version: ArtifactVersionView
    let admin: Bool

    func write(to json: inout JSONWriter) {
        json.object { c in
            BlobWireView(view: version.blob, metadata: [:], admin: admin).members(&c)
            c.put("index", version.version.index)
        }
    }
}

struct UploadView: WireValue {
    let upload: Upload

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.putHeader(uuid: upload.uuid.lowercasedString, state: "created", metadata: [:], version: 3)
            c.put("node", upload.node)
            c.put("created_at", upload.created.timeIntervalSince1970)
        }
    }
}

struct NodeView: WireValue {
    let node: Node
    let metadata: [String: JSONValue]
    /// `created`, `missing` or `deleted` (``Control/state(of:now:)``).
    let state: String

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.putHeader(uuid: node.name, state: state, metadata: metadata, version: 7)
            c.put("name", node.name)
            c.put("ip", node.meshAddress?.description)
            c.put("lastseen", node.lastSeen?.timeIntervalSince1970 ?? 0)
            c.put("release", "sfnode")
            c.put("is_etcd_master", node.roles.contains(.etcdMaster))
            c.put("is_hypervisor", node.roles.contains(.hypervisor))
            c.put("is_network_node", node.roles.contains(.networkNode))
            c.put("is_eventlog_node", node.roles.contains(.eventlog))
            c.put("is_cluster_maintainer", node.roles.contains(.networkNode))
        }
    }
}

/// `GET /admin/locks`: an object keyed by lock, each `{"id", "line", "node", "operation", "pid"}`
/// as sf-client's `admin lock list` reads them.
struct LeasesView: WireValue {
    let leases: [Lease]

    func write(to json: inout JSONWriter) {
        json.object { c in
            for lease in leases {
                c.put(lease.key, LeaseView(lease: lease))
            }
        }
    }

    private struct LeaseView: WireValue {
        let lease: Lease

        func write(to json: inout JSONWriter) {
            json.object { c in
                c.put("id", lease.id)
                c.put("line", "sfnode job \(lease.id)")
                c.put("node", lease.node)
                c.put("operation", lease.operation)
                c.put("pid", lease.pid)
                c.put("expires", lease.expires?.timeIntervalSince1970)
            }
        }
    }
}

struct NamespaceView: WireValue {
    let namespace: Namespace
    let keys: [String]
    let metadata: [String: JSONValue]
    /// The namespaces it trusts, `system` first.
    let trust: [String]

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.put("name", namespace.name)
            c.put("state", namespace.state.rawValue)
            c.put("metadata", metadata)
            c.put("version", 5)
            c.put("keys", keys)
            c.put("trust", ["full": trust])
        }
    }
}
