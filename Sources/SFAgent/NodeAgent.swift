import Foundation
import Logging
import SFBlobs
import SFControl
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem

/// The node agent's job handlers: each loads the objects a job names from the store, makes the host
/// match them through the realizers, and records what happened as events.
///
/// Every handler converges when re-run after a crash at any point: it derives the host state from the
/// store rather than from what an earlier attempt did, and every realizer step is idempotent.
public struct NodeAgent: Sendable {
    public let store: any NodeStore
    public let networks: NetworkRealizer
    public let instances: InstanceRealizer
    /// This node's name, as jobs address it and events record it.
    public let nodeName: String
    /// The range floating addresses and network gateways come from.
    public let floatingRange: IPv4Prefix
    /// Where each network's dnsmasq keeps its files.
    public let dhcpDirectory: String
    /// Whether this node is the network node (namespaces, NAT, floats, DHCP) as well as a hypervisor.
    public let isNetworkNode: Bool
    /// This node's place on the mesh the VXLANs run over.
    public let mesh: Mesh
    /// The network node's interface towards the outside; nil means the default route's.
    public let egressInterface: String?
    /// The dnsmasq of each network, kept for the agent's lifetime: the server owns its child process,
    /// and a server dropped after each job would take its dnsmasq with it.
    let dhcpServers = DHCPServers()
    /// Held by every job handler and every reconciliation pass (see ``AgentLock``).
    public let lock = AgentLock()
    /// Where disk bases come from (blobs, the image cache); nil for an agent that only takes bases
    /// that are already files on the node.
    public let images: ImageResolver?
    /// Set when this node's mesh address or roles changed and the other nodes are still to be told.
    let meshAnnouncement = PendingFlag()
    let logger: Logger

    public init(
        store: any NodeStore, networks: NetworkRealizer, instances: InstanceRealizer, nodeName: String,
        floatingRange: IPv4Prefix, dhcpDirectory: String, isNetworkNode: Bool = true, mesh: Mesh = Mesh(),
        egressInterface: String? = nil, images: ImageResolver? = nil, logger: Logger
    ) {
        self.images = images
        self.egressInterface = egressInterface
        self.isNetworkNode = isNetworkNode
        self.mesh = mesh
        self.store = store
        self.networks = networks
        self.instances = instances
        self.nodeName = nodeName
        self.floatingRange = floatingRange
        self.dhcpDirectory = dhcpDirectory
        self.logger = logger
    }

    /// Registers every handler with `runner`, each run holding ``lock``.
    public func register(with runner: JobRunner) async {
        let lock = self.lock
        for kind in JobKind.allCases {
            await runner.register(kind) { order, _ in try await lock.withLock { try await handle(order) } }
        }
        // Under the lock too: a reconciliation pass must not act on an object this is moving to error.
        await runner.onFailure { job, refused in try await lock.withLock { try await recordFailure(job, refused: refused) } }
    }

    /// Runs one job: the registry of handlers, by kind.
    func handle(_ order: JobOrder) async throws {
        switch (order.kind, order.subject) {
        case (.networkCreate, .network(let uuid)): try await createNetwork(uuid)
        case (.networkDelete, .network(let uuid)): try await deleteNetwork(uuid)
        case (.networkRefresh, .network(let uuid)): try await converge(uuid)
        case (.instanceCreate, .instance(let uuid)): try await createInstance(uuid)
        case (.instanceDelete, .instance(let uuid)): try await deleteInstance(uuid)
        case (.instanceDeleteAll, .namespace(let namespace)): try await deleteAllInstances(namespace: namespace)
        case (.interfaceFloat, .interface(let uuid)): try await float(uuid)
        case (.interfaceDefloat, .interface(let uuid)): try await defloat(uuid)
        case (.artifactFetch, .artifact(let uuid)): try await fetchArtifact(uuid)
        case (let kind, .instance(let uuid)) where kind.powerOperation != nil:
            if let operation = kind.powerOperation { try await power(operation, uuid) }
        default:
            // JobOrder pairs every kind with its subject, so this is a programming error.
            throw JobError("\(order.kind.rawValue) cannot be about \(order.subject)")
        }
    }

    // MARK: Instances

    /// Creates and starts the instance: initial → preflight → creating → created, with status events.
    public func createInstance(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        var instance = try await store.instance(uuid: uuid)
        // Refused without touching the instance: only these states can (still) be created.
        guard [.initial, .preflight, .creating, .created].contains(instance.state) else {
            throw JobError.refusal("instance \(uuid) is \(instance.state.rawValue); it cannot be created")
        }
        try refuseIfElsewhere(instance)
        if instance.state == .created, try await instances.libvirt.state(of: .uuid(uuid)) == .on { return }
        do {
            for next in [InstanceState.preflight, .creating] where instance.state.canTransition(to: next) {
                instance = try await store.setInstanceState(uuid: uuid, to: next)
            }
            guard instance.state == .creating || instance.state == .created else {
                throw JobError("instance \(uuid) is \(instance.state.rawValue); it cannot be created")
            }
            let joined = Set(try await store.interfaces(instanceUUID: uuid).map(\.networkUUID))
            for networkUUID in joined {
                let network = try await store.network(uuid: networkUUID)
                switch network.state {
                case .created: break
                // Its create may still be queued, or held by an agent that died: the job waits for it
                // without spending attempts.
                case .initial: throw ControlError.notReady("network \(networkUUID) is initial, not created yet")
                default: throw JobError("network \(networkUUID) is \(network.state.rawValue); no instance can join it")
                }
            }
            // Images are fetched (or found) once the networks are known to be ready: a job that waits
            // for a network must not hold a download.
            let plan = try await plan(for: instance, images: .fetchIfStale)
            // Placed before anything is built: the node that builds an instance is the one that keeps
            // (and reconciles) its taps, and the other nodes of its networks must flood to it.
            if instance.node != nodeName { instance = try await store.setInstanceNode(uuid: uuid, nodeName) }
            // The bridges must exist before a tap can join them, and the network node must know the
            // new interface (DHCP host, flood list) before the guest asks for an address.
            try await announce(joined, meshChanged: true)
            try await instances.ensureRunning(plan)
            if instance.state != .created { try await store.setInstanceState(uuid: uuid, to: .created) }
            try await store.setPowerState(uuid: uuid, .on)
            for interface in try await store.interfaces(instanceUUID: uuid) where interface.state != .created {
                try await store.setInterfaceState(uuid: interface.uuid, to: .created)
            }
            try await event("instance", uuid, .status, "instance creation complete", since: started)
        } catch let error as JobError {
            try? await markError(uuid, error.description)
            throw error
        }
    }

    /// Destroys the instance and everything of it on this host; its interfaces become deleted and
    /// their addresses and floating addresses are released; the instance stays readable as deleted.
    public func deleteInstance(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        var instance = try await store.instance(uuid: uuid)
        if instance.state == .deleted { return }
        try refuseIfElsewhere(instance)
        // A `<state>-error` instance may only move to `error`, and from there to deletion.
        if instance.state.isError && instance.state != .error {
            instance = try await store.setInstanceState(uuid: uuid, to: .error)
        }
        if instance.state.canTransition(to: .deleteWait) { try await store.setInstanceState(uuid: uuid, to: .deleteWait) }
        try await instances.remove(try await removalPlan(for: instance))
        var touched = Set<UUID>()
        for interface in try await store.interfaces(instanceUUID: uuid) {
            touched.insert(interface.networkUUID)
            // Deleting releases its address, MAC and floating address by owner, in one transaction:
            // releasing by address first could free one already handed to someone else after a crash.
            if interface.state != .deleted { try await store.setInterfaceState(uuid: interface.uuid, to: .deleted) }
        }
        try await announce(touched, meshChanged: true)
        if let images {
            let live = try await store.instances(node: nodeName).filter { $0.state != .deleted && $0.uuid != uuid }.map(\.uuid)
            try await images.release(instance: uuid, liveInstances: live)
        }
        try await store.setInstanceState(uuid: uuid, to: .deleted)
        try await store.setPowerState(uuid: uuid, .off)
        try await event("instance", uuid, .status, "instance deletion complete", since: started)
    }

    /// Deletes every instance of a namespace that is not deleted yet.
    public func deleteAllInstances(namespace: String) async throws {
        // This node's instances and unplaced ones: another node's are that node's to delete.
        for instance in try await store.instances(node: nil)
        where instance.namespace == namespace && instance.state != .deleted && (instance.node == nil || instance.node == nodeName) {
            try await deleteInstance(instance.uuid)
        }
    }

    // MARK: Artifacts

    /// Fetches an image artifact's URL into a blob here (again only when the server's copy
    /// changed), recording progress and the outcome as events on the artifact.
    public func fetchArtifact(_ uuid: UUID) async throws {
        guard let images else { throw JobError.refusal("this agent was built without the image store") }
        let started = ContinuousClock.now
        let blob = try await images.fetchArtifact(uuid) { line in try? await event("artifact", uuid, .status, line) }
        try await event("artifact", uuid, .status, "artifact fetch complete: blob \(blob.uuid.lowercasedString)", since: started)
    }

    // MARK: Power

    /// Shaken Fist's power operations. Each checks the domain's actual state first and refuses an
    /// impossible transition (pausing an instance that is off) with a message that says so.
    public func power(_ operation: PowerOperation, _ uuid: UUID) async throws {
        let instance = try await store.instance(uuid: uuid)
        guard instance.state == .created else {
            throw JobError.refusal("cannot \(operation.verb) instance \(uuid): it is \(instance.state.rawValue), not created")
        }
        try refuseIfElsewhere(instance)
        let libvirt = instances.libvirt
        let reference = DomainReference.uuid(uuid)
        let actual = try await libvirt.state(of: reference)
        func refuse(_ why: String) -> JobError { JobError.refusal("cannot \(operation.verb) instance \(uuid): \(why)") }
        let result: SFStore.PowerState
        switch operation {
        case .poweron:
            if actual == .paused {
                try await libvirt.resume(reference)
            } else if actual != .on {
                try await instances.ensureRunning(try await plan(for: instance))
            }
            result = .on
        case .poweroff:
            try await libvirt.destroy(reference)
            result = .off
        case .rebootsoft, .reboothard:
            guard actual == .on else { throw refuse("it is \(actual.map(\.rawValue) ?? "not defined"), not on") }
            if operation == .rebootsoft { try await libvirt.reboot(reference) } else { try await libvirt.reset(reference) }
            result = .on
        case .pause:
            guard actual == .on || actual == .paused else { throw refuse("it is \(actual.map(\.rawValue) ?? "not defined"), not on") }
            try await libvirt.suspend(reference)
            result = .paused
        case .unpause:
            guard actual == .paused || actual == .on else {
                throw refuse("it is \(actual.map(\.rawValue) ?? "not defined"), not paused")
            }
            try await libvirt.resume(reference)
            result = .on
        }
        try await store.setPowerState(uuid: uuid, result)
        try await event("instance", uuid, .audit, operation.verb)
    }

    // MARK: Floating addresses

    /// Allocates a floating address for the interface (unless it has one) and adds its DNAT and SNAT.
    public func float(_ uuid: UUID) async throws {
        var interface = try await store.interface(uuid: uuid)
        guard interface.ipv4 != nil else { throw JobError.refusal("interface \(uuid) has no IPv4 address to float") }
        if interface.floating == nil { interface = try await store.floatInterface(uuid: uuid, range: floatingRange) }
        try CrashPoint.reach("interface.float.after-allocate")
        try await announce([interface.networkUUID], meshChanged: false)
        try CrashPoint.reach("interface.float.after-rules")
        try await event("interface", uuid, .audit, "interface floated as \(interface.floating.map(String.init(describing:)) ?? "?")")
    }

    /// Removes the interface's DNAT and SNAT and releases its floating address.
    public func defloat(_ uuid: UUID) async throws {
        let interface = try await store.interface(uuid: uuid)
        if interface.floating != nil { try await store.defloatInterface(uuid: uuid) }
        try await announce([interface.networkUUID], meshChanged: false)
        try await event("interface", uuid, .audit, "interface defloated")
    }

    /// A job that failed for good: its error becomes an event on the object it was about, and after
    /// a failed create or delete (not a refusal, which changed nothing) the instance or network moves
    /// to its error state. The object is the one the payload names for the job's kind
    /// (`instance_uuid` for `instance.*`), never what the submitter's free-form object key says.
    /// Jobs about no object only keep the error on the job.
    func recordFailure(_ job: Job, refused: Bool) async throws {
        guard let order = try? JobOrder.decode(kind: job.kind, payload: job.payload), let object = order.objectUUID else { return }
        let type = order.kind.subject.rawValue
        let message = "\(job.kind) failed after \(job.attempts) attempt(s): \(job.lastError ?? "unknown error")"
        // Only a failed create or delete leaves the object half-built; a refused power operation or
        // float leaves it as it was, so it only gets the event. A network.delete only waits or
        // removes, so it is not among these either.
        switch refused ? "" : job.kind {
        case "instance.create", "instance.delete":
            if let instance = try? await store.instance(uuid: object), let next = instance.state.errorState {
                try await store.setInstanceState(uuid: object, to: next, errorMessage: message)
            }
        case "network.create":
            if let network = try? await store.network(uuid: object), network.state.canTransition(to: .error) {
                try await store.setNetworkState(uuid: object, to: .error)
            }
        default:
            break
        }
        // An object that does not exist gets no event: events are listed under their object.
        let exists: Bool
        switch type {
        case "instance": exists = (try? await store.instance(uuid: object)) != nil
        case "network": exists = (try? await store.network(uuid: object)) != nil
        case "artifact": exists = await images?.hasArtifact(object) ?? false
        default: exists = (try? await store.interface(uuid: object)) != nil
        }
        if exists { try await event(type, object, .status, message) }
    }

    /// What this node should have of a network: the network node every live network, a hypervisor
    /// those its own live instances' interfaces are on (`hosted`).
    public static func keeps(_ network: Network, hosted: Set<UUID>, isNetworkNode: Bool) -> Bool {
        network.state != .deleted && (isNetworkNode || hosted.contains(network.uuid))
    }

    /// The instances in a transitional state (preflight, creating, delete-wait) that no queued or
    /// running job is about (by its payload, not its free-form object key): nothing will ever move
    /// them on.
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

    // MARK: Plans from the store

    /// What the instance needs on this host, from the store. `images` says whether its disks'
    /// bases may be fetched (instance.create) or must already be on the node (everything else).
    func plan(for instance: Instance, images mode: ImageResolver.Mode = .cachedOnly) async throws -> InstancePlan {
        var disks: [InstancePlan.Disk] = []
        for (index, spec) in instance.diskSpec.enumerated() {
            let bus = try spec.bus.map { text -> DomainSpec.Disk.Bus in
                guard let bus = DomainSpec.Disk.Bus(rawValue: text) else {
                    throw JobError("disk \(index) of instance \(instance.uuid): unknown bus '\(text)'")
                }
                return bus
            } ?? .virtio
            switch (spec.type, spec.base) {
            case (.cdrom, let text?):
                let image = try await base(text, cdrom: true, of: instance, mode: mode)
                disks.append(.init(source: .cdrom(path: image.path), bus: bus == .virtio ? .sata : bus))
            case (.disk, let text?):
                let image = try await base(text, cdrom: false, of: instance, mode: mode)
                disks.append(.init(source: .overlay(base: image.path, format: image.format, sizeGiB: spec.size), bus: bus))
            case (.disk, nil): disks.append(.init(source: .blank(sizeGiB: spec.size ?? 0), bus: bus))
            case (.cdrom, nil): throw JobError("disk \(index) of instance \(instance.uuid): a cdrom needs a base image")
            }
        }
        var interfaces: [InstancePlan.Interface] = []
        var told: [ConfigDrive.Interface] = []
        for interface in try await store.interfaces(instanceUUID: instance.uuid).sorted(by: { $0.order < $1.order }) {
            let network = try await store.network(uuid: interface.networkUUID)
            guard let model = DomainSpec.NICModel(rawValue: interface.model) else {
                throw JobError("interface \(interface.uuid): NIC model '\(interface.model)' is not one of virtio, e1000, rtl8139")
            }
            interfaces.append(.init(
                uuid: interface.uuid, mac: interface.macaddr, vxid: try vxlanID(of: network), model: model,
                address: interface.ipv4, spoofFilter: network.spoofFilter))
            told.append(.init(
                uuid: interface.uuid, mac: interface.macaddr, order: interface.order, networkUUID: network.uuid,
                netblock: network.netblock, address: interface.ipv4))
        }
        let video = DomainSpec.VideoModel(rawValue: instance.video.model).map { DomainSpec.Video(model: $0, memoryKiB: instance.video.memory) }
        return InstancePlan(
            uuid: instance.uuid, cpus: instance.cpus, memoryMiB: instance.memory, disks: disks, interfaces: interfaces,
            video: video, configDrive: try ConfigDrive.of(instance, interfaces: told, mtu: instances.layout.mtu))
    }

    /// One disk's base as a file on this node, its download reported as events on the instance.
    private func base(_ text: String, cdrom: Bool, of instance: Instance, mode: ImageResolver.Mode) async throws -> ImageResolver.Base {
        if let images {
            let uuid = instance.uuid
            return try await images.base(text, cdrom: cdrom, instance: uuid, namespace: instance.namespace, mode: mode) { line in
                try? await event("instance", uuid, .status, line)
            }
        }
        guard text.hasPrefix("/") else {
            throw ControlError.invalid("disk base '\(text)' needs the image store, which this agent was built without")
        }
        return ImageResolver.Base(path: text, format: cdrom ? .iso : .qcow2, blobUUID: nil)
    }

    /// What removing an instance needs: its UUID and its interfaces' taps. Unlike ``plan(for:)`` it
    /// reads nothing that a bad specification could make invalid, so such an instance can still go.
    func removalPlan(for instance: Instance) async throws -> InstancePlan {
        let interfaces = try await store.interfaces(instanceUUID: instance.uuid).map {
            InstancePlan.Interface(uuid: $0.uuid, mac: $0.macaddr, vxid: 0)
        }
        return InstancePlan(uuid: instance.uuid, cpus: instance.cpus, memoryMiB: instance.memory, disks: [], interfaces: interfaces)
    }

    /// The network's cached DHCP server (see ``DHCPServers``), made again when the namespace's thread
    /// changed (the namespace was made again underneath the old one).
    func dhcp(for network: Network, thread: NamespaceExecutor) async throws -> DHCPServer {
        let server = try makeDHCPServer(for: network, thread: thread)
        return await dhcpServers.server(for: network.uuid, thread: thread) { server }
    }

    /// A DHCP server object for the network's dnsmasq (which it starts or adopts).
    func makeDHCPServer(for network: Network, thread: NamespaceExecutor) throws -> DHCPServer {
        let plan = NetworkPlan(uuid: network.uuid, vxid: try vxlanID(of: network), netblock: network.netblock, provideNAT: false)
        return DHCPServer(
            directory: dhcpDirectory + "/" + network.uuid.lowercasedString,
            interface: networks.layout.routerInner(plan.vxid), router: plan.router, thread: thread, logger: logger)
    }

    /// The network's VXLAN id, checked: a corrupt store row must fail the job, not crash the agent.
    func vxlanID(of network: Network) throws -> UInt32 {
        guard let vxid = UInt32(exactly: network.vxid), (1...16_777_215).contains(vxid) else {
            throw JobError("network \(network.uuid) has VXLAN id \(network.vxid), outside 1...16777215")
        }
        return vxid
    }

    /// An instance placed on another node is that node's: building or removing it here would leave
    /// two copies, or none removed.
    private func refuseIfElsewhere(_ instance: Instance) throws {
        if let node = instance.node, node != nodeName {
            throw JobError.refusal("instance \(instance.uuid) is placed on node \(node), not on \(nodeName)")
        }
    }

    private func markError(_ uuid: UUID, _ message: String) async throws {
        let instance = try await store.instance(uuid: uuid)
        if let next = instance.state.errorState { try await store.setInstanceState(uuid: uuid, to: next, errorMessage: message) }
    }

    func event(_ type: String, _ uuid: UUID, _ kind: EventType, _ message: String, since start: ContinuousClock.Instant? = nil)
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
