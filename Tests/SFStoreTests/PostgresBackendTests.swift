import Foundation
import Logging
import SFStore
import SFTestSupport
import Synchronization
import Testing

/// What only the PostgreSQL backend has: its URL, its password kept out of sight, migrating once
/// among starters, and outliving connections the server ends. The store contract itself runs on it
/// through `Backend.all`.
@Suite("PostgreSQL backend")
struct PostgresBackendTests {
    @Test("the store URL is read strictly, and each mistake is named")
    func urls() throws {
        let full = try #require(try PostgresStoreConfiguration(url: "postgres://sf:p%40ss@db.example:6543/cloud?pool_size=4&statement_timeout=5"))
        #expect(full.host == "db.example" && full.port == 6543 && full.username == "sf" && full.password == "p@ss")
        #expect(full.database == "cloud" && full.poolSize == 4 && full.statementTimeout == .seconds(5))
        #expect(full.redactedURL == "postgres://sf:***@db.example:6543/cloud")
        #expect(try PostgresStoreConfiguration(url: "/var/lib/sfnode/sfnode.sqlite") == nil)
        let plain = try #require(try PostgresStoreConfiguration(url: "postgresql://sf@localhost/cloud"))
        #expect(plain.port == 5432 && plain.password == nil && plain.poolSize == 8)
        let refusals: [(String, String)] = [
            ("postgres://sf:pw@/cloud", "names no host"),
            ("postgres://db.example/cloud", "names no user"),
            ("postgres://sf:pw@db.example/", "names no database"),
            ("postgres://sf:pw@db.example/cloud?pool_size=0", "pool_size '0'"),
            ("postgres://sf:pw@db.example/cloud?pool_size=65", "pool_size '65'"),
            ("postgres://sf:pw@db.example/cloud?statement_timeout=-1", "statement_timeout '-1'"),
            ("postgres://sf:pw@db.example/cloud?sslmode=require", "unknown parameter 'sslmode'"),
        ]
        for (url, reason) in refusals {
            do {
                _ = try PostgresStoreConfiguration(url: url)
                Issue.record("\(url) was accepted")
            } catch let error as StoreError {
                #expect(error.description.contains(reason), "\(url): \(error)")
                #expect(!error.description.contains("pw"), "\(url): the password is in \(error)")
            }
        }
    }

    @Test("the password appears in no log line and no error", .enabled(if: PostgresTestDatabase.serverURL != nil))
    func passwordNeverShown() async throws {
        let database = try PostgresTestDatabase.create()
        defer { database.drop() }
        let password = try #require(try PostgresStoreConfiguration(url: database.url)?.password)
        let lines = RecordedMessages()
        var logger = Logger(label: "sfnode.test.store") { _ in RecordingLogHandler(messages: lines) }
        logger.logLevel = .trace
        let store = try SQLStore.open(location: database.url, fqdn: "n1", logger: logger)
        _ = try await store.enqueue(kind: "k", payload: nil, target: .node("n1"), objectKey: nil)
        #expect(!store.path.contains(password) && store.path.contains(":***@"))
        store.close()
        let wrong = database.url.replacingOccurrences(of: ":\(password)@", with: ":not-\(password)@")
        do {
            _ = try SQLStore.open(location: wrong, fqdn: "n1", logger: logger)
            Issue.record("a wrong password was accepted")
        } catch {
            #expect(!"\(error)".contains(password), "\(error)")
            #expect("\(error)".contains("postgres://"), "the error names the store: \(error)")
        }
        #expect(!lines.lines.isEmpty)
        for line in lines.lines { #expect(!line.contains(password), "\(line)") }
    }

    @Test("nodes that start together migrate once", .enabled(if: PostgresTestDatabase.serverURL != nil))
    func concurrentStarters() async throws {
        let database = try PostgresTestDatabase.create()
        defer { database.drop() }
        let stores = try await withThrowingTaskGroup(of: SQLStore.self) { group in
            for index in 0..<4 {
                group.addTask { try SQLStore.open(location: database.url, fqdn: "n\(index)") }
            }
            return try await group.reduce(into: [SQLStore]()) { $0.append($1) }
        }
        defer { for store in stores { store.close() } }
        #expect(stores.count == 4)
        for store in stores { #expect(try await store.nodes().isEmpty) }
    }

    @Test("the store never uses more connections than pool_size, however many callers wait", .enabled(if: PostgresTestDatabase.serverURL != nil))
    func poolIsBounded() async throws {
        let server = try #require(try PostgresTestDatabase.serverURL.flatMap { try PostgresStoreConfiguration(url: $0) })
        let database = try PostgresTestDatabase.create()
        defer { database.drop() }
        // Two for the pool, one for the listener, one spare for the migration's connection on its
        // way out: a pool that opened a connection per waiting caller is refused by the server.
        try PostgresTestDatabase.administer(server, "ALTER DATABASE \(database.name) CONNECTION LIMIT 4")
        let store = try SQLStore.open(location: database.url + "?pool_size=2", fqdn: "n1")
        defer { store.close() }
        let node = JobTarget.node("n1")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<40 {
                group.addTask {
                    if index.isMultiple(of: 2) {
                        // One-statement operations, waiting in tasks.
                        _ = try await store.enqueue(kind: "k", payload: nil, target: node, objectKey: nil)
                        if let job = try await store.claimNext(targets: [node], owner: "w\(index)", lease: .seconds(30)) {
                            try await store.complete(try #require(job.lease))
                        }
                    } else {
                        // Transactions, on the pool's threads.
                        _ = try await store.jobs(states: [], limit: 100)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await store.jobs(states: [.queued, .running], limit: 100).isEmpty)
        #expect(try await store.jobs(states: [.succeeded], limit: 100).count == 20)
    }

    @Test("the store outlives connections the server ends, its wake-ups too", .enabled(if: PostgresTestDatabase.serverURL != nil))
    func survivesEndedConnections() async throws {
        let server = try #require(try PostgresTestDatabase.serverURL.flatMap { try PostgresStoreConfiguration(url: $0) })
        let database = try PostgresTestDatabase.create()
        defer { database.drop() }
        let store = try SQLStore.open(location: database.url, fqdn: "n1")
        let other = try SQLStore.open(location: database.url, fqdn: "n2")
        defer {
            store.close()
            other.close()
        }
        _ = try await store.enqueue(kind: "k", payload: nil, target: .node("n1"), objectKey: nil)
        let wakes = Mutex(0)
        let wakeups = store.wakeups()
        let listening = Task { for await _ in wakeups { wakes.withLock { $0 += 1 } } }
        defer { listening.cancel() }
        try PostgresTestDatabase.administer(
            server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database.name)'")
        // Every connection of both stores was ended: the next transactions open new ones.
        #expect(try await store.jobs(states: [], limit: 10).count == 1)
        // The listener comes back within its pause (at most 5 s) and wakes once on its return;
        // then each job queued by the other store wakes this one. Two rounds in a row that wake,
        // so the one wake of the return cannot pass for a notification.
        let deadline = ContinuousClock.now + .seconds(20)
        var wokenRounds = 0
        while wokenRounds < 2 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(300))
            let before = wakes.withLock { $0 }
            _ = try await other.enqueue(kind: "k", payload: nil, target: .node("n1"), objectKey: nil)
            var woke = false
            for _ in 0..<20 where !woke {
                try await Task.sleep(for: .milliseconds(50))
                woke = wakes.withLock { $0 } > before
            }
            wokenRounds = woke ? wokenRounds + 1 : 0
        }
        #expect(wokenRounds == 2)
    }
}
