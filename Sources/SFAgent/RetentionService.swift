import Foundation
import Logging
import SFDaemonSupport
import SFStore
import ServiceLifecycle

/// Prunes the store (``NodeStore/prune(_:now:)``) at start and then every `interval`, so that
/// events, finished jobs and deleted objects do not grow for ever. A failed prune is logged and
/// tried again at the next interval; it never stops the agent. Every agent on a node may run one:
/// a prune is idempotent and works in short transactions.
public struct RetentionService: Service {
    let store: any NodeStore
    /// What each prune removes.
    public let policy: RetentionPolicy
    /// The time between two prunes.
    public let interval: Duration
    let logger: Logger

    public init(store: any NodeStore, policy: RetentionPolicy, interval: Duration, logger: Logger) {
        self.store = store
        self.policy = policy
        self.interval = interval
        self.logger = logger
    }

    /// The service the agent's settings ask for.
    public init(store: any NodeStore, settings: NodeConfiguration, logger: Logger) {
        let day = 86_400
        self.init(
            store: store,
            policy: RetentionPolicy(
                eventAge: .seconds(settings.eventRetentionDays * day), eventsPerObject: settings.eventMaxPerObject,
                finishedJobAge: .seconds(settings.jobRetentionDays * day), deletedAge: .seconds(settings.deletedRetentionDays * day)),
            interval: .seconds(settings.pruneIntervalMinutes * 60), logger: logger)
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await repeatUntilCancelled(logger: logger, failure: "pruning the store failed; trying again at the next interval") {
                do {
                    let report = try await store.prune(policy, now: Date())
                    logger.log(level: report.isEmpty ? .debug : .info, "store pruned", metadata: ["prune.report": "\(report)"])
                } catch is CancellationError {
                    // Shutting down between two batches: what was pruned stays pruned.
                }
            } pause: {
                try? await Task.sleep(for: interval)
            }
        }
    }
}
