import ArgumentParser
import Foundation
import Logging
import SFAPI
import SFAgent
import SFBlobs
import SFControl
import SFDaemonSupport
import SFMetrics
import SFStore
import SFSystem
import ServiceLifecycle

/// `sfnode serve`: the all-in-one node, the REST API and the agent in one process on the embedded
/// store. After it starts, the local `sf-client` works with no set-up (see ``ClientConfiguration``).
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the REST API and the node agent together (the all-in-one node).")

    @Option(help: "The configuration file (default: $SFNODE_CONFIG, else /etc/sfnode/agent.json).")
    var config: String?

    func run() async throws {
        ProcessMemory.limitArenas()
        let settings = try NodeConfiguration.load(commandLinePath: config)
        let logger = bootstrapDaemonLogging(settings, identifier: "sfnode", label: "sfnode.serve")
        let exposition = metricsExposition([])
        let agent = try await buildAgent(settings: settings, logger: logger)
        // One process: the API's /metrics has the agent's figures too.
        let api = try await buildAPI(
            settings: settings, store: agent.store, peers: agent.peers, metrics: exposition.adding(try agent.metricsCollectors()),
            logger: logger)
        logger.info("serving", metadata: ["store.location": "\(agent.store.path)", "api.listen": "\(settings.apiListen)"])
        await runDaemon(services: agent.services + [api], readyStatus: "serving the API and taking jobs", logger: logger) {
            await agent.libvirt.close()
        }
    }
}

/// `sfnode api`: the REST API alone, over the store the configuration names; agents elsewhere (or
/// `sfnode agent` beside it) take the jobs it queues.
struct APICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "api", abstract: "Run the Shaken Fist REST API alone.")

    @Option(help: "The configuration file (default: $SFNODE_CONFIG, else /etc/sfnode/agent.json).")
    var config: String?

    func run() async throws {
        ProcessMemory.limitArenas()
        let settings = try NodeConfiguration.load(commandLinePath: config)
        let logger = bootstrapDaemonLogging(settings, identifier: "sfnode-api", label: "sfnode.api")
        let exposition = metricsExposition([])
        let store = try openStore(settings: settings, logger: logger)
        let peers = try await makePeerClient(settings: settings, store: store, logger: logger)
        let api = try await buildAPI(
            settings: settings, store: store, peers: peers,
            metrics: exposition.adding([QueueDepthCollector.cached(store: store, logger: logger)]),
            logger: logger)
        logger.info("serving the API", metadata: ["store.location": "\(store.path)", "api.listen": "\(settings.apiListen)"])
        await runDaemon(services: [api], readyStatus: "serving the API", logger: logger)
    }
}

func bootstrapDaemonLogging(_ settings: NodeConfiguration, identifier: String, label: String) -> Logger {
    LoggingBootstrap.bootstrap(level: settings.logLevel, identifier: identifier, metadataProvider: JobContext.metadataProvider)
    var logger = Logger(label: label)
    logger[metadataKey: "node.name"] = "\(settings.nodeName)"
    return logger
}

/// The API service over `store`, after making sure the local client can reach it.
func buildAPI(
    settings: NodeConfiguration, store: SQLStore, peers: PeerClient?, metrics: MetricsExposition, logger: Logger
) async throws -> any Service {
    let metrics = settings.metrics ? metrics : nil
    var configuration = try APIConfiguration(listen: settings.apiListen)
    configuration.limits = settings.apiLimits
    do {
        try await ClientConfiguration.prepare(
            at: settings.clientConfig, apiURL: configuration.localURL,
            control: Control(store: store, settings: settings.controlSettings, logger: logger), records: store, logger: logger)
    } catch {
        // The API is still useful to clients configured some other way.
        logger.warning(
            "could not write the client configuration; set SFNODE_CLIENT_CONFIG to a writable path",
            metadata: ["path": "\(settings.clientConfig)", "error": "\(error)"])
    }
    let control = Control(store: store, settings: settings.controlSettings, peers: peers, logger: logger)
    return try await buildApplication(
        configuration: configuration, control: control, auth: store,
        storage: BlobStorage(path: settings.storagePath, nodeName: settings.nodeName), metrics: metrics, logger: logger)
}
