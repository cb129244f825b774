import Logging
import SFAPI
import SFDaemonSupport
import SFMetrics
import ServiceLifecycle

/// A daemon's `/metrics`: the registry its libraries record into (installed as swift-metrics'
/// backend here, before any of them records), the process' own `process_*` series, then
/// `collectors`.
func metricsExposition(_ collectors: [any MetricsCollector]) -> MetricsExposition {
    MetricsExposition(registry: MetricsBootstrap.registry, collectors: [ProcessMetrics()] + collectors)
}

/// `sfnode agent`'s own `/metrics` listener (`SFNODE_METRICS_LISTEN`), or nil when it is off.
func metricsListener(settings: NodeConfiguration, exposition: MetricsExposition, logger: Logger) -> (any Service)? {
    guard settings.metrics, let listen = settings.metricsListen, let address = NodeConfiguration.hostAndPort(listen) else { return nil }
    logger.info("serving metrics", metadata: ["metrics.listen": "\(listen)"])
    return buildMetricsListener(host: address.host, port: address.port, exposition: exposition, logger: logger)
}
