import Foundation
import Logging
import SFBlobs
import SFDaemonSupport
import SFControl
import SFLibvirt
import SFMetrics
import SFNetlink
import SFStore
import SFSystem
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// An assembled agent: its store, its handlers and its job runner, and the services that run it.
public struct Agent: Sendable {
    public let store: SQLStore
    public let node: NodeAgent
    public let runner: JobRunner
    /// The libvirt connection the instance realizer drives, for closing at exit.
    public let libvirt: LibvirtConnection
    public let logger: Logger
    /// Prunes the store's old events, finished jobs and deleted objects.
    public let retention: RetentionService
    /// The other nodes, reached over the mesh; nil on a node without one.
    public let peers: PeerClient?
    /// Serves this node's blobs and console logs to the other nodes; nil without a mesh.
    let peerServer: PeerServerService?
    /// What the names of this agent's domains start with (the layout's prefix).
    let domainNamePrefix: String

    /// What this agent adds to a `/metrics` scrape: its domains, under libvirt-exporter's names, and
    /// the queue's depth. Each source is read at most once per `cacheLifetime` however often
    /// Prometheus (or anyone) scrapes, and a scrape never reads the store's objects. The domains are
    /// read on a libvirt connection of their own, so that a scrape never waits behind a guest the
    /// realizer is starting (one connection's calls run one at a time).
    public func metricsCollectors(cacheLifetime: Duration = CachedCollector.defaultLifetime) throws -> [any MetricsCollector] {
        let prefix = domainNamePrefix
        return [
            CachedCollector(
                DomainStatsCollector(
                    libvirt: try LibvirtConnection(uri: libvirt.uri, logger: logger), isOurs: { $0.name == prefix + $0.uuid.lowercasedString },
                    logger: logger),
                lifetime: cacheLifetime),
            QueueDepthCollector.cached(store: store, logger: logger, lifetime: cacheLifetime),
        ]
    }

    /// The long-running parts, for a ServiceGroup: reconciliation, the job runner, check-in and retention.
    public var services: [any Service] {
        [
            ReconcilerService(reconciler: Reconciler(agent: node, logger: logger), logger: logger),
            JobRunnerService(runner: runner),
            CheckInService(agent: node, logger: logger),
            retention,
        ] + (peerServer.map { [$0] } ?? [])
    }
}

/// Where the agent puts things. The name and tap prefixes set the machine-global names it makes
/// (network namespaces and domains, taps), so that a test's agent (or a second agent on one
/// machine) only ever sees, makes and removes its own.
public func hostLayout(settings: NodeConfiguration) -> HostLayout {
    var layout = HostLayout(hostNamespace: settings.hostNamespace, mtu: settings.mtu)
    if let prefix = settings.namePrefix { layout.namespacePrefix = prefix }
    if let prefix = settings.tapPrefix { layout.tapPrefix = prefix }
    return layout
}

/// The store the settings name: the PostgreSQL database of `storeURL`, else the SQLite file at
/// `storePath` (its directory made if missing). Every command opens it here.
public func openStore(settings: NodeConfiguration, logger: Logger) throws -> SQLStore {
    if settings.storeURL == nil {
        try FileManager.default.createDirectory(
            atPath: (settings.storePath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    }
    return try SQLStore.open(location: settings.storeLocation, fqdn: settings.nodeName, logger: logger)
}

/// Builds the agent from its settings (store, plumbing sessions, realizers, handlers) and checks it
/// in. `sfnode agent`, the tests and the benchmarks all assemble it here.
public func buildAgent(settings: NodeConfiguration, logger: Logger) async throws -> Agent {
    let store = try openStore(settings: settings, logger: logger)
    let layout = hostLayout(settings: settings)
    let host = NetlinkSession(thread: try await NamespaceExecutor.start(namespace: settings.hostNamespace), logger: logger)
    let root = settings.hostNamespace == nil ? host : try NetlinkSession(namespace: nil, logger: logger)
    let libvirt = try LibvirtConnection(uri: settings.libvirtURI, logger: logger)
    let fetchLimits = HTTPFetcher.Configuration(
        deadline: .seconds(settings.fetchDeadlineSeconds), minimumBytesPerSecond: Int64(settings.fetchMinRateKiB) << 10,
        rateWindow: .seconds(settings.fetchRateWindowSeconds), maxBytes: Int64(settings.imageMaxGiB) << 30)
    let peers = try await makePeerClient(settings: settings, store: store, logger: logger)
    let images = ImageResolver(
        records: store, storagePath: settings.storagePath, nodeName: settings.nodeName,
        rules: DestinationRules(allow: settings.fetchAllow, deny: settings.fetchDeny),
        cacheHighWaterBytes: Int64(settings.imageCacheGiB) << 30, imageDownloadURL: settings.imageDownloadURL,
        fetchLimits: fetchLimits,
        imageLimits: ImageLimits(
            maxImageBytes: Int64(settings.imageMaxGiB) << 30, qemuImgTimeLimit: .seconds(settings.qemuImgTimeoutSeconds)),
        peers: peers.map { BlobPeers(client: $0, nodes: store, nodeName: settings.nodeName) }, logger: logger)
    let node = NodeAgent(
        store: store, networks: NetworkRealizer(layout: layout, host: host, namespaceThreadLimit: settings.namespaceThreads, logger: logger),
        instances: InstanceRealizer(
            layout: layout, host: host, root: root, libvirt: libvirt, storagePath: settings.storagePath,
            virtualization: settings.virtualizationType.resolved(logger: logger),
            qemuImgTimeLimit: .seconds(settings.qemuImgTimeoutSeconds), logger: logger),
        nodeName: settings.nodeName, floatingRange: settings.floatingRange,
        dhcpDirectory: settings.storagePath + "/dhcp", isNetworkNode: settings.isNetworkNode,
        mesh: Mesh(address: settings.meshAddress, interface: settings.meshInterface),
        egressInterface: settings.egressInterface,
        images: images,
        dns: DNSSettings(zone: settings.dnsZone, upstream: settings.resolvedDNSServer()), consoleAddress: settings.consoleAddress,
        logger: logger)
    // How long a claimed job stays ours without a heartbeat: after a crash, this is how long its
    // job waits before another agent (or this one, restarted) takes it again.
    let runner = JobRunner(
        store: store, targets: node.jobTargets, owner: "\(settings.nodeName):\(getpid()):\(UUID().uuidString.prefix(8))",
        lease: .seconds(settings.jobLeaseSeconds), workers: settings.jobWorkers, downloadWorkers: settings.jobDownloadWorkers,
        maxDeaths: settings.jobMaxDeaths, logger: logger)
    await node.register(with: runner)
    // Before any job or pass: the other nodes can only flood to a node whose mesh address is stored.
    do {
        try await node.checkIn()
    } catch {
        logger.warning("first check-in failed; the check-in service retries", metadata: ["error": "\(error)"])
    }
    var peerServer: PeerServerService?
    if let meshAddress = settings.meshAddress, let credentials = peers?.credentials {
        let blobs = images.blobs
        peerServer = PeerServerService(logger: logger) {
            try await PeerServer.start(
                address: meshAddress, port: settings.peerPort, namespace: settings.hostNamespace, credentials: credentials, blobs: blobs,
                instanceFiles: InstanceFiles(storagePath: settings.storagePath), logger: logger)
        }
    }
    return Agent(
        store: store, node: node, runner: runner, libvirt: libvirt, logger: logger,
        retention: RetentionService(store: store, settings: settings, logger: logger), peers: peers, peerServer: peerServer,
        domainNamePrefix: layout.namespacePrefix)
}

/// The client that reaches the other nodes over the mesh, from the namespace holding this node's
/// mesh address; nil for a node with no mesh address (a single node has no one to ask).
public func makePeerClient(
    settings: NodeConfiguration, store: SQLStore, logger: Logger
) async throws -> PeerClient? {
    guard settings.meshAddress != nil else { return nil }
    let credentials = try await PeerCredentials.load(records: store, nodeName: settings.nodeName)
    return try await PeerClient.make(namespace: settings.hostNamespace, credentials: credentials, port: settings.peerPort,
        limits: PeerClient.Limits(deadline: .seconds(settings.fetchDeadlineSeconds)), logger: logger)
}
