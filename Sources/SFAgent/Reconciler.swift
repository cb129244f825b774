import Foundation
import Logging
import Metrics
import SFLibvirt
import SFStore
import SFSystem

/// Makes the host match the store again after crashes, restarts and drift: on start, on every
/// libvirt lifecycle event, and in a periodic backstop pass.
///
/// Unknown is not gone: when the store or libvirt cannot be read, the pass stops without removing
/// anything, and only objects the store *successfully* says are deleted (or never existed) and that
/// carry sfnode's mark (the name prefix, the domain metadata) are removed.
public struct Reconciler: Sendable {
    public let agent: NodeAgent
    let logger: Logger
    /// How many networks a pass converges at once: their checks are mostly waits on netlink
    /// round trips, and at 8 the cores were still partly idle (BENCHMARKS.md (f)).
    static let networksAtOnce = 16

    public init(agent: NodeAgent, logger: Logger) {
        self.agent = agent
        self.logger = logger
    }

    /// What one pass found and did, for events, logs and tests.
    public struct Report: Sendable, Equatable {
        public var networksEnsured = 0
        public var instancesStarted = 0
        public var domainsRemoved = 0
        public var namespacesRemoved = 0
        /// Network devices and taps in the host namespace that belonged to no live object.
        public var linksRemoved = 0
        /// Instances found in a transitional state with no job left to move them on, now in error.
        public var stuckInstances = 0
        /// Blob and upload files removed because no record stands for them.
        public var filesSwept = 0

        public init(
            networksEnsured: Int = 0, instancesStarted: Int = 0, domainsRemoved: Int = 0, namespacesRemoved: Int = 0,
            linksRemoved: Int = 0
        ) {
            self.networksEnsured = networksEnsured
            self.instancesStarted = instancesStarted
            self.domainsRemoved = domainsRemoved
            self.namespacesRemoved = namespacesRemoved
            self.linksRemoved = linksRemoved
        }
    }

    /// One full pass. Everything it does is idempotent: on a host that matches, it changes nothing.
    /// It holds the host lock exclusively, so it never runs in the middle of a job's host step (see
    /// ``HostLocks``); downloads go on meanwhile, and the sweep of abandoned blob files waits for a
    /// pass when none runs.
    @discardableResult
    public func reconcileOnce() async throws -> Report {
        let started = ContinuousClock.now
        var report = try await agent.locks.exclusive { try await pass() }
        // A pass over every network frees much (snapshots, the namespace threads it let go, the
        // store's caches of a read of everything); an idle agent should not keep it.
        await agent.store.releaseMemory()
        ProcessMemory.releaseFree()
        // Blob files and uploads no record stands for (a download cut short by a crash, say): only
        // when no download runs, since one in flight has a file no record stands for yet.
        if let images = agent.images {
            do {
                report.filesSwept = try await agent.locks.images.withExclusiveIfFree { try await images.sweep().count } ?? 0
            } catch {
                logger.error("could not sweep blob files; nothing was removed", metadata: ["error": "\(error)"])
            }
        }
        Self.record(report, duration: ContinuousClock.now - started)
        return report
    }

    private func pass() async throws -> Report {
        var report = Report()
        let store = agent.store
        let layout = agent.networks.layout
        let planner = agent.planner
        let domainControl = agent.instances.domainControl
        // Read everything first: a failed read ends the pass before anything is removed. Each kind
        // is read once, whatever the store holds; the networks and instances below are looked up in
        // this snapshot, never read one by one.
        let snapshot = try await planner.snapshot()
        let kept = planner.kept(in: snapshot)
        let networks = kept.allNetworks
        let instances = kept.instances
        let domains = try await domainControl.domains()
        let liveJobs = try await store.jobs(states: [.queued, .running], limit: 10_000)

        // An instance stuck half-way with no job to finish it (its job failed where nobody recorded
        // it) is drift: it goes to its error state, with a message and an event, so that it can be
        // deleted and nobody waits on it for ever. The message is its failed job's own cause when
        // there is one.
        let stuck = HostPlanner.stuckInstances(instances, liveJobs: liveJobs)
        let failedJobs = stuck.isEmpty ? [] : try await store.jobs(states: [.failed], limit: 10_000)
        for instance in stuck {
            guard let next = instance.state.errorState else { continue }
            let message = HostPlanner.stuckReason(instance, failedJobs: failedJobs)
            do {
                try await store.setInstanceState(uuid: instance.uuid, to: next, errorMessage: message)
                try await event("instance", instance.uuid, message)
                report.stuckInstances += 1
            } catch {
                logger.error("could not record a stuck instance", metadata: ["instance.uuid": "\(instance.uuid)", "error": "\(error)"])
            }
        }

        // What this node should have (the planner's rule): every live network on the network node; on
        // a hypervisor, the networks its instances' interfaces are on, and those interfaces' taps.
        let liveInterfaces = kept.interfaces

        // One object that cannot be repaired is logged and skipped: it must not stop the others' repair.
        // Several networks converge at once: a network's checks are round trips to threads (the
        // host's netlink thread, its namespace's), and one after another a pass over 1000 networks
        // left the cores two thirds idle. Each network holds its own lock, as concurrent jobs do.
        // The host's links are read once, before anything is built: the networks are checked
        // against that listing, and the links it names that belong to nothing are removed below.
        let converging = kept.networks.filter { $0.state == .created || $0.state == .deleteWait }
        let links: [String]
        (links, report.networksEnsured) = try await agent.networks.withPassSnapshot { hostLinks in
            do {
                try await agent.networkJobs.ensureEgress()
            } catch {
                logger.error("could not reconcile the egress bridge", metadata: ["error": "\(error)"])
            }
            let ensured = await withTaskGroup(of: Bool.self) { group in
                var waiting = converging.makeIterator()
                func startNext() {
                    guard let network = waiting.next() else { return }
                    group.addTask {
                        do {
                            try await agent.networkJobs.converge(planner.view(of: network, in: snapshot))
                            return true
                        } catch {
                            logger.error("could not reconcile a network", metadata: ["network.uuid": "\(network.uuid)", "error": "\(error)"])
                            return false
                        }
                    }
                }
                for _ in 0..<Self.networksAtOnce { startNext() }
                var ensured = 0
                for await converged in group {
                    if converged { ensured += 1 }
                    startNext()
                }
                return ensured
            }
            return (hostLinks, ensured)
        }

        // Paused domains are running: their taps are QEMU's, and they must not be started again.
        let running = Set(domains.filter { $0.powerState == .on || $0.powerState == .paused }.map(\.identity.uuid))
        // Off on purpose (the guest shut itself down, or someone destroyed it) is what the store
        // should learn, when the lifecycle event has not said so yet; it is not drift to undo.
        let stopped = Set(domains.filter(\.isOffOnPurpose).map(\.identity.uuid))
        // A plan is made only for an instance the pass acts on: an instance that is off as it should
        // be costs nothing, and a running one's taps need only its interfaces, from the snapshot.
        for instance in instances where instance.state == .created {
            do {
                if instance.powerState == .on && stopped.contains(instance.uuid) {
                    try await recordObserved(.off, of: instance.uuid)
                } else if instance.powerState == .on && !running.contains(instance.uuid) {
                    try await agent.instances.ensureRunning(try await planner.plan(for: instance))
                    try await event("instance", instance.uuid, "instance restarted by reconciliation: it should be on")
                    report.instancesStarted += 1
                } else if running.contains(instance.uuid) {
                    try await agent.instances.plugTaps(try planner.tapPlan(for: instance, in: snapshot))
                }
            } catch {
                logger.error("could not reconcile an instance", metadata: ["instance.uuid": "\(instance.uuid)", "error": "\(error)"])
            }
        }

        // Orphans: sfnode's domains and namespaces whose owner the store says is deleted or unknown.
        let known = Dictionary(snapshot.instances.map { ($0.uuid, $0.state) }, uniquingKeysWith: { first, _ in first })
        for domain in domains where domain.identity.name == agent.instances.domainName(of: domain.identity.uuid) {
            let owner = domain.identity.uuid
            guard known[owner] == nil || known[owner] == .deleted else { continue }
            // sfnode's own mark, not just the name: its metadata must name the same instance. Read
            // only for a domain that is to go, since it costs a libvirt call (a domain's XML) each.
            guard try await domainControl.instanceUUID(of: .uuid(owner)) == owner else { continue }
            try await domainControl.destroy(.uuid(owner))
            try await domainControl.undefine(.uuid(owner))
            logger.warning("removed a domain that belongs to no live instance", metadata: ["instance.uuid": "\(owner)"])
            report.domainsRemoved += 1
        }
        // Only the network node makes network namespaces, so only it removes them.
        let liveNetworks = Set(networks.filter { $0.state != .deleted }.map { layout.namespace(of: $0.uuid) })
        for namespace in NetworkNamespace.list()
        where agent.isNetworkNode && namespace.hasPrefix(layout.namespacePrefix) && !liveNetworks.contains(namespace) {
            try await agent.networks.removeNamespace(namespace)
            logger.warning("removed a network namespace that belongs to no live network", metadata: ["netns.name": "\(namespace)"])
            report.namespacesRemoved += 1
        }

        // Devices and taps in the host namespace that belong to no network or interface kept here.
        // The list was read before this pass built anything, so nothing it built can be on it.
        let keptDevices = Set(kept.networks.compactMap { try? planner.vxlanID(of: $0) })
        let keptTaps = Set(liveInterfaces.map { layout.tap(of: $0.uuid) })
        // What the host holds, as the pass found it.
        Gauge(label: "sfnode_host_networks").record(kept.networks.count { $0.state == .created })
        Gauge(label: "sfnode_host_taps").record(keptTaps.count)
        Gauge(label: "sfnode_host_floating_addresses").record(
            agent.isNetworkNode ? kept.networks.reduce(0) { $0 + (snapshot.interfacesByNetwork[$1.uuid] ?? []).count { $0.floating != nil } } : 0)
        for link in links {
            let orphan: Bool
            if let vxid = layout.networkDeviceVXID(link) {
                orphan = !keptDevices.contains(vxid)
            } else {
                orphan = link.hasPrefix(layout.tapPrefix) && !keptTaps.contains(link)
            }
            guard orphan else { continue }
            try await agent.networks.deleteHostLink(link)
            logger.warning("removed a link that belongs to no live network or interface", metadata: ["link.name": "\(link)"])
            report.linksRemoved += 1
        }
        return report
    }

    /// `sfnode_reconcile_pass_seconds`, and what the pass repaired by kind
    /// (`sfnode_reconcile_repairs_total{kind}`).
    static func record(_ report: Report, duration: Duration) {
        Timer(label: "sfnode_reconcile_pass_seconds").recordSeconds(duration / .seconds(1))
        for (kind, count) in [
            ("instance_restarted", report.instancesStarted), ("domain_removed", report.domainsRemoved),
            ("namespace_removed", report.namespacesRemoved), ("link_removed", report.linksRemoved),
            ("stuck_instance", report.stuckInstances), ("file_swept", report.filesSwept),
        ] {
            Counter(label: "sfnode_reconcile_repairs_total", dimensions: [("kind", kind)]).increment(by: count)
        }
    }

    /// Follows libvirt's lifecycle events as they happen, so a guest that powers itself off is seen
    /// at once ("detected poweroff"), not at the next pass. Runs until cancelled.
    public func followLifecycleEvents() async throws {
        for await event in try await agent.instances.domainControl.domainLifecycleEvents() {
            let uuid = event.identity.uuid
            guard let instance = try? await agent.store.instance(uuid: uuid), instance.node == agent.nodeName else { continue }
            let state: SFStore.PowerState?
            switch event.kind {
            case .stopped, .shutdown: state = .off
            case .crashed: state = .crashed
            case .suspended, .pmsuspended: state = .paused
            case .started, .resumed: state = .on
            default: state = nil
            }
            guard let state, state != instance.powerState, instance.state == .created else { continue }
            // One failed write loses this event only, not the stream.
            do {
                try await recordObserved(state, of: uuid)
            } catch {
                logger.warning("recording a power state change failed", metadata: ["instance.uuid": "\(uuid)", "error": "\(error)"])
            }
        }
    }

    /// Calls `drifted` whenever a link sfnode made in the host namespace is removed or goes down, so
    /// that a deleted bridge or tap is repaired at once rather than at the next periodic pass.
    /// Runs until cancelled.
    public func followLinkChanges(_ drifted: @escaping @Sendable () async -> Void) async throws {
        let layout = agent.networks.layout
        for await change in try await agent.networks.hostLinkChanges() {
            let name: String
            switch change {
            case .removed(let removed, _): name = removed
            case .changed(let link) where !link.isUp: name = link.name
            default: continue
            }
            if layout.isAgentLink(name) {
                logger.info("a link of sfnode's changed under it; reconciling", metadata: ["link.name": "\(name)"])
                await drifted()
            }
        }
    }

    /// Records a power state the instance was seen in, not one sfnode set ("detected poweroff").
    private func recordObserved(_ state: SFStore.PowerState, of uuid: UUID) async throws {
        try await agent.store.setPowerState(uuid: uuid, state)
        try await event("instance", uuid, "detected \(state == .off ? "poweroff" : state.rawValue)")
    }

    private func event(_ type: String, _ uuid: UUID, _ message: String) async throws {
        try await agent.store.record(
            Event(objectType: type, objectUUID: uuid.lowercasedString, type: .audit, fqdn: agent.nodeName, message: message))
    }
}
