import Foundation
import Logging
import NIOPosix
import PostgresNIO
import SFStore

/// A database of its own on the tests' PostgreSQL server (`scripts/test-postgres`, whose URL
/// `scripts/test` exports as `SFNODE_TEST_POSTGRES_URL`), named with a random suffix and dropped
/// by ``drop()`` (connections still open are ended). Leftovers of a killed run are named `sftpg*`,
/// which `scripts/cleanup-test-leftovers` drops.
public struct PostgresTestDatabase: Sendable {
    /// The store URL of the new database.
    public let url: String
    public let name: String
    private let server: PostgresStoreConfiguration

    /// The tests' server, or nil when no server was given (PostgreSQL cases are then not run).
    public static var serverURL: String? {
        ProcessInfo.processInfo.environment["SFNODE_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    public static func create() throws -> PostgresTestDatabase {
        guard let serverURL, let server = try PostgresStoreConfiguration(url: serverURL) else {
            throw StoreError.invalidArgument("SFNODE_TEST_POSTGRES_URL is not set (scripts/test-postgres prints one)")
        }
        let name = "sftpg" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        try Self.administer(server, "CREATE DATABASE \(name)")
        var database = server
        database.database = name
        let password = server.password.map { ":" + ($0.addingPercentEncoding(withAllowedCharacters: .urlPasswordAllowed) ?? $0) } ?? ""
        return PostgresTestDatabase(
            url: "postgres://\(server.username)\(password)@\(server.host):\(server.port)/\(name)", name: String(name), server: server)
    }

    /// Drops the database, ending any connection still open to it. A few tries: a process of the
    /// test that reconnects at that moment, or a worker the server started in it, can make one fail.
    public func drop() {
        for _ in 0..<5 {
            // No new connection while it goes (the test role is no superuser).
            try? Self.administer(server, "ALTER DATABASE \(name) CONNECTION LIMIT 0")
            if (try? Self.administer(server, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")) != nil { return }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    /// Runs `sql` on the server's own database (what CREATE and DROP DATABASE need).
    public static func administer(_ server: PostgresStoreConfiguration, _ sql: String) throws {
        let configuration = PostgresConnection.Configuration(
            host: server.host, port: server.port, username: server.username, password: server.password,
            database: server.database, tls: .disable)
        let logger = Logger(label: "sfnode.test.postgres")
        let connection = try PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: 1, logger: logger
        ).wait()
        defer { try? connection.close().wait() }
        _ = try connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).wait()
    }
}
