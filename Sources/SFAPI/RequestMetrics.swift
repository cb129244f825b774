import HTTPTypes
import Hummingbird
import Prometheus
import Synchronization

/// Requests by route template, method and status, with their latency:
/// `sfnode_http_request_duration_seconds{route,method,status}`, whose `_count` is the number of
/// requests. Labels are bounded whatever a client sends: a route's template (`/instances/{ref}`),
/// never its path, and `unmatched` for a path no route took; a method outside HTTP's usual ones
/// (any token is a valid method on the wire) is `other`.
///
/// Hummingbird's `MetricsMiddleware` does this through swift-metrics, and cost 7 % of the GET
/// throughput (BENCHMARKS.md (j2)): per request it looked up two caches under two locks, moved an
/// active-requests gauge up and down, counted into a counter the histogram's `_count` already is, and
/// wrapped the body to time its writing. This takes one lock to find the histogram and records when
/// the handler answers (a JSON body is already in memory then; a followed event stream is timed to
/// its start).
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let histograms: RequestHistograms

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            histograms.record(context.endpointPath, request.method, response.status.code, ContinuousClock.now - start)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            histograms.record(context.endpointPath, request.method, status, ContinuousClock.now - start)
            throw error
        }
    }
}

/// The histograms of ``RequestMetricsMiddleware``, made in the registry on a key's first request.
final class RequestHistograms: Sendable {
    private struct Key: Hashable {
        let route: String
        let method: String
        let status: Int
    }

    private let registry: PrometheusCollectorRegistry
    private let histograms = Mutex<[Key: DurationHistogram]>([:])

    static let knownMethods: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .delete, .patch, .options]

    static let buckets: [Duration] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10].map {
        .nanoseconds(Int64($0 * 1e9))
    }

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    func record(_ route: String?, _ method: HTTPRequest.Method, _ status: Int, _ duration: Duration) {
        let key = Key(route: route ?? "unmatched", method: Self.knownMethods.contains(method) ? method.rawValue : "other", status: status)
        let histogram = histograms.withLock { histograms in
            if let found = histograms[key] { return found }
            let made = registry.makeDurationHistogram(
                name: "sfnode_http_request_duration_seconds",
                labels: [("route", key.route), ("method", key.method), ("status", String(key.status))], buckets: Self.buckets)
            histograms[key] = made
            return made
        }
        histogram.record(duration)
    }
}
