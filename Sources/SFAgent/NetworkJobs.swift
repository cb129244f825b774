import Foundation
import SFControl
import SFStore
import SFSystem

/// The network jobs: network.create, network.delete and network.refresh, and the convergence and
/// announcement that the instance and float jobs run too.
///
/// The network node has every live network: bridge, VXLAN, namespace, router, egress, floats, NAT and
/// dnsmasq. A hypervisor has a network's bridge and VXLAN exactly while an instance placed on it has an
/// interface there. Each node's VXLAN floods to the mesh addresses of the other nodes that have the
/// network, never to its own (a node in its own flood list sees every frame twice). When an instance
/// joins or leaves a network, the node that did it converges its own share and sends `network.refresh`
/// to the others, which converge theirs from the store.
///
/// Every step that touches a network's share of the host holds the host lock shared and the
/// network's own lock (see ``HostLocks``).
public struct NetworkJobs: JobHandlers {
    let context: AgentContext

    public func register(with runner: JobRunner) async {
        await runner.register(.networkCreate) { order, _ in try await create(try order.uuid()) }
        await runner.register(.networkDelete) { order, _ in try await delete(try order.uuid()) }
        await runner.register(.networkRefresh) { order, _ in try await converge(try order.uuid()) }
    }

    var store: any NodeStore { context.store }
    var planner: HostPlanner { context.planner }

    /// Builds the network on the network node: everything but the hypervisors' shares, which they
    /// build when an instance needs them.
    public func create(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        try await context.locks.hostStep([HostLocks.network(uuid)]) {
            var network = try await store.network(uuid: uuid)
            guard network.state == .initial || network.state == .created else {
                throw JobError.refusal("network \(uuid) is \(network.state.rawValue); only an initial or created network can be built")
            }
            guard context.isNetworkNode else {
                throw JobError.refusal(
                    "network \(uuid): network.create is the network node's job, and \(context.nodeName) is not the network node")
            }
            // Allocated and recorded in one transaction, so a crash cannot leak a gateway.
            if network.provideNAT { network = try await store.ensureFloatingGateway(networkUUID: uuid, range: planner.floatingRange) }
            try await ensureEgress()
            try CrashPoint.reach("network.create.after-egress")
            try await realize(try await planner.view(of: network))
            if network.state == .initial { try await store.setNetworkState(uuid: uuid, to: .created) }
            try await context.event("network", uuid, .status, "network creation complete", since: started)
        }
    }

    /// Deletes the network from the network node. With interfaces still on it, the network moves to
    /// delete-wait and keeps working for them; it is removed when the last one goes (see
    /// ``converge(_:)``), as Shaken Fist's delete-wait does.
    public func delete(_ uuid: UUID) async throws {
        try await context.locks.hostStep([HostLocks.network(uuid)]) { try await deleteHeld(uuid) }
    }

    /// ``delete(_:)``, its locks held.
    private func deleteHeld(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        let network = try await store.network(uuid: uuid)
        if network.state == .deleted { return }
        guard context.isNetworkNode else {
            throw JobError.refusal(
                "network \(uuid): network.delete is the network node's job, and \(context.nodeName) is not the network node")
        }
        // delete-wait first: from here on no instance may join, and a crash resumes the deletion.
        if network.state != .deleteWait { try await store.setNetworkState(uuid: uuid, to: .deleteWait) }
        let view = try await planner.view(of: network)
        guard view.live.isEmpty else {
            try await context.event("network", uuid, .status, "network deletion waits for \(view.live.count) interface(s) to be deleted")
            return
        }
        let plan = try await planner.plan(for: view)
        if let server = await context.dhcpServers.remove(uuid) {
            try await server.stop()
        } else {
            // One started by an earlier agent: found through its pid file and stopped. Not through
            // the cache, whose entry would keep a thread (and the namespace) alive. Stopping needs no
            // thread in the namespace, which may be gone already.
            try await makeDHCPServer(for: network, thread: try await NamespaceExecutor.start(namespace: nil)).stop()
        }
        try await context.networks.remove(plan)
        try await store.releaseFloatingGateway(networkUUID: uuid)
        try await store.setNetworkState(uuid: uuid, to: .deleted)
        try await context.event("network", uuid, .status, "network deletion complete", since: started)
    }

    /// Brings this node's share of the network in line with the store, after its interfaces changed
    /// here or on another node (the `network.refresh` job) and in every reconciliation pass:
    /// - a network this node realizes is realized (on the network node this includes its DHCP hosts,
    ///   floats and rules; on every node the flood list);
    /// - a hypervisor that no longer needs it removes its bridge and VXLAN;
    /// - on the network node, a delete-wait network whose last interface has gone is deleted.
    ///
    /// Returns the store's view it acted on.
    @discardableResult
    public func converge(_ uuid: UUID) async throws -> NetworkView {
        try await context.locks.hostStep([HostLocks.network(uuid)]) {
            try await convergeHeld(try await planner.view(of: try await store.network(uuid: uuid)))
        }
    }

    /// ``converge(_:)`` from a view the caller already read: a reconciliation pass reads the whole
    /// store once (``HostPlanner/snapshot()``) rather than once per network. The pass holds the host
    /// lock exclusively, so no job changes the host between its read and this. A deletion still
    /// reads the network afresh.
    @discardableResult
    func converge(_ view: NetworkView) async throws -> NetworkView {
        try await context.locks.hostStep([HostLocks.network(view.network.uuid)]) { try await convergeHeld(view) }
    }

    /// ``converge(_:)``, the network's lock held.
    private func convergeHeld(_ view: NetworkView) async throws -> NetworkView {
        if context.isNetworkNode && view.network.state == .deleteWait && view.live.isEmpty {
            try await deleteHeld(view.network.uuid)
        } else if planner.realizes(view) {
            try await realize(view)
        } else if !context.isNetworkNode, !view.hosts.contains(context.nodeName) {
            try await context.networks.removeNodeSide(try await planner.plan(for: view))
        }
        return view
    }

    /// Converges this node's share of each network, then sends `network.refresh` to the other nodes
    /// that have it: the network node (for its DHCP hosts and flood list), and with `meshChanged` the
    /// hypervisors hosting it (for their flood lists). Each network is locked while it converges,
    /// one after another in UUID order.
    func announce(_ networkUUIDs: some Sequence<UUID>, meshChanged: Bool) async throws {
        let nodeName = context.nodeName
        // The network node takes its refreshes through the role, so it is not also sent one by name.
        let networkNodes = meshChanged ? Set(try await store.nodes().filter { $0.roles.contains(.networkNode) }.map(\.name)) : []
        for uuid in Set(networkUUIDs).sorted(by: { $0.uuidString < $1.uuidString }) {
            try Task.checkCancellation()
            let view = try await converge(uuid)
            let refresh = try JobOrder(.networkRefresh, .network(uuid))
            // No object key: a refresh is idempotent and read from the store when it runs, so order
            // does not matter, and a refresh for a node that is down must not hold up later jobs.
            if !context.isNetworkNode { try await enqueueRefresh(refresh, for: .networkNode) }
            guard meshChanged else { continue }
            for name in view.hosts.sorted() where name != nodeName && !networkNodes.contains(name) {
                try await enqueueRefresh(refresh, for: .node(name))
            }
        }
    }

    private func enqueueRefresh(_ order: JobOrder, for target: JobTarget) async throws {
        var job = order.job(for: target)
        job.objectKey = nil
        _ = try await store.enqueue([job])
    }

    /// The network node's host-wide share: the egress bridge, and forwarding and masquerade out of
    /// the configured egress interface (else the default route's). Nothing on a hypervisor.
    public func ensureEgress() async throws {
        guard context.isNetworkNode else { return }
        let context = self.context
        try await context.locks.hostStep([HostLocks.egress]) {
            let uplink: String?
            if let egressInterface = context.egressInterface { uplink = egressInterface } else { uplink = try await context.networks.defaultRouteInterface() }
            try await context.networks.ensureEgress(floatingRange: context.planner.floatingRange, uplink: uplink)
        }
    }

    /// Makes this node's share of the network match the store. Every step is idempotent. The crash
    /// points are named for network.create, the job that first passes them.
    func realize(_ view: NetworkView) async throws {
        let network = view.network
        let plan = try await planner.plan(for: view)
        let mesh = planner.mesh
        try await context.networks.ensureOnNode(plan, underlay: mesh.interface, local: mesh.address)
        guard context.isNetworkNode else { return }
        let thread = try await context.networks.ensureOnNetworkNode(plan)
        try CrashPoint.reach("network.create.after-namespace")
        // One dnsmasq serves DHCP, DNS or both, as Shaken Fist runs one for either.
        if network.provideDHCP || network.provideDNS {
            let extraNames = network.provideDNS ? try await store.networkDNSEntries(uuid: network.uuid) : [:]
            try await dhcp(for: network, thread: thread).ensure(hosts: view.dhcpHosts, extraNames: extraNames)
        }
        try CrashPoint.reach("network.create.after-dhcp")
    }

    /// The network's cached DHCP server (see ``DHCPServers``), made again when the namespace's thread
    /// changed (the namespace was made again underneath the old one).
    func dhcp(for network: Network, thread: NamespaceExecutor) async throws -> DHCPServer {
        let server = try makeDHCPServer(for: network, thread: thread)
        return await context.dhcpServers.server(for: network.uuid, thread: thread) { server }
    }

    /// A DHCP server object for the network's dnsmasq (which it starts or adopts), with DNS when the
    /// network provides it.
    func makeDHCPServer(for network: Network, thread: NamespaceExecutor) throws -> DHCPServer {
        let plan = NetworkPlan(uuid: network.uuid, vxid: try planner.vxlanID(of: network), netblock: network.netblock, provideNAT: false)
        return DHCPServer(
            directory: context.dhcpDirectory + "/" + network.uuid.lowercasedString,
            interface: context.networks.layout.routerInner(plan.vxid), router: plan.router, dhcp: network.provideDHCP,
            dns: network.provideDNS ? DNSService(namespace: network.namespace, settings: context.dns) : nil, thread: thread,
            logger: context.logger)
    }
}
