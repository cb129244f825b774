import Foundation
import Logging
import SFDoctor
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// `sfnode doctor`'s store-schema check: no store yet, this binary's schema, and a store a newer
/// sfnode migrated (made so by recording a migration this binary does not know).
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root (the doctor's other checks)"))
struct SchemaCheckTests {
    func schemaCheck(_ location: String) async -> HostCheck? {
        var checks = HostChecksTests.checks(storage: (location as NSString).deletingLastPathComponent)
        checks.storeLocation = location
        return await checks.run(logger: HostChecksTests.logger).checks.first { $0.name == "store-schema" }
    }

    @Test("no store, this sfnode's store, and one a newer sfnode migrated (a failure with what to do)")
    func schemaVersions() async throws {
        try await HostChecksTests.withDirectory { directory in
            let path = directory + "/store.sqlite"
            let absent = try #require(await schemaCheck(path))
            #expect(absent.status == .pass && absent.message.contains("no store"), "\(absent.message)")
            #expect(!FileManager.default.fileExists(atPath: path), "the check made no store")

            let store = try SQLStore(path: path, fqdn: "doctor")
            store.close()
            let current = try #require(await schemaCheck(path))
            #expect(current.status == .pass && current.message.contains(", this sfnode's"), "\(current.message)")

            // A migration from the future, as a newer sfnode would have recorded it.
            let sqlite = try ChildProcess.run(["/usr/bin/python3", "-c", """
                import sqlite3; c = sqlite3.connect('\(path)'); c.execute("INSERT INTO grdb_migrations VALUES ('v99-from-the-future')"); c.commit()
                """])
            #expect(sqlite.status == 0, "\(sqlite.stderr)")
            let newer = try #require(await schemaCheck(path))
            #expect(newer.status == .fail && newer.message.contains("v99-from-the-future") && newer.hint != nil, "\(newer.message)")
        }
    }
}
