import Foundation
import SFAgent
import SFControl
import SFMetrics
import SFStore
import Synchronization
import Testing

/// What the runner records for `/metrics` as it claims and settles jobs.
@Suite struct QueueMetricsTests {
    /// The value of the sample `line` (name and labels as they are written), or 0 when absent.
    func sample(_ line: String) async -> Double {
        let text = String(decoding: await MetricsExposition(registry: MetricsBootstrap.registry, collectors: []).render(), as: UTF8.self)
        for candidate in text.split(separator: "\n") where candidate.hasPrefix(line + " ") {
            return Double(candidate.dropFirst(line.count + 1)) ?? .nan
        }
        return 0
    }

    @Test(.timeLimit(.minutes(1))) func eachOutcomeIsCountedByKindAndFailuresByCode() async throws {
        _ = MetricsBootstrap.registry
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let runner = JobRunner(store: store, targets: [.node("n1")], owner: "runner-m", logger: JobRunnerTests.quietLogger())
        let attempt = Mutex(0)
        await runner.register(.networkRefresh) { _, _ in
            let this = attempt.withLock {
                $0 += 1
                return $0
            }
            switch this {
            case 1: return
            case 2: throw ControlError(.internal, "a host call failed")
            case 3: throw ControlError(.notReady, "its network is still being made")
            default: throw JobError("malformed for this test")
            }
        }
        let kind = #"kind="network.refresh""#
        let before = (
            succeeded: await sample(#"sfnode_queue_run_seconds_count{\#(kind),outcome="succeeded"}"#),
            retries: await sample("sfnode_queue_retries_total{\(kind)}"),
            postponements: await sample("sfnode_queue_postponements_total{\(kind)}"),
            failures: await sample(#"sfnode_queue_failures_total{\#(kind),code="invalid-argument"}"#),
            pickups: await sample("sfnode_queue_pickup_seconds_count{\(kind)}"))
        for _ in 0..<4 {
            _ = try await enqueueTestJob(store)
            #expect(try await runner.runOne())
        }
        #expect(await sample(#"sfnode_queue_run_seconds_count{\#(kind),outcome="succeeded"}"#) == before.succeeded + 1)
        #expect(await sample("sfnode_queue_retries_total{\(kind)}") == before.retries + 1)
        #expect(await sample("sfnode_queue_postponements_total{\(kind)}") == before.postponements + 1)
        #expect(await sample(#"sfnode_queue_failures_total{\#(kind),code="invalid-argument"}"#) == before.failures + 1)
        #expect(await sample("sfnode_queue_pickup_seconds_count{\(kind)}") == before.pickups + 4)
    }
}
