import ArgumentParser
import Foundation
import Logging
import SFAgent
import SFDaemonSupport
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// `sfnode agent`: the daemon. Takes jobs for this node from the store and realizes them, under
/// swift-service-lifecycle; SIGTERM lets the current job finish and stops within a bound.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Run the node agent (takes jobs from the store and makes the host match).")

    @Option(help: "The configuration file (default: $SFNODE_CONFIG, else /etc/sfnode/agent.json).")
    var config: String?

    func run() async throws {
        let settings = try AgentConfiguration.load(commandLinePath: config)
        LoggingBootstrap.bootstrap(
            level: settings.logLevel, identifier: "sfnode-agent", metadataProvider: JobContext.metadataProvider)
        var logger = Logger(label: "sfnode.agent")
        logger[metadataKey: "node.name"] = "\(settings.nodeName)"
        let agent = try await AgentAssembly.make(settings: settings, logger: logger)
        var configuration = ServiceGroupConfiguration(
            services: [
                .init(service: ReconcilerService(reconciler: Reconciler(agent: agent.node, logger: logger), logger: logger)),
                .init(service: JobRunnerService(runner: agent.runner)),
                .init(service: CheckInService(agent: agent.node, logger: logger)),
                .init(service: SystemdService.fromEnvironment(readyStatus: "taking jobs", logger: logger)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // A job still running after this is cancelled (it is re-run when its lease lapses); the
        // unit's TimeoutStopSec (30 s) is longer.
        configuration.maximumGracefulShutdownDuration = .seconds(20)
        let group = ServiceGroup(configuration: configuration)
        logger.info("agent started", metadata: ["store.path": "\(settings.storePath)"])
        var failed = false
        do {
            try await group.run()
        } catch {
            logger.error("agent failed", metadata: ["error": "\(error)"])
            failed = true
        }
        logger.info("agent stopped")
        await agent.node.instances.libvirt.close()
        if failed {
            fflush(nil)
            _exit(1)
        }
        // Leave without running exit()'s destructors: libvirt's event-loop thread is still alive,
        // and tearing its globals down under it crashed the process (malloc_consolidate) on the way
        // out of an otherwise clean stop. Everything the agent owns is already closed or committed,
        // and its log lines are sent as they are written.
        fflush(nil)
        _exit(0)
    }
}

/// The job runner as a service: on graceful shutdown it finishes the job it runs and takes no other.
struct JobRunnerService: Service {
    let runner: JobRunner

    func run() async throws {
        let runner = self.runner
        await withGracefulShutdownHandler {
            await runner.run()
        } onGracefulShutdown: {
            Task { await runner.stop() }
        }
    }
}

/// Reconciliation as a service: a full pass at start, libvirt lifecycle events as they come, and a
/// backstop pass every 30 s. A failed pass is logged and retried; it never stops the agent.
struct ReconcilerService: Service {
    let reconciler: Reconciler
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await repeatUntilCancelled(logger: logger, failure: "lifecycle events stopped; following them again") {
                        try await reconciler.followLifecycleEvents()
                    } pause: {
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                let drift = DriftSignal()
                group.addTask {
                    await repeatUntilCancelled(logger: logger, failure: "link changes stopped; following them again") {
                        try await reconciler.followLinkChanges { await drift.raise() }
                    } pause: {
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                group.addTask {
                    await repeatUntilCancelled(logger: logger, failure: "reconciliation pass failed; nothing was removed", level: .error) {
                        let report = try await reconciler.reconcileOnce()
                        logger.debug("reconciled", metadata: ["reconcile.report": "\(report)"])
                    } pause: {
                        // The backstop every 30 s; a link of ours going away brings the next pass forward.
                        await drift.wait(upTo: .seconds(30))
                    }
                }
            }
        }
    }
}

/// Runs `body` again and again until the task is cancelled, with `pause` after each run. A failure
/// is logged as `failure` with its error, and the loop goes on: none of these may stop the agent.
func repeatUntilCancelled(
    logger: Logger, failure: String, level: Logger.Level = .warning, _ body: () async throws -> Void, pause: () async -> Void
) async {
    while !Task.isCancelled {
        do {
            try await body()
        } catch {
            logger.log(level: level, "\(failure)", metadata: ["error": "\(error)"])
        }
        await pause()
    }
}

/// Records this node in the store (roles, mesh address, last seen) at start and every 30 s, so the
/// other nodes can flood to it and operators can see it is alive. A failed check-in is logged and
/// retried; it never stops the agent.
struct CheckInService: Service {
    let agent: NodeAgent
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            await repeatUntilCancelled(logger: logger, failure: "check-in failed") {
                try await agent.checkIn()
            } pause: {
                try? await Task.sleep(for: .seconds(30))
            }
        }
    }
}

/// A coalescing "something drifted" flag between the link watcher and the reconciliation loop.
actor DriftSignal {
    private var raised = false

    func raise() { raised = true }

    /// Returns when the signal is raised (clearing it) or after `limit`, whichever comes first.
    func wait(upTo limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while !raised && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
        }
        raised = false
    }
}

/// Builds the agent from its settings: store, plumbing sessions, realizers, handlers.
enum AgentAssembly {
    struct Agent {
        let store: SQLiteStore
        let node: NodeAgent
        let runner: JobRunner
    }

    /// Where the agent puts things. Two test and operator knobs set the prefixes of the
    /// machine-global names it makes (network namespaces and domains, taps), so that a test's agent
    /// (or a second agent on one machine) only ever sees, makes and removes its own. Unset or empty:
    /// the production defaults.
    static func layout(settings: AgentConfiguration, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> HostLayout
    {
        var layout = HostLayout(hostNamespace: settings.hostNamespace, mtu: settings.mtu)
        if let prefix = environment["SFNODE_NAME_PREFIX"], !prefix.isEmpty { layout.namespacePrefix = prefix }
        if let prefix = environment["SFNODE_TAP_PREFIX"], !prefix.isEmpty {
            // A tap's name is the prefix and six hex digits, within the kernel's 15 bytes.
            guard prefix.utf8.count <= 9 else { throw AgentError.invalid("SFNODE_TAP_PREFIX '\(prefix)' is longer than 9 bytes") }
            layout.tapPrefix = prefix
        }
        return layout
    }

    static func make(settings: AgentConfiguration, logger: Logger) async throws -> Agent {
        try FileManager.default.createDirectory(
            atPath: (settings.storePath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let store = try SQLiteStore(path: settings.storePath, fqdn: settings.nodeName, logger: logger)
        let layout = try layout(settings: settings)
        let host = NetlinkSession(thread: try await NamespaceExecutor.start(namespace: settings.hostNamespace), logger: logger)
        let root = settings.hostNamespace == nil ? host : try NetlinkSession(namespace: nil, logger: logger)
        let virtualization = VirtualizationType(rawValue: settings.virtualizationType.rawValue) ?? .auto
        let libvirt = try LibvirtConnection(uri: settings.libvirtURI, logger: logger)
        let node = NodeAgent(
            store: store, networks: NetworkRealizer(layout: layout, host: host, logger: logger),
            instances: InstanceRealizer(
                layout: layout, host: host, root: root, libvirt: libvirt, storagePath: settings.storagePath,
                virtualization: virtualization.resolved(logger: logger), logger: logger),
            nodeName: settings.nodeName, floatingRange: settings.floatingRange,
            dhcpDirectory: settings.storagePath + "/dhcp", isNetworkNode: settings.isNetworkNode,
            mesh: Mesh(address: settings.meshAddress, interface: settings.meshInterface),
            egressInterface: settings.egressInterface, logger: logger)
        // How long a claimed job stays ours without a heartbeat: after a crash, this is how long its
        // job waits before another agent (or this one, restarted) takes it again.
        let leaseSeconds = ProcessInfo.processInfo.environment["SFNODE_JOB_LEASE_SECONDS"].flatMap(Int.init) ?? 30
        let runner = JobRunner(
            store: store, targets: node.jobTargets, owner: "\(settings.nodeName):\(getpid()):\(UUID().uuidString.prefix(8))",
            lease: .seconds(max(1, leaseSeconds)), logger: logger)
        await node.register(with: runner)
        // Before any job or pass: the other nodes can only flood to a node whose mesh address is stored.
        do {
            try await node.checkIn()
        } catch {
            logger.warning("first check-in failed; the check-in service retries", metadata: ["error": "\(error)"])
        }
        return Agent(store: store, node: node, runner: runner)
    }
}
