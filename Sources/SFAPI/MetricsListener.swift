import Hummingbird
import Logging
import NIOCore
import SFMetrics
import ServiceLifecycle

/// The text format's response.
func metricsResponse(_ bytes: [UInt8]) -> Response {
    Response(
        status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
        body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
}

/// The agent's own metrics listener (`SFNODE_METRICS_LISTEN`): `/metrics` and nothing else. It
/// has no authentication, so it listens on loopback unless the operator says otherwise.
public func buildMetricsListener(host: String, port: Int, exposition: MetricsExposition, logger: Logger) -> any Service {
    let router = Router()
    router.get("/metrics") { _, _ -> Response in metricsResponse(await exposition.render()) }
    let application = Application(
        router: router, configuration: .init(address: .hostname(host, port: port), serverName: "sfnode"), logger: logger)
    return MetricsListenerService(listener: application, listen: "\(host):\(port)", logger: logger)
}

/// The listener as a service that never stops the agent: an address in use or not on this host
/// is logged with what to do, and the agent goes on realizing guests without metrics.
struct MetricsListenerService<Listener: ApplicationProtocol>: Service {
    let listener: Listener
    let listen: String
    let logger: Logger

    func run() async throws {
        do {
            try await listener.run()
        } catch {
            logger.error(
                "the metrics listener failed; the agent goes on without it. Set SFNODE_METRICS_LISTEN to a free HOST:PORT, or off",
                metadata: ["metrics.listen": "\(listen)", "error": "\(error)"])
            try? await gracefulShutdown()
        }
    }
}

