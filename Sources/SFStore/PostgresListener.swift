import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// The connection of one process that LISTENs for the queue's wake-ups.
///
/// postgres-nio's pooled client has no LISTEN, so this is a connection of its own. A socket can die
/// without either end noticing for a long time, which would cost every wake-up until then: the
/// connection is pinged every few seconds and, when a ping fails or times out, closed and opened
/// again with a growing pause (0.1 s up to 5 s), then LISTENs again. Each time it (re)starts
/// listening it wakes the claimers once, for notifications sent while it was away.
final class PostgresListener: Sendable {
    private let configuration: PostgresStoreConfiguration
    private let logger: Logger
    private let onWake: @Sendable () -> Void
    private let onLost: @Sendable () -> Void
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let current = Mutex<PostgresConnection?>(nil)
    static let pingInterval: Duration = .seconds(5)
    static let pingTimeout: Duration = .seconds(5)

    /// `onWake` on every notification (and on each return); `onLost` when the connection fails,
    /// which usually means the server ended every connection of this process.
    init(
        configuration: PostgresStoreConfiguration, logger: Logger, onLost: @escaping @Sendable () -> Void,
        onWake: @escaping @Sendable () -> Void
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onWake = onWake
        self.onLost = onLost
    }

    func start() {
        let started = Task { [self] in await self.run() }
        task.withLock { $0 = started }
    }

    func stop() {
        task.withLock { task in
            task?.cancel()
            task = nil
        }
        if let connection = current.withLock({ $0 }) { connection.close().whenComplete { _ in } }
    }

    private func run() async {
        var pause: Duration = .milliseconds(100)
        var failing = false
        while !Task.isCancelled {
            let listened = Atomic<Bool>(false)
            do {
                let connection = try await PostgresConnection.connect(
                    on: MultiThreadedEventLoopGroup.singleton.any(),
                    configuration: configuration.connectionConfiguration, id: 0, logger: logger)
                current.withLock { $0 = connection }
                let recovering = failing
                var failure: (any Error)?
                do {
                    try await listen(on: connection) { [logger] in
                        if recovering { logger.info("listening for queue wake-ups again") }
                        listened.store(true, ordering: .relaxed)
                    }
                } catch {
                    failure = error
                }
                // Closed and waited for before it is let go (postgres-nio asserts that).
                current.withLock { $0 = nil }
                try? await connection.close()
                if let failure { throw failure }
            } catch {
                if Task.isCancelled { return }
                onLost()
                if listened.load(ordering: .relaxed) {
                    failing = false
                    pause = .milliseconds(100)
                }
                if !failing {
                    logger.warning(
                        "the queue's wake-up connection failed; claimers poll until it is back",
                        metadata: ["error": "\(PostgresBackend.message(error))", "store.location": "\(configuration.redactedURL)"])
                }
                failing = true
            }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(5))
        }
    }

    /// LISTENs on `connection` and pings it until either fails.
    private func listen(on connection: PostgresConnection, listening: @escaping @Sendable () -> Void) async throws {
        let logger = self.logger
        let onWake = self.onWake
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await connection.listen(on: PostgresBackend.wakeupChannel) { notifications in
                    listening()
                    onWake()
                    for try await _ in notifications { onWake() }
                }
                throw StoreError.backend("the wake-up notifications ended")
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: Self.pingInterval)
                    try await Self.ping(connection, logger: logger)
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// `SELECT 1`, failed when it takes longer than ``pingTimeout``.
    private static func ping(_ connection: PostgresConnection, logger: Logger) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { _ = try await connection.query("SELECT 1", logger: logger).get() }
            group.addTask {
                try await Task.sleep(for: pingTimeout)
                throw StoreError.backend("the wake-up connection did not answer a ping in \(pingTimeout)")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }
}
