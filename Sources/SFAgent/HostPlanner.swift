import Foundation
import Logging
import SFControl
import SFLibvirt
import SFStore
import SFSystem

/// The translation from the store to what this node's host should have: instance and network plans,
/// and the one rule of what this node keeps, which the job handlers, the reconciler and
/// `sfnode state` all read from here.
///
/// The rule: the network node keeps every network that is not deleted; a hypervisor keeps those a
/// live interface of a live instance placed on it is on (and those interfaces' taps). Of the kept
/// networks, those created or in delete-wait are realized; the others (initial, error) keep their
/// devices but are not built by a pass.
public struct HostPlanner: Sendable {
    public let store: any NodeStore
    /// This node's name, as instances are placed on it.
    public let nodeName: String
    public let isNetworkNode: Bool
    /// The range floating addresses and network gateways come from.
    public let floatingRange: IPv4Prefix
    /// This node's place on the mesh the VXLANs run over.
    public let mesh: Mesh
    /// The MTU the config drive tells guests.
    public let mtu: Int
    /// Where disk bases come from; nil for a node that only takes bases that are files on it.
    public let images: ImageResolver?
    /// Where instances' serial consoles (telnet) and displays listen (`SFNODE_CONSOLE_LISTEN`); nil
    /// keeps consoles on a pty, read through their logs only.
    public let consoleAddress: IPv4Address?
    let locks: HostLocks
    let logger: Logger

    public init(
        store: any NodeStore, nodeName: String, isNetworkNode: Bool, floatingRange: IPv4Prefix, mesh: Mesh = Mesh(), mtu: Int = 1450,
        images: ImageResolver? = nil, consoleAddress: IPv4Address? = nil, locks: HostLocks = HostLocks(), logger: Logger
    ) {
        self.consoleAddress = consoleAddress
        self.store = store
        self.nodeName = nodeName
        self.isNetworkNode = isNetworkNode
        self.floatingRange = floatingRange
        self.mesh = mesh
        self.mtu = mtu
        self.images = images
        self.locks = locks
        self.logger = logger
    }

    // MARK: What this node keeps

    /// Whether this node keeps `network`: `hostedHere` says whether a live interface of a live
    /// instance placed on this node is on it.
    public func keeps(_ network: Network, hostedHere: Bool) -> Bool {
        network.state != .deleted && (isNetworkNode || hostedHere)
    }

    /// Whether this node builds `network` now: it keeps it, and it is created or in delete-wait.
    public func realizes(_ network: Network, hostedHere: Bool) -> Bool {
        keeps(network, hostedHere: hostedHere) && (network.state == .created || network.state == .deleteWait)
    }

    /// Whether this node builds the network of `view` now (see ``realizes(_:hostedHere:)``).
    func realizes(_ view: NetworkView) -> Bool {
        realizes(view.network, hostedHere: view.hosts.contains(nodeName))
    }

    /// What this node keeps, read from the store: its instances, their live interfaces (the taps it
    /// keeps) and the networks it keeps.
    public func kept() async throws -> Kept {
        kept(in: try await snapshot())
    }

    /// What this node keeps, from a snapshot of the store (see ``kept()``).
    public func kept(in snapshot: Snapshot) -> Kept {
        let instances = snapshot.instances.filter { $0.node == nodeName }
        let interfaces = instances.filter { $0.state != .deleted }.flatMap { snapshot.interfaces(ofInstance: $0.uuid) }
        let hosted = Set(interfaces.map(\.networkUUID))
        return Kept(
            instances: instances, interfaces: interfaces, allNetworks: snapshot.networks,
            networks: snapshot.networks.filter { keeps($0, hostedHere: hosted.contains($0.uuid)) })
    }

    /// What this node keeps (see ``kept()``).
    public struct Kept: Sendable {
        /// The instances placed on this node, deleted ones too.
        public let instances: [Instance]
        /// The live interfaces of its live instances: the taps it keeps.
        public let interfaces: [Interface]
        /// Every network in the store.
        public let allNetworks: [Network]
        /// The networks it keeps.
        public let networks: [Network]
    }

    /// The store as a pass over the whole host needs it: every network, instance, live interface and
    /// node, each kind read once. A pass that asked per object (an instance's interfaces, a
    /// network's interfaces and their instances, the nodes for each network's flood list) spent
    /// time that grew faster than the store.
    public func snapshot() async throws -> Snapshot {
        // Interfaces before instances: every interface read then has its instance in the later read
        // (instances are only ever removed by retention, long after their interfaces were deleted).
        let interfaces = try await store.liveInterfaces()
        let networks = try await store.networks(namespace: nil)
        let instances = try await store.instances(node: nil)
        let nodes = try await store.nodes()
        return Snapshot(networks: networks, instances: instances, liveInterfaces: interfaces, nodes: nodes)
    }

    /// The store's objects read once for a pass (see ``snapshot()``), indexed for lookups by UUID.
    public struct Snapshot: Sendable {
        /// Every network, in the store's order.
        public let networks: [Network]
        /// Every instance, deleted ones too, in the store's order.
        public let instances: [Instance]
        /// Every node.
        public let nodes: [Node]
        let networksByUUID: [UUID: Network]
        let instancesByUUID: [UUID: Instance]
        /// Live interfaces by network, by UUID (the order of ``NodeStore/interfaces(networkUUID:)``).
        let interfacesByNetwork: [UUID: [Interface]]
        /// Live interfaces by instance, by order (the order of ``NodeStore/interfaces(instanceUUID:)``).
        let interfacesByInstance: [UUID: [Interface]]

        public init(networks: [Network], instances: [Instance], liveInterfaces: [Interface], nodes: [Node]) {
            self.networks = networks
            self.instances = instances
            self.nodes = nodes
            networksByUUID = Dictionary(networks.map { ($0.uuid, $0) }, uniquingKeysWith: { first, _ in first })
            instancesByUUID = Dictionary(instances.map { ($0.uuid, $0) }, uniquingKeysWith: { first, _ in first })
            let live = liveInterfaces.filter { $0.state != .deleted }
            interfacesByNetwork = Dictionary(grouping: live, by: \.networkUUID)
            interfacesByInstance = Dictionary(grouping: live, by: \.instanceUUID).mapValues { interfaces in
                interfaces.sorted { ($0.order, $0.uuid.lowercasedString) < ($1.order, $1.uuid.lowercasedString) }
            }
        }

        /// The live interfaces of an instance, by order.
        func interfaces(ofInstance uuid: UUID) -> [Interface] { interfacesByInstance[uuid] ?? [] }
    }

    /// The live interfaces of the live instances placed on this node.
    func liveInterfacesHere() async throws -> [Interface] {
        let here = Set(try await store.instances(node: nodeName).filter { $0.state != .deleted }.map(\.uuid))
        return try await store.liveInterfaces().filter { here.contains($0.instanceUUID) }
    }

    /// The instances in a transitional state (preflight, creating, delete-wait) that no queued or
    /// running job is about (by its payload, not its free-form object key): nothing will ever move
    /// them on. A running job counts however long ago its lease lapsed: its agent died, and the job
    /// is still to be taken again (or failed, with its own cause, by whoever takes it).
    public static func stuckInstances(_ instances: [Instance], liveJobs: [Job]) -> [Instance] {
        var busy = Set<UUID>()
        var busyNamespaces = Set<String>()
        for job in liveJobs where job.state.isLive {
            switch (try? JobOrder.decode(kind: job.kind, payload: job.payload))?.subject {
            case .instance(let uuid)?: busy.insert(uuid)
            case .namespace(let namespace)?: busyNamespaces.insert(namespace)
            default: break
            }
        }
        return instances.filter { instance in
            [.preflight, .creating, .deleteWait].contains(instance.state) && !busy.contains(instance.uuid)
                && !busyNamespaces.contains(instance.namespace)
        }
    }

    /// Why a stuck instance is stuck: the cause its newest failed job recorded, when one is about it
    /// (its failure was not recorded on the instance: the agent died in between), else that nothing
    /// is left to move it on.
    public static func stuckReason(_ instance: Instance, failedJobs: [Job]) -> String {
        let newest = failedJobs.filter { job in
            if case .instance(let uuid)? = (try? JobOrder.decode(kind: job.kind, payload: job.payload))?.subject { return uuid == instance.uuid }
            return false
        }.max { $0.id < $1.id }
        if let newest { return failureMessage(newest) }
        return "instance was \(instance.state.rawValue) with no job left to finish it; found by reconciliation"
    }

    /// The message a failed job leaves on its object and in its event.
    public static func failureMessage(_ job: Job) -> String {
        "\(job.kind) failed after \(job.attempts) attempt(s): \(job.lastError ?? "unknown error")"
    }

    // MARK: Instance plans

    /// What the instance needs on this host, from the store. `mode` says whether its disks' bases
    /// may be fetched (instance.create) or must already be on the node (everything else). Bases are
    /// resolved holding the image lock shared (see ``HostLocks``).
    func plan(for instance: Instance, images mode: ImageResolver.Mode = .cachedOnly) async throws -> InstancePlan {
        var disks: [InstancePlan.Disk] = []
        for (index, spec) in instance.diskSpec.enumerated() {
            guard let bus = InstanceDisk.bus(of: spec) else {
                throw ControlError.invalid("disk \(index) of instance \(instance.uuid): unknown bus '\(spec.bus ?? "")'")
            }
            switch (spec.type, spec.base) {
            case (.cdrom, let text?):
                let image = try await base(text, cdrom: true, of: instance, mode: mode)
                disks.append(.init(source: .cdrom(path: image.path), bus: bus))
            case (.disk, let text?):
                let image = try await base(text, cdrom: false, of: instance, mode: mode)
                disks.append(.init(source: .overlay(base: image.path, format: image.format, sizeGiB: spec.size), bus: bus))
            case (.disk, nil): disks.append(.init(source: .blank(sizeGiB: spec.size ?? 0), bus: bus))
            case (.cdrom, nil): throw ControlError.invalid("disk \(index) of instance \(instance.uuid): a cdrom needs a base image")
            }
        }
        var interfaces: [InstancePlan.Interface] = []
        var told: [ConfigDrive.Interface] = []
        for interface in try await store.interfaces(instanceUUID: instance.uuid).sorted(by: { $0.order < $1.order }) {
            let network = try await store.network(uuid: interface.networkUUID)
            interfaces.append(try planned(interface, on: network))
            told.append(.init(
                uuid: interface.uuid, mac: interface.macaddr, order: interface.order, networkUUID: network.uuid,
                netblock: network.netblock, address: interface.ipv4))
        }
        // Typed from request to plan: a model the store holds but the domain cannot have is refused,
        // never dropped into "no video".
        guard let videoModel = DomainSpec.VideoModel(rawValue: instance.video.model) else {
            throw ControlError.invalid(
                "instance \(instance.uuid): video model '\(instance.video.model)' is not one of \(DomainSpec.VideoModel.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let video = DomainSpec.Video(model: videoModel, memoryKiB: instance.video.memory)
        var plan = InstancePlan(
            uuid: instance.uuid, cpus: instance.cpus, memoryMiB: instance.memory, disks: disks, interfaces: interfaces,
            video: video, configDrive: try ConfigDrive.of(instance, interfaces: told, mtu: mtu), consoles: try await consoles(of: instance))
        plan.uefi = instance.config.uefi
        plan.secureBoot = instance.config.secureBoot
        if instance.config.uefi, let template = instance.config.nvramTemplate {
            guard let images else { throw ControlError.invalid("nvram_template needs the image store, which this agent was built without") }
            plan.nvramTemplate = try await images.nvramTemplate(template, instance: instance.uuid, namespace: instance.namespace)
        }
        return plan
    }

    /// One interface as its instance's plan has it, on its network's bridge.
    func planned(_ interface: Interface, on network: Network) throws -> InstancePlan.Interface {
        guard let model = DomainSpec.NICModel(rawValue: interface.model) else {
            throw ControlError.invalid("interface \(interface.uuid): NIC model '\(interface.model)' is not one of \(DomainSpec.NICModel.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return InstancePlan.Interface(
            uuid: interface.uuid, mac: interface.macaddr, vxid: try vxlanID(of: network), model: model, address: interface.ipv4,
            spoofFilter: network.spoofFilter)
    }

    /// What putting a running instance's taps back on their bridges needs (``InstanceRealizing/plugTaps(_:)``),
    /// from a pass's snapshot: its live interfaces and their networks, without reading the store or
    /// resolving its disks' bases as ``plan(for:images:)`` does.
    func tapPlan(for instance: Instance, in snapshot: Snapshot) throws -> InstancePlan {
        let interfaces = try snapshot.interfaces(ofInstance: instance.uuid).map { interface in
            guard let network = snapshot.networksByUUID[interface.networkUUID] else {
                throw StoreError.notFound(type: "network", id: interface.networkUUID.lowercasedString)
            }
            return try planned(interface, on: network)
        }
        return InstancePlan(uuid: instance.uuid, cpus: instance.cpus, memoryMiB: instance.memory, disks: [], interfaces: interfaces)
    }

    /// The instance's console and display ports on ``consoleAddress``: the ones it has, or new ones,
    /// reserved in the store against the other instances of this node. Shaken Fist's range.
    func consoles(of instance: Instance) async throws -> DomainSpec.Consoles? {
        guard let address = consoleAddress else { return nil }
        let display = instance.video.displayProtocol.flatMap(DomainSpec.Consoles.Display.init(rawValue:))
        var placed = instance
        if placed.consolePort == nil {
            let ports = Self.consolePorts
            let candidates = (0..<32).compactMap { _ -> (console: Int, vdi: Int?)? in
                let console = Int.random(in: ports)
                let vdi = display == nil ? nil : Int.random(in: ports)
                guard TCPPorts.isFree(console, on: address), vdi.map({ TCPPorts.isFree($0, on: address) }) ?? true else { return nil }
                return (console, vdi)
            }
            placed = try await store.reserveConsolePorts(uuid: instance.uuid, node: nodeName, candidates: candidates)
        }
        guard let consolePort = placed.consolePort else { return nil }
        var shown: (kind: DomainSpec.Consoles.Display, port: Int)?
        if let display, let port = placed.vdiPort { shown = (display, port) }
        return DomainSpec.Consoles(address: address.description, consolePort: consolePort, display: shown)
    }

    /// Where console and display ports come from (Shaken Fist's).
    static let consolePorts = 30000...50000

    /// One disk's base as a file on this node, its download reported as events on the instance.
    private func base(_ text: String, cdrom: Bool, of instance: Instance, mode: ImageResolver.Mode) async throws -> ImageResolver.Base {
        if let images {
            let uuid = instance.uuid
            let events = AgentEvents(store: store, nodeName: nodeName)
            return try await locks.resolvingImages {
                try await images.base(text, cdrom: cdrom, instance: uuid, namespace: instance.namespace, mode: mode) { line in
                    try? await events.record("instance", uuid, .status, line)
                }
            }
        }
        guard text.hasPrefix("/") else {
            throw ControlError.invalid("disk base '\(text)' needs the image store, which this agent was built without")
        }
        return ImageResolver.Base(path: text, format: cdrom ? .iso : .qcow2, blobUUID: nil)
    }

    /// What removing an instance needs: its UUID and its interfaces' taps. Unlike ``plan(for:images:)``
    /// it reads nothing that a bad specification could make invalid, so such an instance can still go.
    func removalPlan(for instance: Instance) async throws -> InstancePlan {
        let interfaces = try await store.interfaces(instanceUUID: instance.uuid).map {
            InstancePlan.Interface(uuid: $0.uuid, mac: $0.macaddr, vxid: 0)
        }
        return InstancePlan(uuid: instance.uuid, cpus: instance.cpus, memoryMiB: instance.memory, disks: [], interfaces: interfaces)
    }

    // MARK: Network plans

    /// The network as the store has it now, with its live interfaces and their instances, each read
    /// once for everything a convergence derives from them.
    func view(of network: Network) async throws -> NetworkView {
        let live = try await store.interfaces(networkUUID: network.uuid).filter { $0.state != .deleted }
        var instances: [UUID: Instance] = [:]
        for uuid in Set(live.map(\.instanceUUID)) { instances[uuid] = try await store.instance(uuid: uuid) }
        return NetworkView(network: network, live: live, instances: instances)
    }

    /// The network's view from a pass's snapshot (see ``view(of:)``), with the nodes for its flood list.
    func view(of network: Network, in snapshot: Snapshot) -> NetworkView {
        let live = snapshot.interfacesByNetwork[network.uuid] ?? []
        var instances: [UUID: Instance] = [:]
        for interface in live { instances[interface.instanceUUID] = snapshot.instancesByUUID[interface.instanceUUID] }
        return NetworkView(network: network, live: live, instances: instances, nodes: snapshot.nodes)
    }

    func plan(for view: NetworkView) async throws -> NetworkPlan {
        let network = view.network
        let floats = view.live.compactMap { interface -> NetworkPlan.Float? in
            guard let floating = interface.floating, let address = interface.ipv4 else { return nil }
            return NetworkPlan.Float(floating: floating, privateAddress: address)
        }
        return NetworkPlan(
            uuid: network.uuid, vxid: try vxlanID(of: network), netblock: network.netblock, provideNAT: network.provideNAT,
            floatingGateway: try network.floatingGateway.map { try IPv4Prefix(address: $0, length: floatingRange.length) },
            egressRouter: floatingRange.host(1), floats: floats, meshPeers: try await meshPeers(of: view))
    }

    /// The mesh addresses this node's VXLAN for the network floods to: the network node's and those
    /// of the nodes hosting it, without this node's own. A node that has not recorded a mesh address
    /// cannot be reached and is left out.
    func meshPeers(of view: NetworkView) async throws -> [IPv4Address] {
        let network = view.network.uuid
        let nodes: [Node]
        if let known = view.nodes { nodes = known } else { nodes = try await store.nodes() }
        var names = view.hosts
        names.formUnion(nodes.filter { $0.roles.contains(.networkNode) }.map(\.name))
        names.remove(nodeName)
        let peers = nodes.filter { names.contains($0.name) }
        let unreachable = peers.filter { $0.meshAddress == nil }.map(\.name)
        // Not yet checked in (a node's first seconds), or configured without one: said, not hidden.
        if !unreachable.isEmpty {
            logger.warning(
                "nodes with the network have no mesh address, so this node cannot flood to them",
                metadata: ["network.uuid": "\(network)", "node.names": "\(unreachable.sorted())"])
        }
        return Set(peers.compactMap(\.meshAddress).filter { $0 != mesh.address }).sorted { $0.value < $1.value }
    }

    /// The network's VXLAN id, checked: a corrupt store row must fail the job, not crash the agent.
    public func vxlanID(of network: Network) throws -> UInt32 {
        guard let vxid = UInt32(exactly: network.vxid), (1...16_777_215).contains(vxid) else {
            throw ControlError.invalid("network \(network.uuid) has VXLAN id \(network.vxid), outside 1...16777215")
        }
        return vxid
    }
}

/// A network and what hangs off it in the store, read once per convergence.
public struct NetworkView: Sendable {
    public let network: Network
    /// Its interfaces that are not deleted.
    let live: [Interface]
    /// The instances those interfaces belong to.
    let instances: [UUID: Instance]
    /// Every node, when read with the rest (a pass's snapshot); nil to read them when needed.
    let nodes: [Node]?

    init(network: Network, live: [Interface], instances: [UUID: Instance], nodes: [Node]? = nil) {
        self.network = network
        self.live = live
        self.instances = instances
        self.nodes = nodes
    }

    /// The nodes on which live instances with live interfaces on the network are placed (the
    /// planner's rule, seen from the network).
    var hosts: Set<String> {
        Set(instances.values.filter { $0.state != .deleted }.compactMap(\.node))
    }

    /// One fixed lease per live interface with an address, named for its instance.
    var dhcpHosts: [DHCPHost] {
        live.compactMap { interface in
            interface.ipv4.map { DHCPHost(mac: interface.macaddr, address: $0, hostname: instances[interface.instanceUUID]?.name) }
        }
    }
}

/// Records events about the node's objects, carrying the request that caused the running job.
struct AgentEvents: Sendable {
    let store: any NodeStore
    let nodeName: String

    func record(_ type: String, _ uuid: UUID, _ kind: EventType, _ message: String, since start: ContinuousClock.Instant? = nil)
        async throws
    {
        let duration = start.map { ContinuousClock.now - $0 }.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
        // The request that caused the job, so that one API request can be followed through its events.
        let requestID = JobContext.metadata["request.id"].map { "\($0)" }
        try await store.record(
            Event(
                objectType: type, objectUUID: uuid.lowercasedString, type: kind, fqdn: nodeName, duration: duration, message: message,
                extra: requestID.map { ["request-id": .string($0)] }))
    }
}
