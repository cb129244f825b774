import Foundation
import Logging
import SFBlobs
import SFDaemonSupport
import SFLibvirt
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

    /// The long-running parts, for a ServiceGroup: reconciliation, the job runner, check-in and retention.
    public var services: [any Service] {
        [
            ReconcilerService(reconciler: Reconciler(agent: node, logger: logger), logger: logger),
            JobRunnerService(runner: runner),
            CheckInService(agent: node, logger: logger),
            retention,
        ]
    }
}

/// Where the agent puts things. The name and tap prefixes set the machine-global names it makes
/// (network namespaces and domains, taps), so that a test's agent (or a second agent on one
/// machine) only ever sees, makes and removes its own.
public func hostLayout(settings: AgentConfiguration) -> HostLayout {
    var layout = HostLayout(hostNamespace: settings.hostNamespace, mtu: settings.mtu)
    if let prefix = settings.namePrefix { layout.namespacePrefix = prefix }
    if let prefix = settings.tapPrefix { layout.tapPrefix = prefix }
    return layout
}

/// The store the settings name: the PostgreSQL database of `storeURL`, else the SQLite file at
/// `storePath` (its directory made if missing). Every command opens it here.
public func openStore(settings: AgentConfiguration, logger: Logger) throws -> SQLStore {
    if settings.storeURL == nil {
        try FileManager.default.createDirectory(
            atPath: (settings.storePath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    }
    return try SQLStore.open(location: settings.storeLocation, fqdn: settings.nodeName, logger: logger)
}

/// Builds the agent from its settings (store, plumbing sessions, realizers, handlers) and checks it
/// in. `sfnode agent`, the tests and the benchmarks all assemble it here.
public func buildAgent(settings: AgentConfiguration, logger: Logger) async throws -> Agent {
    let store = try openStore(settings: settings, logger: logger)
    let layout = hostLayout(settings: settings)
    let host = NetlinkSession(thread: try await NamespaceExecutor.start(namespace: settings.hostNamespace), logger: logger)
    let root = settings.hostNamespace == nil ? host : try NetlinkSession(namespace: nil, logger: logger)
    let libvirt = try LibvirtConnection(uri: settings.libvirtURI, logger: logger)
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
        images: ImageResolver(
            records: store, storagePath: settings.storagePath, nodeName: settings.nodeName,
            rules: DestinationRules(allow: settings.fetchAllow, deny: settings.fetchDeny),
            cacheHighWaterBytes: Int64(settings.imageCacheGiB) << 30, imageDownloadURL: settings.imageDownloadURL,
            fetchLimits: HTTPFetcher.Configuration(
                deadline: .seconds(settings.fetchDeadlineSeconds), minimumBytesPerSecond: Int64(settings.fetchMinRateKiB) << 10,
                rateWindow: .seconds(settings.fetchRateWindowSeconds), maxBytes: Int64(settings.imageMaxGiB) << 30),
            imageLimits: ImageLimits(
                maxImageBytes: Int64(settings.imageMaxGiB) << 30, qemuImgTimeLimit: .seconds(settings.qemuImgTimeoutSeconds)),
            logger: logger),
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
    return Agent(
        store: store, node: node, runner: runner, libvirt: libvirt, logger: logger,
        retention: RetentionService(store: store, settings: settings, logger: logger))
}
