import Foundation

/// Where and how the PostgreSQL store connects, from a `postgres://` URL:
/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?pool_size=8`.
///
/// The password is kept out of everything printable: ``redactedURL`` is what logs and errors show.
public struct PostgresStoreConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    /// Connections the store opens at most (besides the one that listens for wake-ups); each runs
    /// on a thread of its own.
    public var poolSize: Int
    /// How long a statement may run (a lock wait included) before the server cancels it, so that a
    /// stuck lock fails a request instead of holding a thread for ever.
    public var statementTimeout: Duration

    /// The largest ``poolSize`` accepted: PostgreSQL's default `max_connections` is 100, shared by
    /// every node of the cluster.
    public static let maximumPoolSize = 64

    /// The configuration of `url`; nil when `url` is not a `postgres://` or `postgresql://` URL (a
    /// SQLite path), ``StoreError/invalidArgument(_:)`` naming what is wrong when it is one but
    /// malformed.
    public init?(url text: String) throws {
        guard text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") else { return nil }
        guard let components = URLComponents(string: text) else {
            throw StoreError.invalidArgument("the store URL is not a valid URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        guard let host = components.host, !host.isEmpty else {
            throw StoreError.invalidArgument("the store URL names no host (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        guard let user = components.user, !user.isEmpty else {
            throw StoreError.invalidArgument("the store URL names no user (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw StoreError.invalidArgument("the store URL names no database (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw StoreError.invalidArgument("the store URL's port \(port) is not 1-65535") }
        self.host = host
        self.port = port
        self.username = user.removingPercentEncoding ?? user
        self.password = components.password.map { $0.removingPercentEncoding ?? $0 }
        self.database = database.removingPercentEncoding ?? database
        self.poolSize = 8
        self.statementTimeout = .seconds(60)
        for item in components.queryItems ?? [] {
            switch item.name {
            case "pool_size":
                guard let value = item.value.flatMap(Int.init), (1...Self.maximumPoolSize).contains(value) else {
                    throw StoreError.invalidArgument(
                        "the store URL's pool_size '\(item.value ?? "")' is not a whole number from 1 to \(Self.maximumPoolSize)")
                }
                poolSize = value
            case "statement_timeout":
                guard let value = item.value.flatMap(Int.init), (1...3600).contains(value) else {
                    throw StoreError.invalidArgument(
                        "the store URL's statement_timeout '\(item.value ?? "")' is not a whole number of seconds from 1 to 3600")
                }
                statementTimeout = .seconds(value)
            default:
                throw StoreError.invalidArgument(
                    "the store URL has an unknown parameter '\(item.name)' (known: pool_size, statement_timeout)")
            }
        }
    }

    /// The URL with the password replaced by `***`.
    public var redactedURL: String {
        let credentials = password == nil ? username : "\(username):***"
        return "postgres://\(credentials)@\(host):\(port)/\(database)"
    }

    public var description: String { redactedURL }
}
