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
    guard settings.metrics, let listen = settings.metricsListen, let colon = listen.lastIndex(of: ":"),
        let port = Int(listen[listen.index(after: colon)...])
    else { return nil }
    var host = String(listen[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    logger.info("serving metrics", metadata: ["metrics.listen": "\(listen)"])
    return buildMetricsListener(host: host, port: port, exposition: exposition, logger: logger)
}
