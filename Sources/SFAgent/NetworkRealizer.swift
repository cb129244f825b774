import Foundation
import Logging
import SFFirewall
import SFNetlink
import SFSystem

/// What one network needs on this host, derived from the store: the realizer makes the host match it.
public struct NetworkPlan: Sendable, Equatable {
    /// A floating address and the private address it stands for.
    public struct Float: Sendable, Equatable, Hashable {
        public var floating: IPv4Address
        public var privateAddress: IPv4Address

        public init(floating: IPv4Address, privateAddress: IPv4Address) {
            self.floating = floating
            self.privateAddress = privateAddress
        }
    }

    public var uuid: UUID
    /// The VXLAN network identifier, which also names the network's devices.
    public var vxid: UInt32
    /// The network's address range; its index 1 is the router.
    public var netblock: IPv4Prefix
    /// Whether the network reaches the outside through NAT on the network node.
    public var provideNAT: Bool
    /// The network's own address on the egress side, with the floating range's prefix length.
    public var floatingGateway: IPv4Prefix?
    /// The egress bridge's address (the floating range's index 1), the network's default route.
    public var egressRouter: IPv4Address?
    /// The floating addresses currently floated to interfaces of this network.
    public var floats: [Float]
    /// The underlay addresses of the other nodes with this network; never this node's own.
    public var meshPeers: [IPv4Address]

    public init(
        uuid: UUID, vxid: UInt32, netblock: IPv4Prefix, provideNAT: Bool, floatingGateway: IPv4Prefix? = nil,
        egressRouter: IPv4Address? = nil, floats: [Float] = [], meshPeers: [IPv4Address] = []
    ) {
        self.uuid = uuid
        self.vxid = vxid
        self.netblock = netblock
        self.provideNAT = provideNAT
        self.floatingGateway = floatingGateway
        self.egressRouter = egressRouter
        self.floats = floats
        self.meshPeers = meshPeers
    }

    /// The router address: index 1 of the netblock, with its prefix length.
    public var router: IPv4Prefix {
        // The length comes from a valid prefix, so this cannot fail.
        (try? IPv4Prefix(address: netblock.host(1), length: netblock.length)) ?? netblock
    }

    /// Every firewall rule the network's namespace should hold, in order: floats (DNAT in, SNAT
    /// out) before the masquerade of the whole range, so a floated guest leaves from its own address.
    /// The hairpin comes first in POSTROUTING: an instance reaching a floating address of its own
    /// network (another's or its own) is answered through the router, from the router's address.
    public func firewallState(layout: HostLayout) -> FirewallState {
        guard provideNAT else { return FirewallState() }
        let inner = layout.routerInner(vxid)
        let egress = layout.egressInner(vxid)
        var rules: [FirewallRule] = floats.map { .dnat(floating: $0.floating, to: $0.privateAddress) }
        rules.append(.hairpin(network: netblock.network, to: router.address))
        rules += floats.map { .snat(source: $0.privateAddress, to: $0.floating) }
        rules.append(.masquerade(source: netblock.network, outInterface: egress))
        rules.append(.forwardAccept(inInterface: inner, outInterface: egress))
        rules.append(.forwardAccept(inInterface: egress, outInterface: inner))
        return FirewallState(rules: rules)
    }
}

/// Makes a host's links, addresses, routes and rules match the networks it should have.
///
/// Every method converges: run twice, or after a crash half-way, it ends in the same state and
/// duplicates nothing, because every step is an idempotent plumbing call.
public struct NetworkRealizer: Sendable {
    public let layout: HostLayout
    /// The netlink session in the host namespace.
    public let host: NetlinkSession
    /// The host namespace's rules: forwarding and masquerade between the egress bridge and the uplink.
    private let hostFirewall: Firewall
    /// One thread per network namespace, kept while the namespace is the same one, at most
    /// ``namespaceThreadLimit`` of them.
    private let namespaceThreads: NamespaceThreads
    let logger: Logger

    /// How many network namespaces' threads are kept between uses, by default (`SFNODE_NAMESPACE_THREADS`).
    public static let defaultNamespaceThreadLimit = 64

    /// With `namespaceThreadLimit`, how many network namespaces' threads are kept between uses (the
    /// least recently used goes first): a thread costs its stack and allocator caches, about 30 KiB
    /// resident each, and a network node with thousands of networks must not keep one for each.
    public init(layout: HostLayout, host: NetlinkSession, namespaceThreadLimit: Int = defaultNamespaceThreadLimit, logger: Logger) {
        self.layout = layout
        self.host = host
        self.hostFirewall = Firewall(thread: host.thread, logger: logger)
        self.namespaceThreads = NamespaceThreads(limit: namespaceThreadLimit)
        self.logger = logger
    }

    /// What a reconciliation pass read of the host namespace at its start, in one dump each
    /// (``withPassSnapshot(_:)``): its links, and its flood lists (nil when that dump failed).
    /// The pass holds the host lock exclusively, so no job changes the host while it runs, and each
    /// network's converge touches only that network's devices: what the listing says of them stays
    /// true until that converge changes it. A device the pass made itself is absent from the
    /// listing, so it is never taken as converged on the listing's word.
    struct PassListing {
        let links: LinkListing
        let floods: FloodListing?
    }

    @TaskLocal static var passListing: PassListing?

    public func withPassSnapshot<T: Sendable>(_ body: (_ hostLinks: [String]) async throws -> T) async throws -> T {
        let floods: FloodListing?
        do {
            floods = try await host.allFloodEntries()
        } catch {
            // Each network then reads its own list, as a job does.
            logger.warning("could not list every flood entry at once", metadata: ["error": "\(error)"])
            floods = nil
        }
        // Unlike the flood lists, a pass cannot go on without it: it names the links to remove.
        let links = LinkListing(try await host.links())
        await namespaceThreads.beginPass()
        do {
            let result = try await Self.$passListing.withValue(PassListing(links: links, floods: floods)) { try await body(links.names) }
            await namespaceThreads.endPass()
            return result
        } catch {
            await namespaceThreads.endPass()
            throw error
        }
    }

    /// The part every node with the network has: the VXLAN on the bridge, and the flood list naming
    /// exactly the other nodes (a node in its own list sees every frame twice). In a pass, a device
    /// the listing shows as its create would leave it costs no request.
    public func ensureOnNode(_ plan: NetworkPlan, underlay: String?, local: IPv4Address?) async throws {
        let bridge = layout.bridge(plan.vxid)
        let vxlan = layout.vxlan(plan.vxid)
        let listing = Self.passListing
        if listing?.links.holds(bridge, kind: .bridge, up: true) != true {
            try await host.createBridge(name: bridge, mtu: layout.mtu, up: true)
        }
        if listing?.links.holds(vxlan, kind: .vxlan, vxlanID: plan.vxid, master: bridge, up: true) != true {
            try await host.createVXLAN(
                name: vxlan, id: plan.vxid, underlay: underlay, local: local, mtu: layout.mtu, master: bridge, up: true)
        }
        let wanted = Set(plan.meshPeers.filter { $0 != local })
        let present: Set<IPv4Address>
        if let listing, let floods = listing.floods {
            // A VXLAN the listing did not see was made since, and the kernel gives a new one an empty list.
            present = Set(listing.links[vxlan].map { floods.remotes(ofIndex: $0.index) } ?? [])
        } else {
            present = Set(try await host.floodEntries(device: vxlan))
        }
        for remote in present.subtracting(wanted) { try await host.deleteFloodEntry(device: vxlan, remote: remote) }
        for remote in wanted.subtracting(present) { try await host.appendFloodEntry(device: vxlan, remote: remote) }
    }

    /// The egress bridge every network's egress veth joins, holding the floating range's router
    /// address. Only on the network node. With an `uplink` (the interface towards the outside), the
    /// host forwards between the two and masquerades the floating range out of the uplink, as Shaken
    /// Fist does, so guests reach the outside even when the floating range is not routed to the node.
    public func ensureEgress(floatingRange: IPv4Prefix, uplink: String?) async throws {
        if Self.passListing?.links.holds(layout.egressBridge, kind: .bridge, up: true) != true {
            try await host.createBridge(name: layout.egressBridge, up: true)
        }
        try await host.addAddress(try IPv4Prefix(address: floatingRange.host(1), length: floatingRange.length), to: layout.egressBridge)
        try await host.setSysctl("net/ipv4/ip_forward", "1")
        guard let uplink else { return }
        try await hostFirewall.apply(
            FirewallState(rules: [
                .masquerade(source: floatingRange, outInterface: uplink),
                .forwardAccept(inInterface: layout.egressBridge, outInterface: uplink),
                .forwardAccept(inInterface: uplink, outInterface: layout.egressBridge),
            ]))
    }

    /// The interface of the host namespace's default route, if it has one.
    public func defaultRouteInterface() async throws -> String? {
        try await host.routes().first(where: \.isDefault)?.device
    }

    /// The network node's part: the namespace, the router veth into the bridge, and with NAT the
    /// egress veth, the floating gateway and floats, the default route and the firewall state.
    /// Returns the namespace's thread so that the caller can start dnsmasq there.
    @discardableResult
    public func ensureOnNetworkNode(_ plan: NetworkPlan) async throws -> NamespaceExecutor {
        let namespace = layout.namespace(of: plan.uuid)
        let thread = try await namespaceThreads.thread(in: namespace)
        let inside = NetlinkSession(thread: thread, logger: logger)
        let inner = layout.routerInner(plan.vxid)
        let routerOuter = layout.routerOuter(plan.vxid)
        // The namespace's few links in one request, rather than one per check below.
        var insideLinks = LinkListing(try await inside.links())
        let egressOuter = layout.egressOuter(plan.vxid)
        let egress = layout.egressInner(plan.vxid)
        // A veth whose inner end is not in the namespace was left by a namespace deleted underneath
        // it (the end went with the old namespace, or is stuck in it): made again, not kept.
        // (In a pass, only an end the listing shows: deleting what is not there still costs a request.)
        for (outer, end) in [(routerOuter, inner), (egressOuter, egress)]
        where insideLinks[end] == nil && Self.passListing.map({ $0.links[outer] != nil }) ?? true {
            try await host.deleteLink(outer)
        }
        if insideLinks["lo"]?.isUp != true { try await inside.setLinkUp("lo", true) }
        try await ensureVeth(
            routerOuter, master: layout.bridge(plan.vxid), mtu: layout.mtu, inner: inner, mac: layout.routerMAC(plan.vxid),
            in: inside, listed: &insideLinks)
        // The egress side exists only on a NAT network that has both of its addresses.
        var egressPath: (gateway: IPv4Prefix, router: IPv4Address)?
        if plan.provideNAT, let gateway = plan.floatingGateway, let router = plan.egressRouter { egressPath = (gateway, router) }
        if egressPath != nil {
            try await ensureVeth(
                egressOuter, master: layout.egressBridge, mtu: nil, inner: egress, mac: layout.egressMAC(plan.vxid),
                in: inside, listed: &insideLinks)
        }
        // The namespace's addresses in one request, after any veth was made: an address is added
        // only where it is missing, as a pass finds them all present.
        let held = try await inside.addressesByIndex()
        func addresses(of device: String) -> [IPv4Prefix] { insideLinks[device].flatMap { held[$0.index] } ?? [] }
        if !addresses(of: inner).contains(plan.router) { try await inside.addAddress(plan.router, to: inner) }
        if let egressPath {
            let present = addresses(of: egress)
            if !present.contains(egressPath.gateway) { try await inside.addAddress(egressPath.gateway, to: egress) }
            // Floats are /32s on the egress side, so the namespace answers ARP for them.
            let wanted = Set(plan.floats.map(\.floating))
            for address in present where address.length == 32 && !wanted.contains(address.address) {
                try await inside.deleteAddress(address, from: egress)
            }
            for floating in wanted {
                let address = try IPv4Prefix(address: floating, length: 32)
                if !present.contains(address) { try await inside.addAddress(address, to: egress) }
            }
            try await inside.replaceRoute(.defaultRoute(via: egressPath.router, device: egress))
            // Hairpinned traffic leaves by the interface it came in on; a redirect would tell the guest
            // to bypass the router, whose NAT the reply needs.
            try await inside.setSysctls(
                [("net/ipv4/ip_forward", "1")] + ["all", inner].map { ("net/ipv4/conf/\($0)/send_redirects", "0") })
        }
        try await Firewall(thread: thread, logger: logger).apply(plan.firewallState(layout: layout))
        return thread
    }

    /// The veth `outer` (in the host namespace, up on `master`) ↔ `inner` (in `inside`'s
    /// namespace, up with `mac`), from `insideLinks`, the namespace's links as listed (read again
    /// when the pair is made). Each is changed only where it differs: a change that changes
    /// nothing still costs a request, and a pass makes thousands.
    private func ensureVeth(
        _ outer: String, master: String, mtu: Int?, inner: String, mac: MACAddress, in inside: NetlinkSession,
        listed insideLinks: inout LinkListing
    ) async throws {
        if insideLinks[inner] == nil || Self.passListing?.links.holds(outer, kind: .veth, master: master, up: true) != true {
            try await host.createVethPair(
                name: outer, peer: inner, peerNamespace: inside.namespace, mtu: mtu, master: master, up: true)
            insideLinks = LinkListing(try await inside.links())
        }
        if insideLinks[inner]?.mac != mac { try await inside.setMAC(inner, mac) }
        if insideLinks[inner]?.isUp != true { try await inside.setLinkUp(inner, true) }
    }

    /// Removes the network from this host: its namespace (with everything inside it) and its devices
    /// in the host namespace. Removing what is gone is not an error.
    public func remove(_ plan: NetworkPlan) async throws {
        try await removeNamespace(layout.namespace(of: plan.uuid))
        for device in [layout.routerOuter(plan.vxid), layout.egressOuter(plan.vxid)] { try await host.deleteLink(device) }
        try await removeNodeSide(plan)
    }

    /// Deletes a network namespace (and everything in it), dropping its cached thread first: the
    /// thread would otherwise keep the namespace alive after its name is gone.
    public func removeNamespace(_ namespace: String) async throws {
        await namespaceThreads.forget(namespace)
        try NetworkNamespace.delete(named: namespace)
    }

    /// Removes what every node with the network has (the VXLAN and the bridge), from a hypervisor
    /// that no longer hosts any of the network's interfaces.
    public func removeNodeSide(_ plan: NetworkPlan) async throws {
        for device in [layout.vxlan(plan.vxid), layout.bridge(plan.vxid)] { try await host.deleteLink(device) }
    }
}

/// The threads of the network namespaces, so that repeated passes over a network reuse one thread
/// instead of starting another each time. A namespace deleted (and perhaps made again) underneath
/// its thread is noticed through its identity, and gets a new thread in the namespace that now has
/// the name; a stale thread would keep building in a namespace nobody can reach.
///
/// At most `limit` threads are kept: past that, the least recently used is let go (it ends once its
/// last user drops it), so a node's threads do not grow with its networks. A pass over more networks
/// than that starts a thread for each, which costs far less than keeping thousands.
actor NamespaceThreads {
    /// The thread of each namespace, or the start of one still under way: a second caller for the
    /// same namespace waits for that start instead of making a second thread.
    private var threads: [String: Task<NamespaceExecutor, any Error>] = [:]
    /// When each kept namespace's thread was last asked for, as a count of requests.
    private var lastUse: [String: UInt64] = [:]
    private var requests: UInt64 = 0
    let limit: Int

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// The thread in `namespace`, creating the namespace when it is missing.
    func thread(in namespace: String) async throws -> NamespaceExecutor {
        passNamespaces?.insert(namespace)
        requests += 1
        lastUse[namespace] = requests
        if let pending = threads[namespace], let thread = try? await pending.value, thread.isCurrent { return thread }
        let start = Task { try await NamespaceExecutor.start(namespace: namespace, creating: true) }
        threads[namespace] = start
        letGoBeyondLimit(keeping: namespace)
        do {
            return try await start.value
        } catch {
            // Only this start's entry: another caller may have begun a newer one meanwhile.
            if threads[namespace] == start {
                threads[namespace] = nil
                lastUse[namespace] = nil
            }
            throw error
        }
    }

    /// How many threads are kept now (for tests).
    var count: Int { threads.count }

    /// The namespaces the pass under way has asked for; nil outside a pass.
    private var passNamespaces: Set<String>?

    func beginPass() {
        passNamespaces = []
    }

    /// Ends a pass. One that went through more namespaces than are kept lets every kept thread
    /// go: the next pass takes the namespaces in the same order, so a least-recently-used set
    /// smaller than the cycle never serves it (each thread kept would be let go before its turn
    /// came), and an idle network node would hold `limit` threads' memory for nothing.
    func endPass() {
        defer { passNamespaces = nil }
        guard let seen = passNamespaces, seen.count > limit else { return }
        threads.removeAll()
        lastUse.removeAll()
    }

    func forget(_ namespace: String) {
        threads[namespace] = nil
        lastUse[namespace] = nil
    }

    /// Lets go of the least recently used threads until at most `limit` are kept. A caller still
    /// using one keeps it alive until it is done.
    private func letGoBeyondLimit(keeping namespace: String) {
        while threads.count > limit {
            guard let oldest = lastUse.filter({ $0.key != namespace }).min(by: { $0.value < $1.value })?.key else { return }
            forget(oldest)
        }
    }
}
