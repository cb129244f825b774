import Foundation
import SFDaemonSupport
import Testing

@Suite("Retention settings")
struct RetentionSettingsTests {
    @Test("defaults: thirty days of events, 10,000 per object, a week of finished jobs and deleted objects, hourly")
    func defaults() {
        let settings = NodeConfiguration.defaults(nodeName: "sf-1")
        #expect(settings.eventRetentionDays == 30 && settings.eventMaxPerObject == 10_000)
        #expect(settings.jobRetentionDays == 7 && settings.deletedRetentionDays == 7 && settings.pruneIntervalMinutes == 60)
    }

    @Test("the environment and the file set them, and they round-trip")
    func set() throws {
        var settings = NodeConfiguration.defaults(nodeName: "sf-1")
        try settings.applyEnvironment(["SFNODE_EVENT_RETENTION_DAYS": "90", "SFNODE_PRUNE_INTERVAL_MINUTES": "5"])
        #expect(settings.eventRetentionDays == 90 && settings.pruneIntervalMinutes == 5)
        let decoded = try NodeConfiguration.decode(
            json: Data(#"{"deletedRetentionDays": 1, "eventMaxPerObject": 100, "jobRetentionDays": "3"}"#.utf8), source: "agent.json",
            defaults: settings)
        #expect(decoded.deletedRetentionDays == 1 && decoded.eventMaxPerObject == 100 && decoded.jobRetentionDays == 3)
        let again = try NodeConfiguration.decode(json: try JSONEncoder().encode(decoded), source: "again", defaults: .defaults())
        #expect(again == decoded)
    }

    @Test(
        "bad values name the setting, quote the value and give the range",
        arguments: [
            ("SFNODE_EVENT_RETENTION_DAYS", "0", "SFNODE_EVENT_RETENTION_DAYS: '0' is not a whole number of days from 1 to 36500"),
            ("SFNODE_EVENT_RETENTION_DAYS", "-5", "SFNODE_EVENT_RETENTION_DAYS: '-5' is not a whole number of days"),
            ("SFNODE_EVENT_RETENTION_DAYS", "1e300", "SFNODE_EVENT_RETENTION_DAYS: '1e300' is not a whole number of days"),
            ("SFNODE_EVENT_MAX_PER_OBJECT", "99", "SFNODE_EVENT_MAX_PER_OBJECT: '99' is not a whole number of events from 100"),
            ("SFNODE_JOB_RETENTION_DAYS", "99999999999999999999", "SFNODE_JOB_RETENTION_DAYS: '99999999999999999999' is not a whole number"),
            ("SFNODE_DELETED_RETENTION_DAYS", "1.5", "SFNODE_DELETED_RETENTION_DAYS: '1.5' is not a whole number of days"),
            ("SFNODE_PRUNE_INTERVAL_MINUTES", "10081", "SFNODE_PRUNE_INTERVAL_MINUTES: '10081' is not a whole number of minutes from 1 to 10080"),
        ])
    func bad(variable: String, value: String, message: String) throws {
        var settings = NodeConfiguration.defaults(nodeName: "sf-1")
        let error = try #require(throws: ConfigurationError.self) { try settings.applyEnvironment([variable: value]) }
        #expect(error.description.hasPrefix(message), "\(error)")
    }
}
