import Foundation
import Logging
import Metrics
import SFMetrics
import SFStore

/// The job queue's figures: its depth, read from the store at scrape time (``QueueDepthCollector``),
/// and what runners record as they claim and run jobs. The names follow KubeVirt's work-queue
/// metrics (depth, queue time, work time, retries), under `sfnode_queue_`.
public enum QueueMetrics {
    /// A job's kind as a label: one of sfnode's kinds, or `unknown` (a stored job of another kind is
    /// still claimed and failed), so that the label's values stay a fixed set.
    public static func kindLabel(_ kind: String) -> String {
        JobKind(rawValue: kind)?.rawValue ?? "unknown"
    }

    /// How long the job waited between becoming claimable and being claimed.
    public static func pickedUp(_ job: Job, at now: Date = Date()) {
        let waited = now.timeIntervalSince(max(job.created, job.notBefore))
        guard waited.isFinite else { return }
        Timer(label: "sfnode_queue_pickup_seconds", dimensions: [("kind", kindLabel(job.kind))]).recordSeconds(max(waited, 0))
    }

    /// What became of a run of the job, and how long it took.
    public static func ran(_ job: Job, outcome: Outcome, duration: Duration) {
        let dimensions = [("kind", kindLabel(job.kind)), ("outcome", outcome.rawValue)]
        Timer(label: "sfnode_queue_run_seconds", dimensions: dimensions).recordSeconds(duration / .seconds(1))
        switch outcome {
        case .retried: Counter(label: "sfnode_queue_retries_total", dimensions: [("kind", kindLabel(job.kind))]).increment()
        case .postponed: Counter(label: "sfnode_queue_postponements_total", dimensions: [("kind", kindLabel(job.kind))]).increment()
        case .leaseLapsed: Counter(label: "sfnode_queue_lease_expiries_total", dimensions: [("kind", kindLabel(job.kind))]).increment()
        case .succeeded, .failed, .interrupted: break
        }
    }

    /// A job failed for good, with its error's code (`not-found`, `invalid-argument`, …).
    public static func failed(_ job: Job, code: ControlError.Code) {
        Counter(label: "sfnode_queue_failures_total", dimensions: [("kind", kindLabel(job.kind)), ("code", code.rawValue)]).increment()
    }

    /// The end of one run of a job.
    public enum Outcome: String, Sendable {
        case succeeded
        /// Failed for good.
        case failed
        /// Failed, back to the queue for another attempt.
        case retried
        /// Not ready (or made to wait), back to the queue without spending an attempt.
        case postponed
        /// Cut short by the agent's shutdown, back to the queue.
        case interrupted
        /// Its lease lapsed under it: another agent may have it now.
        case leaseLapsed = "lease_lapsed"
    }
}

/// `sfnode_queue_depth{kind,state}`: the live jobs, by kind and state, from one grouped count on
/// the store's index of live jobs. Wrapped in a ``CachedCollector``, a scrape costs at most one such
/// query per cache lifetime, however many objects the store holds.
public struct QueueDepthCollector: MetricsCollector {
    let store: any NodeStore
    let logger: Logger

    public init(store: any NodeStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// The queue's depth as the agent's and the API's scrapes read it: behind a cache of `lifetime`.
    public static func cached(store: any NodeStore, logger: Logger, lifetime: Duration = CachedCollector.defaultLifetime) -> CachedCollector {
        CachedCollector(QueueDepthCollector(store: store, logger: logger), lifetime: lifetime)
    }

    public func collect(into text: inout MetricsText) async {
        let counts: [JobCount]
        do {
            counts = try await store.liveJobCounts()
        } catch {
            logger.warning("could not count the queue's jobs for a metrics scrape", metadata: ["error": "\(error)"])
            return
        }
        text.family("sfnode_queue_depth", .gauge, help: "Live jobs in the queue, by kind and state (queued or running).")
        var byLabels: [String: [JobState: Int]] = [:]
        for count in counts { byLabels[QueueMetrics.kindLabel(count.kind), default: [:]][count.state, default: 0] += count.count }
        // Every kind and live state, zeros included: a series that vanishes reads as "no data", not 0.
        for kind in JobKind.allCases.map(\.rawValue) + (byLabels["unknown"] == nil ? [] : ["unknown"]) {
            for state in [JobState.queued, .running] {
                text.sample("sfnode_queue_depth", ["kind": kind, "state": state.rawValue], Double(byLabels[kind]?[state] ?? 0))
            }
        }
    }
}
