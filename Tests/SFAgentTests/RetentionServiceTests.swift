import Foundation
import Logging
import SFAgent
import SFDaemonSupport
import SFStore
import SFTestSupport
import Testing

@Suite("Retention service")
struct RetentionServiceTests {
    /// An event a year old: past any retention.
    private func ancient(_ message: String) -> Event {
        Event(objectType: "node", objectUUID: "sf-1", type: .audit, timestamp: Date(timeIntervalSinceNow: -365 * 86_400), fqdn: "sf-1", message: message)
    }

    @Test("prunes at start and again every interval until cancelled")
    func periodic() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        try await store.record(ancient("before start"))
        try await store.record(Event(objectType: "node", objectUUID: "sf-1", type: .audit, fqdn: "sf-1", message: "today"))
        let service = RetentionService(
            store: store, policy: RetentionPolicy(), interval: .milliseconds(200), logger: Logger(label: "test.retention"))
        let running = Task { try await service.run() }
        defer { running.cancel() }

        #expect(try await eventually { try await store.events(objectType: "node", objectUUID: "sf-1").map(\.message) == ["today"] })
        // Not only at start: what grows old later goes at a later pass.
        try await store.record(ancient("after start"))
        #expect(try await eventually { try await store.events(objectType: "node", objectUUID: "sf-1").map(\.message) == ["today"] })

        running.cancel()
        try await running.value
    }

    @Test("the settings become the policy and the interval")
    func fromSettings() throws {
        var settings = NodeConfiguration.defaults(nodeName: "sf-1")
        try settings.applyEnvironment([
            "SFNODE_EVENT_RETENTION_DAYS": "90", "SFNODE_EVENT_MAX_PER_OBJECT": "500", "SFNODE_JOB_RETENTION_DAYS": "2",
            "SFNODE_DELETED_RETENTION_DAYS": "1", "SFNODE_PRUNE_INTERVAL_MINUTES": "15",
        ])
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let service = RetentionService(store: store, settings: settings, logger: Logger(label: "test.retention"))
        #expect(
            service.policy
                == RetentionPolicy(
                    eventAge: .seconds(90 * 86_400), eventsPerObject: 500, finishedJobAge: .seconds(2 * 86_400),
                    deletedAge: .seconds(86_400)))
        #expect(service.interval == .seconds(15 * 60))
    }
}
