import Foundation
import SFAgent
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// A job that crashes the real agent (the `sfnode` executable) every time it runs: the agent aborts
/// twice (SIGABRT, as a Swift runtime trap on hostile input would), and the third run fails the job
/// with "the agent died twice while running this job", records that on the network, and stays up.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for the agent's test namespace"))
struct PoisonedJobTests {
    @Test(.timeLimit(.minutes(3))) func aJobThatCrashesTheAgentTwiceIsFailedAndTheAgentStaysUp() async throws {
        let id = TestNames.unique("")  // 9 bytes: the tap prefix too
        try await withCheckedTeardown(id: id) { teardown in
            let directory = TestGuest.runDirectory + "/\(id)-agent"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            teardown.add("agent directory") { try? FileManager.default.removeItem(atPath: directory) }
            let hostNamespace = id + "host"
            try teardown.createNamespaces([hostNamespace])
            let nodeName = id + "-node"
            let store = try SQLStore(path: directory + "/store.sqlite", fqdn: nodeName)
            let network = try await store.createNetwork(
                uuid: UUID(), name: "net", namespace: "system", netblock: IPv4Prefix("10.97.0.0/24")!, provideDHCP: false,
                provideNAT: false)
            let job = try await store.enqueue(
                kind: "network.create", payload: jobPayload("network_uuid", network.uuid), target: .networkNode,
                objectKey: "network:\(network.uuid)")
            let leaseSeconds = 2
            var environment = AgentProcess.environment(
                directory: directory, storage: directory + "/instances", hostNamespace: hostNamespace, nodeName: nodeName, prefix: id,
                floatingRange: "192.0.2.0/24", leaseSeconds: leaseSeconds)
            environment["SFNODE_CRASH_AT"] = "abort:network.create.after-egress"
            let executable = try AgentProcess.executable()
            for run in 1...2 {
                let agent = try AgentProcess.start(executable: executable, environment: environment, log: directory + "/agent-\(run).log")
                teardown.add("agent run \(run)") { await agent.kill() }
                let status = await agent.waitForExit(timeout: .seconds(60))
                // 128 + SIGABRT.
                #expect(status == 134, "run \(run) ended with \(status.map(String.init) ?? "no exit"): \(agent.logTail())")
                #expect(try await store.job(id: job.id).deaths == run - 1)
                try await Task.sleep(for: .seconds(leaseSeconds + 1))
            }
            let agent = try AgentProcess.start(executable: executable, environment: environment, log: directory + "/agent-3.log")
            teardown.add("agent run 3") { await agent.kill() }
            #expect(await eventually(timeout: .seconds(30)) { (try? await store.job(id: job.id).state) == .failed }, "\(agent.logTail())")
            let failed = try await store.job(id: job.id)
            #expect(failed.lastError == "the agent died twice while running this job")
            #expect(failed.deaths == 2)
            // Recorded on the network just after the job is settled, in the same hold of the agent's locks.
            #expect(await eventually { (try? await store.network(uuid: network.uuid).state) == .error })
            #expect(await eventually {
                let events = (try? await store.events(objectType: "network", objectUUID: network.uuid.lowercasedString, type: nil, limit: 10)) ?? []
                return events.contains { $0.message == "network.create failed after 3 attempt(s): the agent died twice while running this job" }
            })
            try await Task.sleep(for: .seconds(1))
            #expect(agent.isRunning, "the agent did not stay up: \(agent.logTail())")
            #expect(await agent.stop(timeout: .seconds(20)) == 0)
        }
    }
}
