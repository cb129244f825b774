import Foundation
import SFStore
import SFSystem

/// Networks across nodes.
///
/// The network node has every live network: bridge, VXLAN, namespace, router, egress, floats, NAT and
/// dnsmasq. A hypervisor has a network's bridge and VXLAN exactly while an instance placed on it has an
/// interface there. Each node's VXLAN floods to the mesh addresses of the other nodes that have the
/// network, never to its own (a node in its own flood list sees every frame twice). When an instance
/// joins or leaves a network, the node that did it converges its own share and sends `network.refresh`
/// to the others, which converge theirs from the store.
extension NodeAgent {
    /// Builds the network on the network node: everything but the hypervisors' shares, which they
    /// build when an instance needs them.
    public func createNetwork(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        var network = try await store.network(uuid: uuid)
        guard network.state == .initial || network.state == .created else {
            throw JobError.refusal("network \(uuid) is \(network.state.rawValue); only an initial or created network can be built")
        }
        guard isNetworkNode else {
            throw JobError.refusal("network \(uuid): network.create is the network node's job, and \(nodeName) is not the network node")
        }
        // Allocated and recorded in one transaction, so a crash cannot leak a gateway.
        if network.provideNAT { network = try await store.ensureFloatingGateway(networkUUID: uuid, range: floatingRange) }
        try await ensureEgress()
        try CrashPoint.reach("network.create.after-egress")
        try await realize(try await view(of: network))
        if network.state == .initial { try await store.setNetworkState(uuid: uuid, to: .created) }
        try await event("network", uuid, .status, "network creation complete", since: started)
    }

    /// Deletes the network from the network node. With interfaces still on it, the network moves to
    /// delete-wait and keeps working for them; it is removed when the last one goes (see
    /// ``converge(_:)``), as Shaken Fist's delete-wait does.
    public func deleteNetwork(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        let network = try await store.network(uuid: uuid)
        if network.state == .deleted { return }
        guard isNetworkNode else {
            throw JobError.refusal("network \(uuid): network.delete is the network node's job, and \(nodeName) is not the network node")
        }
        // delete-wait first: from here on no instance may join, and a crash resumes the deletion.
        if network.state != .deleteWait { try await store.setNetworkState(uuid: uuid, to: .deleteWait) }
        let view = try await view(of: network)
        guard view.live.isEmpty else {
            try await event("network", uuid, .status, "network deletion waits for \(view.live.count) interface(s) to be deleted")
            return
        }
        let plan = try await plan(for: view)
        if let server = await dhcpServers.remove(uuid) {
            try await server.stop()
        } else {
            // One started by an earlier agent: found through its pid file and stopped. Not through
            // the cache, whose entry would keep a thread (and the namespace) alive. Stopping needs no
            // thread in the namespace, which may be gone already.
            try await makeDHCPServer(for: network, thread: try await NamespaceExecutor.start(namespace: nil)).stop()
        }
        try await networks.remove(plan)
        try await store.releaseFloatingGateway(networkUUID: uuid)
        try await store.setNetworkState(uuid: uuid, to: .deleted)
        try await event("network", uuid, .status, "network deletion complete", since: started)
    }

    /// Brings this node's share of the network in line with the store, after its interfaces changed
    /// here or on another node (the `network.refresh` job) and in every reconciliation pass:
    /// - a network this node needs is realized (on the network node this includes its DHCP hosts,
    ///   floats and rules; on every node the flood list);
    /// - a hypervisor that no longer needs it removes its bridge and VXLAN;
    /// - on the network node, a delete-wait network whose last interface has gone is deleted.
    ///
    /// Returns the store's view it acted on.
    @discardableResult
    public func converge(_ uuid: UUID) async throws -> NetworkView {
        let view = try await view(of: try await store.network(uuid: uuid))
        if isNetworkNode && view.network.state == .deleteWait && view.live.isEmpty {
            try await deleteNetwork(uuid)
        } else if needs(view) {
            try await realize(view)
        } else if !isNetworkNode, !view.hosts.contains(nodeName) {
            try await networks.removeNodeSide(try await plan(for: view))
        }
        return view
    }

    /// Converges this node's share of each network, then sends `network.refresh` to the other nodes
    /// that have it: the network node (for its DHCP hosts and flood list), and with `meshChanged` the
    /// hypervisors hosting it (for their flood lists).
    func announce(_ networkUUIDs: some Sequence<UUID>, meshChanged: Bool) async throws {
        // The network node takes its refreshes through the role, so it is not also sent one by name.
        let networkNodes = meshChanged ? Set(try await store.nodes().filter { $0.roles.contains(.networkNode) }.map(\.name)) : []
        for uuid in Set(networkUUIDs).sorted(by: { $0.uuidString < $1.uuidString }) {
            try Task.checkCancellation()
            let view = try await converge(uuid)
            let payload = JSONValue.object(["network_uuid": .string(uuid.lowercasedString)])
            // No object key: a refresh is idempotent and read from the store when it runs, so order
            // does not matter, and a refresh for a node that is down must not hold up later jobs.
            if !isNetworkNode {
                try await store.enqueue(kind: "network.refresh", payload: payload, target: .networkNode, objectKey: nil)
            }
            guard meshChanged else { continue }
            for name in view.hosts.sorted() where name != nodeName && !networkNodes.contains(name) {
                try await store.enqueue(kind: "network.refresh", payload: payload, target: .node(name), objectKey: nil)
            }
        }
    }

    /// The network node's host-wide share: the egress bridge, and forwarding and masquerade out of
    /// the configured egress interface (else the default route's). Nothing on a hypervisor.
    public func ensureEgress() async throws {
        guard isNetworkNode else { return }
        let uplink: String?
        if let egressInterface { uplink = egressInterface } else { uplink = try await networks.defaultRouteInterface() }
        try await networks.ensureEgress(floatingRange: floatingRange, uplink: uplink)
    }

    /// Makes this node's share of the network match the store. Every step is idempotent. The crash
    /// points are named for network.create, the job that first passes them.
    func realize(_ view: NetworkView) async throws {
        let network = view.network
        let plan = try await plan(for: view)
        try await networks.ensureOnNode(plan, underlay: mesh.interface, local: mesh.address)
        guard isNetworkNode else { return }
        let thread = try await networks.ensureOnNetworkNode(plan)
        try CrashPoint.reach("network.create.after-namespace")
        if network.provideDHCP { try await dhcp(for: network, thread: thread).ensure(hosts: view.dhcpHosts) }
        try CrashPoint.reach("network.create.after-dhcp")
    }

    /// Whether this node should have the network: the network node every created or delete-wait
    /// one, a hypervisor those with a live interface of an instance placed on it.
    func needs(_ view: NetworkView) -> Bool {
        guard view.network.state == .created || view.network.state == .deleteWait else { return false }
        return isNetworkNode || view.hosts.contains(nodeName)
    }

    /// The network as the store has it now, with its live interfaces and their instances, each read
    /// once for everything a convergence derives from them.
    func view(of network: Network) async throws -> NetworkView {
        let live = try await store.interfaces(networkUUID: network.uuid).filter { $0.state != .deleted }
        var instances: [UUID: Instance] = [:]
        for uuid in Set(live.map(\.instanceUUID)) { instances[uuid] = try await store.instance(uuid: uuid) }
        return NetworkView(network: network, live: live, instances: instances)
    }

    /// The live interfaces of the live instances placed on this node: the taps it keeps, and (by
    /// their networks) the networks a hypervisor keeps.
    func liveInterfacesHere() async throws -> [Interface] {
        try await liveInterfaces(of: try await store.instances(node: nodeName))
    }

    /// The live interfaces of those of `instances` that are live.
    func liveInterfaces(of instances: [Instance]) async throws -> [Interface] {
        var interfaces: [Interface] = []
        for instance in instances where instance.state != .deleted {
            interfaces += try await store.interfaces(instanceUUID: instance.uuid).filter { $0.state != .deleted }
        }
        return interfaces
    }

    /// The mesh addresses this node's VXLAN for the network floods to: the network node's and those
    /// of the nodes hosting it, without this node's own. A node that has not recorded a mesh address
    /// cannot be reached and is left out.
    func meshPeers(of view: NetworkView) async throws -> [IPv4Address] {
        let network = view.network.uuid
        let nodes = try await store.nodes()
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
        try await store.saveNode(
            Node(name: nodeName, roles: roles, lastSeen: Date.storableNow(), meshAddress: mesh.address, capacity: capacity))
        if let previous, previous.meshAddress != mesh.address || previous.roles != roles { await meshAnnouncement.raise() }
        guard await meshAnnouncement.isRaised else { return }
        logger.info("this node's mesh address or roles changed; telling the other nodes of its networks")
        try await lock.withLock {
            let own = isNetworkNode
                ? Set(try await store.networks(namespace: nil).filter { $0.state == .created || $0.state == .deleteWait }.map(\.uuid))
                : Set(try await liveInterfacesHere().map(\.networkUUID))
            try await announce(own, meshChanged: true)
        }
        await meshAnnouncement.clear()
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
}

/// A network and what hangs off it in the store, read once per convergence.
public struct NetworkView: Sendable {
    public let network: Network
    /// Its interfaces that are not deleted.
    let live: [Interface]
    /// The instances those interfaces belong to.
    let instances: [UUID: Instance]

    /// The nodes on which live instances with live interfaces on the network are placed (the same
    /// rule as ``NodeAgent/liveInterfacesHere()``, seen from the network).
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
