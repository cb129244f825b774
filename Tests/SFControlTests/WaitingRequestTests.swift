import Foundation
import SFControl
import SFStore
import SFTestSupport
import Testing

/// A request that waits for its job holds a connection; one namespace may have only so many.
@Suite("Requests waiting for their jobs")
struct WaitingRequestTests {
    @Test("past a namespace's waiting places a power operation is refused as too busy, naming the setting, and queues nothing; places free as requests answer")
    func waitingPlacesPerNamespace() async throws {
        var settings = ControlSettings()
        settings.quotas.waitingRequests = 1
        // No agent runs: a power operation waits, holding its place, until the test completes its job.
        settings.powerWait = .seconds(120)
        let fixture = try await ControlFixture(settings: settings)
        defer { fixture.cleanup() }
        let (control, store) = (fixture.control, fixture.store)
        var request = ControlFixture.request(network: nil)
        request.namespace = "ci"
        let (instance, _) = try await control.createInstance(request)
        for state in [InstanceState.preflight, .creating, .created] { try await store.setInstanceState(uuid: instance.uuid, to: state) }
        let uuid = instance.uuid.lowercasedString

        let waiting = Task { try await control.power(.poweroff, uuid, namespace: "ci") }
        #expect(await Self.queued("instance.poweroff", in: store))
        let refused = await controlError { try await control.power(.reboothard, uuid, namespace: "ci") }
        #expect(refused?.code == .tooBusy && refused?.message.contains("SFNODE_QUOTA_WAITING_REQUESTS") == true, "\(String(describing: refused))")
        #expect(try await store.jobs(states: [.queued], limit: 100).allSatisfy { $0.kind != "instance.reboothard" })
        // The admin (no namespace) waits in places of its own.
        let admin = Task { try await control.power(.poweron, uuid) }
        #expect(await Self.queued("instance.poweron", in: store))
        try await Self.completeQueuedJobs(in: store)
        _ = try await admin.value
        _ = try await waiting.value
        // The namespace's place is free again.
        let again = Task { try await control.power(.reboothard, uuid, namespace: "ci") }
        #expect(await Self.queued("instance.reboothard", in: store))
        try await Self.completeQueuedJobs(in: store)
        _ = try await again.value
    }

    /// Whether a job of `kind` is queued within a generous deadline.
    static func queued(_ kind: String, in store: SQLStore) async -> Bool {
        await eventually(timeout: .seconds(30)) { (try? await store.jobs(states: [.queued], limit: 100).contains { $0.kind == kind }) == true }
    }

    /// Claims and completes every queued job, oldest first, as an agent would.
    static func completeQueuedJobs(in store: SQLStore) async throws {
        let targets = Array(Set(try await store.jobs(states: [.queued], limit: 100).map(\.target)))
        while let job = try await store.claimNext(targets: targets, owner: "test-agent", lease: .seconds(60)) {
            try await store.complete(try #require(job.lease))
        }
    }

    @Test("a waiting request hears its job finish through the store's wake-up, here from another handle of the store, not from the poll")
    func waitEndsOnAWakeup() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let job = try await fixture.store.enqueue(kind: "instance.poweroff", payload: nil, target: .node("hv1"), objectKey: nil)
        let lease = try #require(try await fixture.store.claimNext(targets: [.node("hv1")], owner: "w", lease: .seconds(300))?.lease)
        let started = ContinuousClock.now
        let control = fixture.control
        // The poll alone would answer after two minutes.
        let waiting = Task { try await control.waitForJob(job.id, timeout: .seconds(120), poll: .seconds(120)) }
        try await Task.sleep(for: .milliseconds(300))
        let other = try SQLStore(path: fixture.store.path, fqdn: "another-process")
        try await other.complete(lease)
        let finished = try await waiting.value
        #expect(finished?.state == .succeeded)
        #expect(ContinuousClock.now - started < .seconds(60), "the wait ended on the poll, not the wake-up")
    }
}
