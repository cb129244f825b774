import Foundation
import Logging
import ServiceLifecycle

/// The job runner as a service: on graceful shutdown it finishes the job it runs and takes no other.
public struct JobRunnerService: Service {
    let runner: JobRunner

    public init(runner: JobRunner) { self.runner = runner }

    public func run() async throws {
        let runner = self.runner
        await withGracefulShutdownHandler {
            await runner.run()
        } onGracefulShutdown: {
            Task { await runner.stop() }
        }
    }
}

/// Reconciliation as a service: a full pass at start, libvirt lifecycle events as they come, and a
/// backstop pass every 30 s. A failed pass is logged and retried; it never stops the agent.
public struct ReconcilerService: Service {
    let reconciler: Reconciler
    let logger: Logger

    public init(reconciler: Reconciler, logger: Logger) {
        self.reconciler = reconciler
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await repeatUntilCancelled(logger: logger, failure: "lifecycle events stopped; following them again") {
                        try await reconciler.followLifecycleEvents()
                    } pause: {
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                let drift = DriftSignal()
                group.addTask {
                    await repeatUntilCancelled(logger: logger, failure: "link changes stopped; following them again") {
                        try await reconciler.followLinkChanges { await drift.raise() }
                    } pause: {
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                group.addTask {
                    await repeatUntilCancelled(logger: logger, failure: "reconciliation pass failed; nothing was removed", level: .error) {
                        let report = try await reconciler.reconcileOnce()
                        logger.debug("reconciled", metadata: ["reconcile.report": "\(report)"])
                    } pause: {
                        // The backstop every 30 s; a link of ours going away brings the next pass forward.
                        await drift.wait(upTo: .seconds(30))
                    }
                }
            }
        }
    }
}

/// Runs `body` again and again until the task is cancelled, with `pause` after each run. A failure
/// is logged as `failure` with its error, and the loop goes on: none of these may stop the agent.
func repeatUntilCancelled(
    logger: Logger, failure: String, level: Logger.Level = .warning, _ body: () async throws -> Void, pause: () async -> Void
) async {
    while !Task.isCancelled {
        do {
            try await body()
        } catch {
            logger.log(level: level, "\(failure)", metadata: ["error": "\(error)"])
        }
        await pause()
    }
}

/// Records this node in the store (roles, mesh address, last seen) at start and every 30 s, so the
/// other nodes can flood to it and operators can see it is alive. A failed check-in is logged and
/// retried; it never stops the agent.
public struct CheckInService: Service {
    let agent: NodeAgent
    let logger: Logger

    public init(agent: NodeAgent, logger: Logger) {
        self.agent = agent
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await repeatUntilCancelled(logger: logger, failure: "check-in failed") {
                try await agent.checkIn()
            } pause: {
                try? await Task.sleep(for: .seconds(30))
            }
        }
    }
}

/// A coalescing "something drifted" flag between the link watcher and the reconciliation loop.
actor DriftSignal {
    private var raised = false

    func raise() { raised = true }

    /// Returns when the signal is raised (clearing it) or after `limit`, whichever comes first.
    func wait(upTo limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while !raised && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
        }
        raised = false
    }
}
