import Hummingbird
import Logging
import NIOCore
import SFMetrics

/// The text format's response.
func metricsResponse(_ bytes: [UInt8]) -> Response {
    Response(
        status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
        body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
}

/// The agent's own metrics listener (`SFNODE_METRICS_LISTEN`): `/metrics` and nothing else. It
/// has no authentication, so it listens on loopback unless the operator says otherwise.
public func buildMetricsListener(host: String, port: Int, exposition: MetricsExposition, logger: Logger) -> some ApplicationProtocol {
    let router = Router()
    router.get("/metrics") { _, _ -> Response in metricsResponse(await exposition.render()) }
    return Application(
        router: router, configuration: .init(address: .hostname(host, port: port), serverName: "sfnode"), logger: logger)
}
