import ArgumentParser
import Foundation
import Logging
import SFAgent
import SFDaemonSupport
import SFDoctor
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
        ProcessMemory.limitArenas()
        let settings = try NodeConfiguration.load(commandLinePath: config)
        LoggingBootstrap.bootstrap(
            level: settings.logLevel, identifier: "sfnode-agent", metadataProvider: JobContext.metadataProvider)
        var logger = Logger(label: "sfnode.agent")
        logger[metadataKey: "node.name"] = "\(settings.nodeName)"
        let exposition = metricsExposition([])
        let agent = try await buildAgent(settings: settings, logger: logger)
        logger.info("agent started", metadata: ["store.location": "\(agent.store.path)", "sfnode.version": "\(SFNodeVersion.current)"])
        // The host checks of `sfnode doctor`, beside the start: each problem is logged with what to
        // do, and none stops the agent (a warning may be a choice, and a failure may mend itself).
        Task { [logger] in
            for check in await HostChecks(configuration: settings).run(logger: logger).checks where check.status != .pass {
                let metadata: Logger.Metadata = ["check.name": "\(check.name)", "check.hint": "\(check.hint ?? "")"]
                if check.status == .fail {
                    logger.error("host check failed: \(check.message)", metadata: metadata)
                } else {
                    logger.warning("host check: \(check.message)", metadata: metadata)
                }
            }
        }
        let listener = metricsListener(settings: settings, exposition: exposition.adding(try agent.metricsCollectors()), logger: logger)
        await runDaemon(services: agent.services + (listener.map { [$0] } ?? []), readyStatus: "taking jobs", logger: logger) {
            await agent.libvirt.close()
        }
    }
}

/// Runs a daemon's services under swift-service-lifecycle until SIGTERM or SIGINT, telling systemd
/// when it is ready, then runs `cleanup` and leaves the process (status 1 if a service failed).
func runDaemon(
    services: [any Service], readyStatus: String, logger: Logger, cleanup: () async -> Void = {}
) async -> Never {
    var configuration = ServiceGroupConfiguration(
        services: (services + [SystemdService.fromEnvironment(readyStatus: readyStatus, logger: logger)]).map {
            ServiceGroupConfiguration.ServiceConfiguration(service: $0)
        },
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    // A job still running after this is cancelled (it is re-run when its lease lapses); the
    // units' TimeoutStopSec (30 s) is longer.
    configuration.maximumGracefulShutdownDuration = .seconds(20)
    let group = ServiceGroup(configuration: configuration)
    var failed = false
    do {
        try await group.run()
    } catch {
        logger.error("service failed", metadata: ["error": "\(error)"])
        failed = true
    }
    logger.info("stopped")
    await cleanup()
    // Leave without running exit()'s destructors: libvirt's event-loop thread is still alive,
    // and tearing its globals down under it crashed the process (malloc_consolidate) on the way
    // out of an otherwise clean stop. Everything the daemon owns is already closed or committed,
    // and its log lines are sent as they are written.
    fflush(nil)
    _exit(failed ? 1 : 0)
}

