import Foundation
import SFSystem

/// A hypervisor or network node, as it checks in.
public struct Node: Codable, Hashable, Sendable {
    /// The node's name (its fqdn in Shaken Fist), unique.
    public var name: String
    /// What the node does, such as ``NodeRole/hypervisor`` and ``NodeRole/networkNode``.
    public var roles: Set<NodeRole>
    /// When the node last checked in, if ever.
    public var lastSeen: Date?
    /// The node's address on the mesh (the VXLAN underlay), which other nodes put in their flood
    /// lists; nil for a node that has not said (a single all-in-one node needs none).
    public var meshAddress: IPv4Address?
    /// What the node can give instances, as it last said; nil for a node that has not said.
    public var capacity: NodeCapacity?
    /// When an operator deleted the node (said it is gone for good); nil for a node in service.
    /// A deleted node stays deleted, whatever it says when it checks in, as in Shaken Fist.
    public var deleted: Date?

    public init(
        name: String, roles: Set<NodeRole>, lastSeen: Date? = nil, meshAddress: IPv4Address? = nil,
        capacity: NodeCapacity? = nil, deleted: Date? = nil
    ) {
        self.name = name
        self.roles = roles
        self.lastSeen = lastSeen
        self.meshAddress = meshAddress
        self.capacity = capacity
        self.deleted = deleted
    }

    enum CodingKeys: String, CodingKey {
        case name, roles, capacity, deleted
        case lastSeen = "last_seen"
        case meshAddress = "mesh_address"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        roles = try c.decode(Set<NodeRole>.self, forKey: .roles)
        lastSeen = try c.decodeIfPresent(Date.self, forKey: .lastSeen)
        meshAddress = try c.decodeIfPresent(String.self, forKey: .meshAddress).map { text in
            guard let address = IPv4Address(text) else {
                throw DecodingError.dataCorruptedError(forKey: .meshAddress, in: c, debugDescription: "'\(text)' is not an IPv4 address")
            }
            return address
        }
        capacity = try c.decodeIfPresent(NodeCapacity.self, forKey: .capacity)
        deleted = try c.decodeIfPresent(Date.self, forKey: .deleted)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(roles.sorted { $0.rawValue < $1.rawValue }, forKey: .roles)
        try c.encodeIfPresent(lastSeen, forKey: .lastSeen)
        try c.encodeIfPresent(meshAddress?.description, forKey: .meshAddress)
        try c.encodeIfPresent(capacity, forKey: .capacity)
        try c.encodeIfPresent(deleted, forKey: .deleted)
    }
}

/// What a hypervisor has for instances: placement compares it with what its instances ask for.
public struct NodeCapacity: Codable, Hashable, Sendable {
    /// Physical CPU threads.
    public var cpus: Int
    /// Memory in MiB.
    public var memoryMiB: Int
    /// Space for disks under the storage path, in GiB (total, not free: placement counts what its
    /// instances' disks may grow to).
    public var diskGiB: Int

    public init(cpus: Int, memoryMiB: Int, diskGiB: Int) {
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.diskGiB = diskGiB
    }

    enum CodingKeys: String, CodingKey {
        case cpus
        case memoryMiB = "memory_mib"
        case diskGiB = "disk_gib"
    }
}

/// A role a node plays; the raw values are Shaken Fist's role names.
public enum NodeRole: String, Codable, Hashable, Sendable, CaseIterable {
    case hypervisor
    case networkNode = "network_node"
    case eventlog
    case etcdMaster = "etcd_master"
}

/// The lifecycle of a network.
public enum NetworkState: String, Codable, Hashable, Sendable, CaseIterable {
    case initial
    case created
    /// Waiting for its interfaces to go before it can be removed.
    case deleteWait = "delete-wait"
    case deleted
    case error

    /// Whether `self` → `next` is allowed. Writing the current state again is allowed, so that
    /// handlers, which run at least once, can repeat themselves.
    public func canTransition(to next: NetworkState) -> Bool {
        if next == self { return true }
        switch self {
        case .initial: return [.created, .deleteWait, .deleted, .error].contains(next)
        case .created: return [.deleteWait, .deleted, .error].contains(next)
        case .deleteWait: return [.deleted, .error].contains(next)
        case .error: return [.deleteWait, .deleted].contains(next)
        case .deleted: return false
        }
    }
}

/// A virtual network: one VXLAN, one bridge per node, optionally DHCP and NAT on the network node.
public struct Network: Codable, Hashable, Sendable {
    public var uuid: UUID
    public var name: String
    public var namespace: String
    /// The network's address block, such as 10.0.0.0/24 (host bits clear).
    public var netblock: IPv4Prefix
    public var provideDHCP: Bool
    public var provideNAT: Bool
    /// The VXLAN id, 1...16777215, unique across all networks in the store (deleted ones keep theirs
    /// until retention prunes them, days later, so a late packet can never reach a new network).
    public var vxid: Int
    public var state: NetworkState
    /// When `state` last changed.
    public var stateUpdated: Date
    /// The network's outside address on the network node, nil until NAT is deployed.
    public var floatingGateway: IPv4Address?
    /// Whether its guests' taps drop frames from any MAC or address but the guest's own (on unless
    /// the admin turned it off when creating the network).
    public var spoofFilter: Bool
    /// Whether the network's dnsmasq answers DNS on the router address for its instances' names.
    public var provideDNS: Bool

    public init(
        uuid: UUID, name: String, namespace: String, netblock: IPv4Prefix, provideDHCP: Bool, provideNAT: Bool,
        vxid: Int, state: NetworkState, stateUpdated: Date, floatingGateway: IPv4Address?, spoofFilter: Bool = true,
        provideDNS: Bool = false
    ) {
        self.spoofFilter = spoofFilter
        self.provideDNS = provideDNS
        self.uuid = uuid
        self.name = name
        self.namespace = namespace
        self.netblock = netblock
        self.provideDHCP = provideDHCP
        self.provideNAT = provideNAT
        self.vxid = vxid
        self.state = state
        self.stateUpdated = stateUpdated
        self.floatingGateway = floatingGateway
    }

    enum CodingKeys: String, CodingKey {
        case uuid, name, namespace, netblock, state
        case provideDHCP = "provide_dhcp"
        case provideNAT = "provide_nat"
        case vxid = "vxlan_id"
        case stateUpdated = "state_updated"
        case floatingGateway = "floating_gateway"
        case spoofFilter = "spoof_filter"
        case provideDNS = "provide_dns"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        uuid = try c.decode(UUID.self, forKey: .uuid)
        name = try c.decode(String.self, forKey: .name)
        namespace = try c.decode(String.self, forKey: .namespace)
        netblock = try IPv4Prefix.parse(try c.decode(String.self, forKey: .netblock))
        provideDHCP = try c.decode(Bool.self, forKey: .provideDHCP)
        provideNAT = try c.decode(Bool.self, forKey: .provideNAT)
        vxid = try c.decode(Int.self, forKey: .vxid)
        state = try c.decode(NetworkState.self, forKey: .state)
        stateUpdated = try c.decode(Date.self, forKey: .stateUpdated)
        floatingGateway = try c.decodeIfPresent(String.self, forKey: .floatingGateway).flatMap(IPv4Address.init)
        spoofFilter = try c.decodeIfPresent(Bool.self, forKey: .spoofFilter) ?? true
        provideDNS = try c.decodeIfPresent(Bool.self, forKey: .provideDNS) ?? false
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(uuid, forKey: .uuid)
        try c.encode(name, forKey: .name)
        try c.encode(namespace, forKey: .namespace)
        try c.encode(netblock.description, forKey: .netblock)
        try c.encode(provideDHCP, forKey: .provideDHCP)
        try c.encode(provideNAT, forKey: .provideNAT)
        try c.encode(vxid, forKey: .vxid)
        try c.encode(state, forKey: .state)
        try c.encode(stateUpdated, forKey: .stateUpdated)
        try c.encode(floatingGateway?.description, forKey: .floatingGateway)
        try c.encode(spoofFilter, forKey: .spoofFilter)
        try c.encode(provideDNS, forKey: .provideDNS)
    }
}

/// The instance state machine, Shaken Fist's.
public enum InstanceState: String, Codable, Hashable, Sendable, CaseIterable {
    case initial
    case preflight
    case creating
    case created
    case deleteWait = "delete-wait"
    case deleted
    case initialError = "initial-error"
    case preflightError = "preflight-error"
    case creatingError = "creating-error"
    case createdError = "created-error"
    case deleteWaitError = "delete-wait-error"
    case error

    /// The `<state>-error` state for this state, or nil when it has none (the error states
    /// themselves and `deleted`).
    public var errorState: InstanceState? {
        switch self {
        case .initial: return .initialError
        case .preflight: return .preflightError
        case .creating: return .creatingError
        case .created: return .createdError
        case .deleteWait: return .deleteWaitError
        default: return nil
        }
    }

    /// Whether this is one of the `<state>-error` states or `error`.
    public var isError: Bool { rawValue.hasSuffix("error") }

    /// Whether `self` → `next` is allowed:
    /// `initial → preflight → creating → created`; any of those → `delete-wait`, `deleted` or its
    /// own `<state>-error`; `delete-wait` → `deleted` or `delete-wait-error`; every `*-error` → `error`;
    /// `error` → `delete-wait` or `deleted`; `deleted` is terminal. Writing the current state again
    /// is allowed (a no-op), because job handlers run at least once and must be repeatable.
    public func canTransition(to next: InstanceState) -> Bool {
        if next == self { return true }
        switch self {
        case .initial, .preflight, .creating, .created:
            let forward: [InstanceState: InstanceState] = [.initial: .preflight, .preflight: .creating, .creating: .created]
            return next == forward[self] || next == .deleteWait || next == .deleted || next == errorState
        case .deleteWait: return next == .deleted || next == .deleteWaitError
        case .initialError, .preflightError, .creatingError, .createdError, .deleteWaitError: return next == .error
        case .error: return next == .deleteWait || next == .deleted
        case .deleted: return false
        }
    }
}

/// What the hypervisor last reported about an instance's domain.
public enum PowerState: String, Codable, Hashable, Sendable, CaseIterable {
    /// Set at creation, before the hypervisor has said anything.
    case initial
    case on
    case off
    case paused
    case crashed
}

/// One requested disk of an instance, echoing the API's `disk_spec` entries.
public struct DiskSpec: Codable, Hashable, Sendable {
    /// What the disk is.
    public enum Kind: String, Codable, Hashable, Sendable {
        case disk
        case cdrom
    }

    /// The base image (a path, blob or label) the disk starts from; nil for a blank disk.
    public var base: String?
    /// The size in GiB; for a based disk, nil keeps the base's size.
    public var size: Int?
    /// The bus, such as "virtio" or "ide"; nil lets the hypervisor choose.
    public var bus: String?
    public var type: Kind

    public init(base: String? = nil, size: Int? = nil, bus: String? = nil, type: Kind = .disk) {
        self.base = base
        self.size = size
        self.bus = bus
        self.type = type
    }
}

/// An instance's video device (`video`).
public struct VideoSpec: Codable, Hashable, Sendable {
    public var model: String
    /// Video memory in KiB.
    public var memory: Int
    public var vdi: String?

    public init(model: String = "cirrus", memory: Int = 16384, vdi: String? = "spice") {
        self.model = model
        self.memory = memory
        self.vdi = vdi
    }

    /// The protocol its display speaks: `vnc` when `vdi` asks for it, else `spice` (Shaken Fist's
    /// default, and what `spiceconcurrent` is); nil without a video device.
    public var displayProtocol: String? {
        model == "none" ? nil : (vdi?.hasPrefix("vnc") == true ? "vnc" : "spice")
    }
}

/// A virtual machine.
public struct Instance: Codable, Hashable, Sendable {
    public var uuid: UUID
    public var name: String
    public var namespace: String
    public var cpus: Int
    /// Memory in MiB.
    public var memory: Int
    public var diskSpec: [DiskSpec]
    public var video: VideoSpec
    /// The node the instance is placed on, nil until placed.
    public var node: String?
    public var state: InstanceState
    public var stateUpdated: Date
    public var powerState: PowerState
    public var powerStatePrevious: PowerState?
    public var powerStateUpdated: Date
    public var errorMessage: String?
    /// What the guest is told at boot (ssh key, user data, config drive) and machine options.
    public var config: InstanceConfig
    /// The TCP port of its serial console (telnet) on its node, once the node gave it one.
    public var consolePort: Int?
    /// The TCP port of its display (VNC or SPICE) on its node; nil without a video device.
    public var vdiPort: Int?

    /// A new instance; `state` starts at `initial` and `power_state` at `initial`, as in Shaken Fist.
    public init(
        uuid: UUID = UUID(), name: String, namespace: String, cpus: Int, memory: Int, diskSpec: [DiskSpec],
        video: VideoSpec = VideoSpec(), node: String? = nil, config: InstanceConfig = InstanceConfig(),
        now: Date = Date.storableNow()
    ) {
        self.uuid = uuid
        self.name = name
        self.namespace = namespace
        self.cpus = cpus
        self.memory = memory
        self.diskSpec = diskSpec
        self.video = video
        self.node = node
        self.state = .initial
        self.stateUpdated = now
        self.powerState = .initial
        self.powerStatePrevious = nil
        self.powerStateUpdated = now
        self.errorMessage = nil
        self.config = config
    }

    enum CodingKeys: String, CodingKey {
        case uuid, name, namespace, cpus, memory, video, node, state, config
        case diskSpec = "disk_spec"
        case stateUpdated = "state_updated"
        case powerState = "power_state"
        case powerStatePrevious = "power_state_previous"
        case powerStateUpdated = "power_state_updated"
        case errorMessage = "error_message"
        case consolePort = "console_port"
        case vdiPort = "vdi_port"
    }
}

/// The lifecycle of a network interface.
public enum InterfaceState: String, Codable, Hashable, Sendable, CaseIterable {
    case initial
    case created
    case deleted
    case error
}

/// An instance's interface on a network.
public struct Interface: Codable, Hashable, Sendable {
    public var uuid: UUID
    public var instanceUUID: UUID
    public var networkUUID: UUID
    public var macaddr: MACAddress
    /// The interface's address in its network; nil when the request asked for no address.
    public var ipv4: IPv4Address?
    /// 0-based, in request order.
    public var order: Int
    /// The NIC model, such as "virtio".
    public var model: String
    /// The floating (outside) address routed to `ipv4`, nil unless floated.
    public var floating: IPv4Address?
    public var state: InterfaceState

    public init(
        uuid: UUID, instanceUUID: UUID, networkUUID: UUID, macaddr: MACAddress, ipv4: IPv4Address?, order: Int,
        model: String, floating: IPv4Address?, state: InterfaceState
    ) {
        self.uuid = uuid
        self.instanceUUID = instanceUUID
        self.networkUUID = networkUUID
        self.macaddr = macaddr
        self.ipv4 = ipv4
        self.order = order
        self.model = model
        self.floating = floating
        self.state = state
    }

    enum CodingKeys: String, CodingKey {
        case uuid, macaddr, ipv4, order, model, floating, state
        case instanceUUID = "instance_uuid"
        case networkUUID = "network_uuid"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        uuid = try c.decode(UUID.self, forKey: .uuid)
        instanceUUID = try c.decode(UUID.self, forKey: .instanceUUID)
        networkUUID = try c.decode(UUID.self, forKey: .networkUUID)
        let mac = try c.decode(String.self, forKey: .macaddr)
        guard let parsed = MACAddress(mac) else {
            throw DecodingError.dataCorruptedError(forKey: .macaddr, in: c, debugDescription: "'\(mac)' is not a MAC address")
        }
        macaddr = parsed
        ipv4 = try c.decodeIfPresent(String.self, forKey: .ipv4).flatMap(IPv4Address.init)
        order = try c.decode(Int.self, forKey: .order)
        model = try c.decode(String.self, forKey: .model)
        floating = try c.decodeIfPresent(String.self, forKey: .floating).flatMap(IPv4Address.init)
        state = try c.decode(InterfaceState.self, forKey: .state)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(uuid, forKey: .uuid)
        try c.encode(instanceUUID, forKey: .instanceUUID)
        try c.encode(networkUUID, forKey: .networkUUID)
        try c.encode(macaddr.description, forKey: .macaddr)
        try c.encode(ipv4?.description, forKey: .ipv4)
        try c.encode(order, forKey: .order)
        try c.encode(model, forKey: .model)
        try c.encode(floating?.description, forKey: .floating)
        try c.encode(state, forKey: .state)
    }
}

/// How an interface gets its address in its network.
public enum AddressRequest: Hashable, Sendable {
    /// The lowest free address.
    case any
    /// Exactly this address, or a clear refusal.
    case specific(IPv4Address)
    /// No address (the API's `address: "none"`).
    case none
}

/// One metadata entry of an object.
public struct Metadata: Codable, Hashable, Sendable {
    public var objectType: String
    public var objectUUID: String
    public var key: String
    public var value: JSONValue

    public init(objectType: String, objectUUID: String, key: String, value: JSONValue) {
        self.objectType = objectType
        self.objectUUID = objectUUID
        self.key = key
        self.value = value
    }

    enum CodingKeys: String, CodingKey {
        case key, value
        case objectType = "object_type"
        case objectUUID = "object_uuid"
    }
}

/// The kind of an event.
public enum EventType: String, Codable, Hashable, Sendable, CaseIterable {
    case audit, mutate, status, usage, resources, prune, historic
}

/// Something that happened to an object, for its event log.
public struct Event: Codable, Hashable, Sendable {
    /// Such as "instance", "network", "interface", "node".
    public var objectType: String
    public var objectUUID: String
    public var type: EventType
    public var timestamp: Date
    /// The node that recorded the event.
    public var fqdn: String
    /// How long the operation took, in seconds, for `status` "… complete" events.
    public var duration: Double?
    public var message: String
    /// Free-form details; `extra["request-id"]` ties the event to an API request.
    public var extra: [String: JSONValue]?

    public init(
        objectType: String, objectUUID: String, type: EventType, timestamp: Date = Date.storableNow(), fqdn: String,
        duration: Double? = nil, message: String, extra: [String: JSONValue]? = nil
    ) {
        self.objectType = objectType
        self.objectUUID = objectUUID
        self.type = type
        self.timestamp = timestamp
        self.fqdn = fqdn
        self.duration = duration
        self.message = message
        self.extra = extra
    }

    /// The request id from `extra`, if any.
    public var requestID: String? { extra?["request-id"]?.stringValue }

    enum CodingKeys: String, CodingKey {
        case type, timestamp, fqdn, duration, message, extra
        case objectType = "object_type"
        case objectUUID = "object_uuid"
    }
}

extension Date {
    /// Now, rounded to exactly what a REAL seconds-since-1970 column gives back. `Date()` keeps its
    /// time since 2001; through a since-1970 double and back it can change by one unit in the last
    /// place, and an object read back would then differ from the one just written.
    public static func storableNow() -> Date {
        Date(timeIntervalSince1970: Date().timeIntervalSince1970)
    }
}

/// What an instance's guest is told at boot, and how its machine is built, beyond its size and
/// devices: Shaken Fist's ssh_key, user_data, configdrive, side_channels, uefi and friends.
public struct InstanceConfig: Codable, Hashable, Sendable {
    /// How the guest gets its metadata.
    public enum ConfigDrive: String, Codable, Hashable, Sendable, CaseIterable {
        /// A config-2 ISO 9660 disk with OpenStack's meta_data.json, network_data.json and user data.
        case openstackDisk = "openstack-disk"
        /// No config drive.
        case none
    }

    /// An OpenSSH public key for the guest's default user.
    public var sshKey: String?
    /// User data, base64 encoded as the API receives it.
    public var userData: String?
    public var configDrive: ConfigDrive
    /// Shaken Fist's side channels (`sf-agent`, `sf-agent2`); recorded, not yet served.
    public var sideChannels: [String]
    public var uefi: Bool
    public var secureBoot: Bool
    public var nvramTemplate: String?

    public init(
        sshKey: String? = nil, userData: String? = nil, configDrive: ConfigDrive = .openstackDisk,
        sideChannels: [String] = ["sf-agent"], uefi: Bool = false, secureBoot: Bool = false, nvramTemplate: String? = nil
    ) {
        self.sshKey = sshKey
        self.userData = userData
        self.configDrive = configDrive
        self.sideChannels = sideChannels
        self.uefi = uefi
        self.secureBoot = secureBoot
        self.nvramTemplate = nvramTemplate
    }

    enum CodingKeys: String, CodingKey {
        case uefi
        case sshKey = "ssh_key"
        case userData = "user_data"
        case configDrive = "configdrive"
        case sideChannels = "side_channels"
        case secureBoot = "secure_boot"
        case nvramTemplate = "nvram_template"
    }

    public init(from decoder: any Decoder) throws {
        // Rows written before a key existed decode with its default.
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sshKey = try container.decodeIfPresent(String.self, forKey: .sshKey)
        userData = try container.decodeIfPresent(String.self, forKey: .userData)
        configDrive = try container.decodeIfPresent(ConfigDrive.self, forKey: .configDrive) ?? .openstackDisk
        sideChannels = try container.decodeIfPresent([String].self, forKey: .sideChannels) ?? ["sf-agent"]
        uefi = try container.decodeIfPresent(Bool.self, forKey: .uefi) ?? false
        secureBoot = try container.decodeIfPresent(Bool.self, forKey: .secureBoot) ?? false
        nvramTemplate = try container.decodeIfPresent(String.self, forKey: .nvramTemplate)
    }
}

/// A namespace: the unit of ownership and authentication. `system` is the admin namespace.
public struct Namespace: Codable, Hashable, Sendable {
    /// `system`: Shaken Fist's admin namespace, where shared images live and objects go when a
    /// request names no namespace. The one spelling of it.
    public static let system = "system"

    public var name: String
    public var state: NamespaceState
    public var created: Date

    public init(name: String, state: NamespaceState = .created, created: Date = Date.storableNow()) {
        self.name = name
        self.state = state
        self.created = created
    }
}

/// The lifecycle of a namespace.
public enum NamespaceState: String, Codable, Hashable, Sendable {
    case created
    case deleted
}

/// A named key of a namespace, as stored: only a salted slow hash of the secret, and a nonce that
/// tokens minted from the key carry, so that replacing the key revokes them.
public struct NamespaceKey: Codable, Hashable, Sendable {
    public var namespace: String
    public var name: String
    /// The bcrypt hash of the secret (it embeds its salt and cost).
    public var hash: String
    public var nonce: String
    public var created: Date

    public init(namespace: String, name: String, hash: String, nonce: String = UUID().lowercasedString, created: Date = Date.storableNow()) {
        self.namespace = namespace
        self.name = name
        self.hash = hash
        self.nonce = nonce
        self.created = created
    }
}
