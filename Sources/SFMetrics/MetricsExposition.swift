import Prometheus
import SFSystem

/// Something that writes figures at scrape time: the process, the domains, the queue.
public protocol MetricsCollector: Sendable {
    /// Appends this collector's families. A collector that cannot read its source leaves its
    /// families out (or reports the failure as its own `…_up` gauge); it never fails the scrape.
    func collect(into text: inout MetricsText) async
}

/// What a `/metrics` scrape answers: the live instruments of swift-metrics (counters, gauges,
/// histograms in the Prometheus registry) and then each collector's families.
public struct MetricsExposition: Sendable {
    /// The registry the process' swift-metrics backend records into.
    public let registry: PrometheusCollectorRegistry
    /// Read at each scrape, in order.
    public let collectors: [any MetricsCollector]

    /// An exposition of `registry` and `collectors`.
    public init(registry: PrometheusCollectorRegistry, collectors: [any MetricsCollector]) {
        self.registry = registry
        self.collectors = collectors
    }

    /// The same registry with more collectors (the agent's, when the API serves them too).
    public func adding(_ more: [any MetricsCollector]) -> MetricsExposition {
        MetricsExposition(registry: registry, collectors: collectors + more)
    }

    /// The whole scrape, in the text format.
    public func render() async -> [UInt8] {
        var text = MetricsText()
        text.append(bytes: registry.emitToBuffer())
        for collector in collectors {
            await collector.collect(into: &text)
        }
        return text.bytes
    }
}

/// A collector whose source is costly (a libvirt bulk read, a store query) read at most once per
/// `lifetime`: scrapes within it answer the text of the last read, and scrapes that arrive
/// together while a read runs share it. So however often and however many scrapers come, the
/// source is read at most once per `lifetime`.
public actor CachedCollector: MetricsCollector {
    private let source: any MetricsCollector
    private let lifetime: Duration
    private var cached: (text: MetricsText, at: ContinuousClock.Instant)?
    private var reads = SingleFlight<Int, MetricsText>()

    /// How long one read of a costly source serves scrapes, unless a caller says otherwise: a
    /// Prometheus scraping every 15 s still sees each scrape's own figures.
    public static let defaultLifetime: Duration = .seconds(5)

    /// Caches `source` for `lifetime`.
    public init(_ source: any MetricsCollector, lifetime: Duration) {
        self.source = source
        self.lifetime = lifetime
    }

    public nonisolated func collect(into text: inout MetricsText) async {
        text.append(await current())
    }

    /// The cached text, or a fresh read's.
    func current() async -> MetricsText {
        if let cached, ContinuousClock.now - cached.at < lifetime { return cached.text }
        let (task, started) = reads.join(0) {
            Task { [source] in
                var fresh = MetricsText()
                await source.collect(into: &fresh)
                return fresh
            }
        }
        // A collector never throws; the task's error type is SingleFlight's.
        let fresh = (try? await task.value) ?? MetricsText()
        if started {
            reads.end(0)
            cached = (fresh, ContinuousClock.now)
        }
        return fresh
    }
}
