import Foundation
import Logging
import SFAgent
import SFControl
import SFStore
import SFSystem
import SFTestSupport
import Synchronization
import Testing

/// Jobs run at once for different objects, a job that kills its agent is contained, and a failed
/// job's own cause reaches its object even with reconciliation passes running; without root.
@Suite struct ContainmentTests {
    /// An agent that claims `job` under a short lease and dies with it (its lease lapses unrenewed).
    static func dieWith(_ store: SQLStore, owner: String) async throws -> Job? {
        let job = try await store.claimNext(targets: [.node(FakeHost.node)], owner: owner, lease: .milliseconds(50))
        try await Task.sleep(for: .milliseconds(120))
        return job
    }

    /// Two deaths and the job is failed with the death message, its handler never run again, and the
    /// instance shows that cause.
    @Test func aJobInFlightWhenTheAgentDiedTwiceIsFailed() async throws {
        let host = try await FakeHost().registered()
        defer { host.store.removeFiles() }
        let (_, instance) = try await host.networkAndInstance()
        try await host.store.setInstanceState(uuid: instance.uuid, to: .preflight)
        try await host.store.setInstanceState(uuid: instance.uuid, to: .creating)
        let job = try await host.enqueue(.instanceCreate, .instance(instance.uuid))
        #expect(try await Self.dieWith(host.store, owner: "agent-1")?.deaths == 0)
        #expect(try await Self.dieWith(host.store, owner: "agent-2")?.deaths == 1)
        #expect(try await host.runner.runOne())
        let failed = try await host.store.job(id: job.id)
        #expect(failed.state == .failed && failed.deaths == 2)
        #expect(failed.lastError == "the agent died twice while running this job")
        #expect(host.instances.calls.all.isEmpty)
        let after = try await host.store.instance(uuid: instance.uuid)
        #expect(after.state == .creatingError)
        #expect(after.errorMessage?.hasSuffix("the agent died twice while running this job") == true)
        // Never run again: nothing is left to claim.
        #expect(try await !host.runner.runOne())
    }

    /// A death is not an attempt failure: a job that died once, with one attempt allowed, still runs.
    @Test func aJobThatDiedOnceRunsAgain() async throws {
        let host = try await FakeHost().registered()
        defer { host.store.removeFiles() }
        let (_, instance) = try await host.networkAndInstance()
        let job = try await host.enqueue(.instanceCreate, .instance(instance.uuid))
        _ = try await Self.dieWith(host.store, owner: "agent-1")
        #expect(try await host.runner.runOne())
        let after = try await host.store.job(id: job.id)
        #expect(after.state == .succeeded && after.deaths == 1)
        #expect(try await host.store.instance(uuid: instance.uuid).state == .created)
    }

    /// While four downloads hang, a network.create is picked up and finished: downloads have a lane
    /// of their own and hold no host lock.
    @Test(.timeLimit(.minutes(1))) func aNetworkCreateDoesNotWaitBehindDownloads() async throws {
        let host = try FakeHost()
        defer { host.store.removeFiles() }
        await host.agent.register(with: host.runner)
        let release = Mutex(false)
        let downloading = Mutex(0)
        // Stand-ins for slow downloads: they hold the image lock, as a fetch does, until released.
        let locks = host.agent.locks
        await host.runner.register(.artifactFetch) { _, _ in
            try await locks.resolvingImages {
                downloading.withLock { $0 += 1 }
                while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
        for _ in 0..<4 { try await host.enqueue(.artifactFetch, .artifact(UUID())) }
        let running = Task { await host.runner.run() }
        defer { running.cancel() }
        #expect(await eventually { downloading.withLock { $0 } == 4 })
        let network = try await host.store.createNetwork(
            uuid: UUID(), name: "net", namespace: "other", netblock: IPv4Prefix("10.1.0.0/24")!, provideDHCP: false, provideNAT: false)
        let create = try await host.enqueue(.networkCreate, .network(network.uuid))
        #expect(await eventually { (try? await host.store.job(id: create.id).state) == .succeeded })
        #expect(try await host.store.network(uuid: network.uuid).state == .created)
        #expect(downloading.withLock { $0 } == 4)
        release.withLock { $0 = true }
        running.cancel()
        await running.value
    }

    /// A job that died once runs alone: no other job runs while it does.
    @Test(.timeLimit(.minutes(1))) func aJobThatDiedOnceRunsAlone() async throws {
        let host = try FakeHost()
        defer { host.store.removeFiles() }
        // (jobs running now, whether the suspect runs, whether anything ran beside it)
        let state = Mutex((active: 0, suspectRuns: false, overlapped: false))
        let suspect = try await host.enqueue(.networkRefresh, .network(UUID()))
        await host.runner.register(.networkRefresh) { _, job in
            state.withLock { now in
                if now.suspectRuns || (job.id == suspect.id && now.active > 0) { now.overlapped = true }
                now.active += 1
                if job.id == suspect.id { now.suspectRuns = true }
            }
            try await Task.sleep(for: .milliseconds(100))
            state.withLock { now in
                now.active -= 1
                if job.id == suspect.id { now.suspectRuns = false }
            }
        }
        var others: [Job] = []
        for _ in 0..<2 { others.append(try await host.enqueue(.networkRefresh, .network(UUID()))) }
        // The agent dies holding all three; the suspect is the one it died with twice over: here, once.
        _ = try await Self.dieWith(host.store, owner: "agent-1")
        for _ in 0..<2 { others.append(try await host.enqueue(.networkRefresh, .network(UUID()))) }
        let running = Task { await host.runner.run() }
        defer { running.cancel() }
        let ids = [suspect.id] + others.map(\.id)
        #expect(await eventually(timeout: .seconds(20)) {
            var done = true
            for id in ids where (try? await host.store.job(id: id).state) != .succeeded { done = false }
            return done
        })
        running.cancel()
        await running.value
        #expect(try await host.store.job(id: suspect.id).deaths == 1)
        #expect(!state.withLock { $0.overlapped })
    }

    /// A create failing while reconciliation passes run, as at start-up: the instance shows the job's
    /// own cause, never "no job left to finish it".
    @Test(.timeLimit(.minutes(1))) func aFailureWinsOverTheReconciliationPass() async throws {
        for _ in 0..<5 {
            let host = try await FakeHost().registered()
            defer { host.store.removeFiles() }
            let (_, instance) = try await host.networkAndInstance()
            host.instances.failEnsureRunning(with: ControlError.invalid("no such machine type"))
            try await host.enqueue(.instanceCreate, .instance(instance.uuid))
            let reconciler = Reconciler(agent: host.agent, logger: Logger(label: "sfnode.test"))
            let passes = Task {
                for _ in 0..<20 { _ = try? await reconciler.reconcileOnce() }
            }
            #expect(try await host.runner.runOne())
            await passes.value
            let after = try await host.store.instance(uuid: instance.uuid)
            #expect(after.state == .creatingError)
            #expect(after.errorMessage == "instance.create failed after 1 attempt(s): no such machine type")
        }
    }

    /// An instance whose failed job was never recorded on it (the agent died in between) is given
    /// that job's cause by the pass, not "no job left to finish it".
    @Test func aStuckInstanceGetsItsFailedJobsCause() async throws {
        let host = try FakeHost()
        defer { host.store.removeFiles() }
        let (_, instance) = try await host.networkAndInstance(node: FakeHost.node)
        try await host.store.setInstanceState(uuid: instance.uuid, to: .preflight)
        try await host.store.setInstanceState(uuid: instance.uuid, to: .creating)
        let job = try await host.enqueue(.instanceCreate, .instance(instance.uuid))
        let claimed = try #require(try await host.store.claimNext(targets: [.node(FakeHost.node)], owner: "agent-1", lease: .seconds(30)))
        #expect(claimed.id == job.id)
        try await host.store.fail(try #require(claimed.lease), error: "qemu-img create failed: disk full", retryable: false)
        let report = try await Reconciler(agent: host.agent, logger: Logger(label: "sfnode.test")).reconcileOnce()
        #expect(report.stuckInstances == 1)
        let after = try await host.store.instance(uuid: instance.uuid)
        #expect(after.errorMessage == "instance.create failed after 1 attempt(s): qemu-img create failed: disk full")
    }

    /// A running job whose lease lapsed is still live: its instance is not stuck.
    @Test func anInstanceWhoseJobsLeaseLapsedIsNotStuck() async throws {
        let host = try FakeHost()
        defer { host.store.removeFiles() }
        let (_, instance) = try await host.networkAndInstance(node: FakeHost.node)
        try await host.store.setInstanceState(uuid: instance.uuid, to: .preflight)
        try await host.store.setInstanceState(uuid: instance.uuid, to: .creating)
        try await host.enqueue(.instanceCreate, .instance(instance.uuid))
        _ = try await Self.dieWith(host.store, owner: "agent-1")
        let report = try await Reconciler(agent: host.agent, logger: Logger(label: "sfnode.test")).reconcileOnce()
        #expect(report.stuckInstances == 0)
        #expect(try await host.store.instance(uuid: instance.uuid).state == .creating)
    }
}

/// The host locks' rule: a pass waits for host steps, not for downloads.
@Suite struct HostLockTests {
    @Test(.timeLimit(.minutes(1))) func aPassWaitsForAHostStepButNotForADownload() async throws {
        let locks = HostLocks()
        let release = Mutex(false)
        let holdsImages = Mutex(false)
        let holdsHost = Mutex(false)
        let downloading = Task {
            try await locks.objectStep(["artifact:a"]) {
                try await locks.resolvingImages {
                    holdsImages.withLock { $0 = true }
                    while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
                }
            }
        }
        // Waited for, not slept on: on a busy machine a task may start late.
        #expect(await eventually(timeout: .seconds(10)) { holdsImages.withLock { $0 } })
        // The pass gets the host at once, a download holding the image lock notwithstanding.
        let order = Mutex<[String]>([])
        try await locks.exclusive { order.withLock { $0.append("pass during download") } }
        let step = Task {
            try await locks.hostStep([HostLocks.network(UUID())]) {
                order.withLock { $0.append("step") }
                holdsHost.withLock { $0 = true }
                try await Task.sleep(for: .milliseconds(100))
                order.withLock { $0.append("step end") }
            }
        }
        #expect(await eventually(timeout: .seconds(10)) { holdsHost.withLock { $0 } })
        try await locks.exclusive { order.withLock { $0.append("pass after step") } }
        try await step.value
        #expect(order.withLock { $0 } == ["pass during download", "step", "step end", "pass after step"])
        // Nested steps take what they hold already for free.
        try await locks.hostStep([HostLocks.instance(UUID())]) { try await locks.hostStep { try await locks.exclusiveIsNotNeeded() } }
        release.withLock { $0 = true }
        try await downloading.value
    }

    /// Object locks are taken instances first, then networks, then host-wide keys.
    @Test func objectLocksHaveOneOrder() {
        let instance = HostLocks.instance(UUID()), network = HostLocks.network(UUID())
        #expect(HostLocks.ordered([HostLocks.egress, network, instance]) == [instance, network, HostLocks.egress])
    }
}

extension HostLocks {
    /// Nothing: a body for the nesting check.
    fileprivate func exclusiveIsNotNeeded() async throws {}
}
