import CoreMetrics
import Prometheus

/// The process' metrics backend: swift-metrics' API, which the libraries record through, backed by
/// one Prometheus registry. The libraries make their instruments when they record (never at load
/// time), so anything recorded after ``registry`` is first read reaches the registry.
public enum MetricsBootstrap {
    /// The registry, made and installed as swift-metrics' backend on first use (swift-metrics
    /// takes one backend per process; a static's initializer runs once).
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.nameAndLabelSanitizer = prometheusName
        factory.durationHistogramBuckets = durationBuckets
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// A library's dotted name (`hb.requests`) with its dots made underscores, which is all the
    /// format allows besides letters, digits and colons; sfnode's own names are already so.
    static func prometheusName(_ name: String, _ labels: [(String, String)]) -> (String, [(String, String)]) {
        (name.replacingDots(), labels.map { ($0.0.replacingDots(), $0.1) })
    }

    /// Buckets that fit what each timer measures: a queue pick-up is milliseconds, a job or a pass
    /// can be minutes. Others get swift-prometheus' default, 5 ms to 10 s.
    static let durationBuckets: [String: [Duration]] = {
        let fast: [Duration] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5].map(seconds)
        let slow: [Duration] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600].map(seconds)
        return [
            "sfnode_queue_pickup_seconds": fast, "sfnode_firewall_commit_seconds": fast,
            "sfnode_queue_run_seconds": slow, "sfnode_reconcile_pass_seconds": slow,
        ]
    }()

    private static func seconds(_ value: Double) -> Duration { .nanoseconds(Int64(value * 1e9)) }
}

extension String {
    fileprivate func replacingDots() -> String {
        String(String.UnicodeScalarView(unicodeScalars.map { $0 == "." ? "_" : $0 }))
    }
}
