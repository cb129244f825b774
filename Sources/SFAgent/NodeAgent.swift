import Foundation
import Logging
import SFControl
import SFStore
import SFSystem

/// What every job handler of this node shares: the store, the realizers, the planner, the locks.
public struct AgentContext: Sendable {
    public let store: any NodeStore
    public let networks: any NetworkRealizing
    public let instances: any InstanceRealizing
    /// The store-to-plan translation and the rule of what this node keeps.
    public let planner: HostPlanner
    /// What jobs running at once share on the host (see ``HostLocks`` for the rule).
    public let locks: HostLocks
    /// Where each network's dnsmasq keeps its files.
    public let dhcpDirectory: String
    /// The network node's interface towards the outside; nil means the default route's.
    public let egressInterface: String?
    /// The zone and upstream of the networks that provide DNS.
    public let dns: DNSSettings
    /// The dnsmasq of each network, kept for the agent's lifetime: the server owns its child process,
    /// and a server dropped after each job would take its dnsmasq with it.
    let dhcpServers = DHCPServers()
    let logger: Logger

    /// This node's name, as jobs address it and events record it.
    public var nodeName: String { planner.nodeName }
    /// Whether this node is the network node (namespaces, NAT, floats, DHCP) as well as a hypervisor.
    public var isNetworkNode: Bool { planner.isNetworkNode }
    /// Where disk bases come from; nil for an agent that only takes bases that are files on the node.
    public var images: ImageResolver? { planner.images }
    var events: AgentEvents { AgentEvents(store: store, nodeName: nodeName) }

    func event(_ type: String, _ uuid: UUID, _ kind: EventType, _ message: String, since start: ContinuousClock.Instant? = nil)
        async throws
    {
        try await events.record(type, uuid, kind, message, since: start)
    }

    /// An instance placed on another node is that node's: building or removing it here would leave
    /// two copies, or none removed.
    func refuseIfElsewhere(_ instance: Instance) throws {
        if let node = instance.node, node != nodeName {
            throw JobError.refusal("instance \(instance.uuid) is placed on node \(node), not on \(nodeName)")
        }
    }
}

/// Handlers of some job kinds, registered with the runner by kind.
public protocol JobHandlers: Sendable {
    /// Registers a handler for each kind this type handles.
    func register(with runner: JobRunner) async
}

extension JobOrder {
    /// The UUID of the object the job is about, for a handler whose kind always names one.
    func uuid() throws -> UUID {
        guard let uuid = objectUUID else { throw JobError("\(kind.rawValue) names no object (\(subject))") }
        return uuid
    }

    /// The object locks a job's own steps take first (see ``HostLocks``).
    var lockKeys: [String] {
        switch subject {
        case .instance(let uuid): return [HostLocks.instance(uuid)]
        case .interface(let uuid): return [HostLocks.interface(uuid)]
        case .network(let uuid): return [HostLocks.network(uuid)]
        case .artifact(let uuid): return [ObjectKey(.artifact, uuid).text]
        case .namespace: return []
        }
    }
}

/// The node agent: the job handlers of this node, each of which loads the objects a job names from
/// the store, makes the host match them through the realizers, and records what happened as events.
///
/// Every handler converges when re-run after a crash at any point: it derives the host state from the
/// store rather than from what an earlier attempt did, and every realizer step is idempotent.
public struct NodeAgent: Sendable {
    public let context: AgentContext
    public let networkJobs: NetworkJobs
    public let instanceJobs: InstanceJobs
    public let floatJobs: FloatJobs
    public let artifactJobs: ArtifactJobs
    /// Set when this node's mesh address or roles changed and the other nodes are still to be told.
    let meshAnnouncement = PendingFlag()

    public init(
        store: any NodeStore, networks: any NetworkRealizing, instances: any InstanceRealizing, nodeName: String,
        floatingRange: IPv4Prefix, dhcpDirectory: String, isNetworkNode: Bool = true, mesh: Mesh = Mesh(),
        egressInterface: String? = nil, images: ImageResolver? = nil, dns: DNSSettings = DNSSettings(), consoleAddress: IPv4Address? = nil,
        logger: Logger
    ) {
        let locks = HostLocks()
        let planner = HostPlanner(
            store: store, nodeName: nodeName, isNetworkNode: isNetworkNode, floatingRange: floatingRange, mesh: mesh,
            mtu: instances.layout.mtu, images: images, consoleAddress: consoleAddress, locks: locks, logger: logger)
        context = AgentContext(
            store: store, networks: networks, instances: instances, planner: planner, locks: locks, dhcpDirectory: dhcpDirectory,
            egressInterface: egressInterface, dns: dns, logger: logger)
        networkJobs = NetworkJobs(context: context)
        instanceJobs = InstanceJobs(context: context, networks: networkJobs)
        floatJobs = FloatJobs(context: context, networks: networkJobs)
        artifactJobs = ArtifactJobs(context: context)
    }

    public var store: any NodeStore { context.store }
    public var networks: any NetworkRealizing { context.networks }
    public var instances: any InstanceRealizing { context.instances }
    public var planner: HostPlanner { context.planner }
    public var locks: HostLocks { context.locks }
    public var nodeName: String { context.nodeName }
    public var isNetworkNode: Bool { context.isNetworkNode }
    public var images: ImageResolver? { context.images }

    /// Every handler of this node, each registering its own kinds.
    var handlers: [any JobHandlers] { [networkJobs, instanceJobs, floatJobs, artifactJobs] }

    /// Registers every handler with `runner`, and how a failed job is recorded on its object.
    public func register(with runner: JobRunner) async {
        for handler in handlers { await handler.register(with: runner) }
        let context = self.context
        // The job's failure is settled in the store and recorded on its object in one hold of the
        // host lock: a reconciliation pass (which holds it exclusively) never sees the job failed
        // with its object not yet marked, and so never calls the object stuck with a cause of its own.
        await runner.onFailure { job, refused, settle in
            let keys = (try? JobOrder.decode(kind: job.kind, payload: job.payload))?.lockKeys ?? []
            // In the rule's order: the job's own instance or interface, then the host, then a network.
            let (own, networks) = (keys.filter { !$0.hasPrefix("network:") }, keys.filter { $0.hasPrefix("network:") })
            try await context.locks.objectStep(own) {
                try await context.locks.hostStep(networks) {
                    let after = try await settle()
                    guard after.state == .failed else { return }
                    try await Self.recordFailure(after, refused: refused, context: context)
                }
            }
        }
    }

    /// A job that failed for good: its error becomes an event on the object it was about, and after
    /// a failed create or delete (not a refusal, which changed nothing) the instance or network moves
    /// to its error state. The object is the one the payload names for the job's kind
    /// (`instance_uuid` for `instance.*`), never what the submitter's free-form object key says.
    /// Jobs about no object only keep the error on the job.
    static func recordFailure(_ job: Job, refused: Bool, context: AgentContext) async throws {
        guard let order = try? JobOrder.decode(kind: job.kind, payload: job.payload), let object = order.objectUUID else { return }
        let store = context.store
        let message = HostPlanner.failureMessage(job)
        // Only a failed create or delete leaves the object half-built; a refused job, a power
        // operation or a float leaves it as it was, so it only gets the event. A network.delete only
        // waits or removes, so it is not among these either.
        if !refused {
            switch order.kind {
            case .instanceCreate, .instanceDelete:
                if let instance = try? await store.instance(uuid: object), let next = instance.state.errorState {
                    try await store.setInstanceState(uuid: object, to: next, errorMessage: message)
                }
            case .networkCreate:
                if let network = try? await store.network(uuid: object), network.state.canTransition(to: .error) {
                    try await store.setNetworkState(uuid: object, to: .error)
                }
            case .networkDelete, .networkRefresh, .instanceDeleteAll, .instancePoweron, .instancePoweroff, .instanceRebootsoft,
                .instanceReboothard, .instancePause, .instanceUnpause, .interfaceFloat, .interfaceDefloat, .artifactFetch, .instanceSnapshot:
                break
            }
        }
        // An object that does not exist gets no event: events are listed under their object.
        let exists: Bool
        switch order.kind.subject {
        case .instance: exists = (try? await store.instance(uuid: object)) != nil
        case .network: exists = (try? await store.network(uuid: object)) != nil
        case .artifact: exists = await context.images?.hasArtifact(object) ?? false
        case .interface: exists = (try? await store.interface(uuid: object)) != nil
        case .namespace: exists = false
        }
        if exists { try await context.event(order.kind.subject.rawValue, object, .status, message) }
    }

    /// The roles this node plays.
    public var roles: Set<NodeRole> { isNetworkNode ? [.hypervisor, .networkNode] : [.hypervisor] }

    /// The job targets this node takes: its name, and the network-node role when it has it.
    public var jobTargets: [JobTarget] { isNetworkNode ? [.node(nodeName), .networkNode] : [.node(nodeName)] }

    /// Records this node in the store, with its roles and mesh address, as alive now. When its mesh
    /// address or roles changed since the last check-in, the other nodes of every network it has are
    /// told, so that they flood to the new address; an announcement that fails is tried again at the
    /// next check-in (and every node's reconciliation pass reads the addresses afresh within 30 s).
    public func checkIn() async throws {
        let previous = try await store.node(named: nodeName)
        let capacity = NodeCapacity(
            cpus: HostCapacity.cpus, memoryMiB: HostCapacity.memoryMiB,
            diskGiB: HostCapacity.diskGiB(at: instances.storagePath) ?? 0)
        let mesh = planner.mesh
        try await store.saveNode(
            Node(name: nodeName, roles: roles, lastSeen: try await store.clock(), meshAddress: mesh.address, capacity: capacity))
        if let deleted = previous?.deleted {
            // The operator said this node is gone: it is placed nothing and sent no job by name.
            context.logger.error(
                "this node was deleted (DELETE /nodes/\(nodeName)); it takes no new instances, and its instances were deleted with it",
                metadata: ["node.deleted": "\(deleted)"])
        }
        if let previous, previous.meshAddress != mesh.address || previous.roles != roles { await meshAnnouncement.raise() }
        guard await meshAnnouncement.isRaised else { return }
        context.logger.info("this node's mesh address or roles changed; telling the other nodes of its networks")
        let (store, isNetworkNode, planner, networkJobs) = (store, isNetworkNode, planner, networkJobs)
        try await locks.hostStep {
            let own = isNetworkNode
                ? Set(try await store.networks(namespace: nil).filter { $0.state == .created || $0.state == .deleteWait }.map(\.uuid))
                : Set(try await planner.liveInterfacesHere().map(\.networkUUID))
            try await networkJobs.announce(own, meshChanged: true)
        }
        await meshAnnouncement.clear()
    }
}
