import Foundation
import SFDaemonSupport
import Testing

@Suite("Snapshot settings")
struct SnapshotSettingsTests {
    @Test("SFNODE_QUOTA_SNAPSHOT_VERSIONS: 100 by default, set by the environment, refused out of 1...10000 by name")
    func snapshotVersions() throws {
        var settings = NodeConfiguration.defaults(nodeName: "sf-1")
        #expect(settings.quotaSnapshotVersions == 100)
        try settings.applyEnvironment(["SFNODE_QUOTA_SNAPSHOT_VERSIONS": "5"])
        #expect(settings.quotaSnapshotVersions == 5)
        for bad in ["0", "10001", "-1", "3.5"] {
            let error = try #require(throws: ConfigurationError.self) { try settings.applyEnvironment(["SFNODE_QUOTA_SNAPSHOT_VERSIONS": bad]) }
            #expect(error.description.hasPrefix("SFNODE_QUOTA_SNAPSHOT_VERSIONS: '\(bad)' is not a whole number of versions"), "\(error)")
        }
    }
}
