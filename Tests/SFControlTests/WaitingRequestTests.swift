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
        // No agent runs: a power operation waits out these seconds, holding its place.
        settings.powerWait = .seconds(3)
        let fixture = try await ControlFixture(settings: settings)
        defer { fixture.cleanup() }
        let control = fixture.control
        var request = ControlFixture.request(network: nil)
        request.namespace = "ci"
        let (instance, _) = try await control.createInstance(request)
        for state in [InstanceState.preflight, .creating, .created] { try await fixture.store.setInstanceState(uuid: instance.uuid, to: state) }
        let uuid = instance.uuid.lowercasedString

        let waiting = Task { try await control.power(.poweroff, uuid, namespace: "ci") }
        #expect(await eventually(timeout: .seconds(10)) {
            (try? await fixture.store.jobs(states: [.queued], limit: 100).contains { $0.kind == "instance.poweroff" }) == true
        })
        let refused = await controlError { try await control.power(.reboothard, uuid, namespace: "ci") }
        #expect(refused?.code == .tooBusy && refused?.message.contains("SFNODE_QUOTA_WAITING_REQUESTS") == true, "\(String(describing: refused))")
        #expect(try await fixture.store.jobs(states: [.queued], limit: 100).allSatisfy { $0.kind != "instance.reboothard" })
        // The admin (no namespace) waits in places of its own.
        _ = try await control.power(.poweron, uuid)
        _ = try await waiting.value
        _ = try await control.power(.reboothard, uuid, namespace: "ci")
        #expect(try await fixture.store.jobs(states: [.queued], limit: 100).contains { $0.kind == "instance.reboothard" })
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
