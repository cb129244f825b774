import CLibvirt
import Foundation
import Logging
import SFLibvirt
import SFTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

private let virtAdmin = "/usr/bin/virt-admin"

/// The libvirtd client ids that belong to this test process, read through libvirt's admin API.
private func clientsOfThisProcess() throws -> Set<String> {
    let listing = try run(virtAdmin, ["srv-clients-list", "libvirtd"]).output
    let ids = listing.split(separator: "\n").compactMap { line -> String? in
        let first = line.split(separator: " ").first.map(String.init) ?? ""
        return Int(first) != nil ? first : nil
    }
    let pid = "\(getpid())"
    return Set(
        try ids.filter { id in
            let info = try run(virtAdmin, ["client-info", "libvirtd", id]).output
            return info.split(separator: "\n").contains { line in
                let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                return parts.count == 2 && parts[0] == "unix_process_id" && parts[1] == pid
            }
        })
}

/// Keeps what a logger was asked to log, so a test can tell which path the library took.
private struct CapturingLogHandler: LogHandler {
    final class Store: Sendable {
        let messages = Mutex<[String]>([])
    }
    let store: Store
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    var logLevel: Logger.Level = .info

    func log(event: LogEvent) {
        store.messages.withLock { $0.append(event.message.description) }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
}

/// Whether libvirt's event loop thread sits in ``stallEventLoop``, and whether it may leave.
private let eventLoopStalled = Atomic<Bool>(false)
private let eventLoopReleased = Atomic<Bool>(false)

/// Stalls libvirt's event loop thread until ``releaseEventLoop()`` (30 s at most): a one-shot timer
/// whose callback waits. While it waits, nothing notices a closed socket before the next call does.
private let stallEventLoop: @convention(c) (Int32, UnsafeMutableRawPointer?) -> Void = { timer, _ in
    virEventRemoveTimeout(timer)
    eventLoopStalled.store(true, ordering: .releasing)
    for _ in 0..<3_000 where !eventLoopReleased.load(ordering: .acquiring) { usleep(10_000) }
    eventLoopStalled.store(false, ordering: .releasing)
}

/// Stalls libvirt's event loop and returns once it is stalled: waited for, not slept on, because
/// on a busy machine the loop may take its time to run the timer.
private func stallTheEventLoop() async throws {
    eventLoopReleased.store(false, ordering: .releasing)
    try #require(virEventAddTimeout(0, stallEventLoop, nil, nil) >= 0)
    let stalled = await eventually(timeout: .seconds(30)) { eventLoopStalled.load(ordering: .acquiring) }
    // A timer that runs after all must not hold the loop with nobody left to release it.
    if !stalled { eventLoopReleased.store(true, ordering: .releasing) }
    try #require(stalled, "libvirt's event loop never ran the stalling timer")
}

/// Lets the stalled event loop go on, and returns once it has.
private func releaseEventLoop() async {
    eventLoopReleased.store(true, ordering: .releasing)
    _ = await eventually(timeout: .seconds(30)) { !eventLoopStalled.load(ordering: .acquiring) }
}

extension LibvirtIntegration {
    /// The daemon drops the connection (as a libvirtd restart does): libvirt's close callback marks it
    /// dead, the next call reconnects, and the lifecycle stream keeps delivering. The daemon is not
    /// restarted (other suites use it); `virt-admin client-disconnect` closes only this connection's
    /// socket from the daemon's side, which is what a client sees of a restart.
    @Suite(.serialized, .enabled(if: libvirtAvailable && FileManager.default.isExecutableFile(atPath: virtAdmin), "needs root, libvirtd and virt-admin"))
    struct ReconnectTests {
        @Test func survivesTheDaemonDroppingTheConnection() async throws {
            let before = try clientsOfThisProcess()
            let connection = try LibvirtConnection(logger: testLogger)
            let log = EventLog(try await connection.lifecycleEvents())
            #expect(await connection.connectionCount == 1)
            #expect(await connection.isConnected)
            let mine = try clientsOfThisProcess().subtracting(before)
            let client = try #require(mine.count == 1 ? mine.first : nil, "exactly one new client of ours: \(mine)")

            let dropped = try run(virtAdmin, ["client-disconnect", "libvirtd", client])
            try #require(dropped.status == 0)
            #expect(await eventually(timeout: .seconds(15)) { await !connection.isConnected }, "the close callback fired")

            let spec = DomainSpec(name: TestNames.unique("recon"), type: .qemu, memoryMiB: 64, vcpus: 1)
            try await withDomain(connection, spec) { identity in
                #expect(await connection.connectionCount == 2, "the call reconnected")
                #expect(await connection.isConnected)
                #expect(
                    await eventually(timeout: .seconds(10)) { log.events(for: identity.uuid).map(\.kind) == [.defined] },
                    "the stream subscribed before the drop delivers events from the new connection")
            }
            let reconnected = try clientsOfThisProcess().subtracting(before)
            #expect(!reconnected.contains(client), "the dead connection was closed, not leaked")

            // Dropped again and used at once, before or after the close callback has run: either the
            // liveness check or the retry of the failed call reconnects, and the caller sees no error.
            let second = try #require(reconnected.count == 1 ? reconnected.first : nil, "one client of ours: \(reconnected)")
            try #require(try run(virtAdmin, ["client-disconnect", "libvirtd", second]).status == 0)
            #expect(try await connection.lookup(name: TestNames.unique("none")) == nil)
            #expect(await connection.connectionCount == 3)
            #expect(try clientsOfThisProcess().subtracting(before).count == 1)
        }

        @Test func aCallWhoseConnectionDiedUnderItIsRetriedOnce() async throws {
            let store = CapturingLogHandler.Store()
            let logger = Logger(label: "sfnode.test.libvirt.retry") { _ in CapturingLogHandler(store: store) }
            let before = try clientsOfThisProcess()
            let connection = try LibvirtConnection(logger: logger)
            try await connection.connect()
            let mine = try clientsOfThisProcess().subtracting(before)
            let client = try #require(mine.count == 1 ? mine.first : nil, "exactly one new client of ours: \(mine)")

            // With the event loop asleep, the close callback cannot run before the call, so the
            // connection still looks alive and the call itself meets the closed socket.
            try await stallTheEventLoop()
            // Released however the test ends: the process's one event loop serves every later suite.
            defer { eventLoopReleased.store(true, ordering: .releasing) }
            try #require(try run(virtAdmin, ["client-disconnect", "libvirtd", client]).status == 0)
            #expect(try await connection.lookup(name: TestNames.unique("none")) == nil, "the caller sees no error")
            await releaseEventLoop()
            #expect(await connection.connectionCount == 2)
            let messages = store.messages.withLock { $0 }
            #expect(messages.contains("libvirt connection died during a call; reconnecting and retrying once"), "\(messages)")
        }

        @Test func resetAndRebootAreNotRetriedWhenTheirConnectionDies() async throws {
            // A reset whose reply was lost may already have happened; running it again would reset
            // the guest twice. So the caller gets the connection error, and the next call reconnects.
            for operation in ["reset", "reboot"] {
                let store = CapturingLogHandler.Store()
                let logger = Logger(label: "sfnode.test.libvirt.noretry") { _ in CapturingLogHandler(store: store) }
                let before = try clientsOfThisProcess()
                let connection = try LibvirtConnection(logger: logger)
                try await connection.connect()
                let mine = try clientsOfThisProcess().subtracting(before)
                let client = try #require(mine.count == 1 ? mine.first : nil, "exactly one new client of ours: \(mine)")

                try await stallTheEventLoop()
                defer { eventLoopReleased.store(true, ordering: .releasing) }
                try #require(try run(virtAdmin, ["client-disconnect", "libvirtd", client]).status == 0)
                // An absent domain: were the call retried, the caller would see libvirt's "no domain".
                let missing = DomainReference.name(TestNames.unique("none"))
                let failed = await #expect(throws: LibvirtError.self, "\(operation)") {
                    if operation == "reset" {
                        try await connection.reset(missing)
                    } else {
                        try await connection.reboot(missing)
                    }
                }
                #expect(failed?.isNoDomain == false, "the connection's error, not a retry's: \(failed?.description ?? "")")
                #expect(await connection.connectionCount == 1, "\(operation) did not reconnect to run again")
                let messages = store.messages.withLock { $0 }
                #expect(!messages.contains("libvirt connection died during a call; reconnecting and retrying once"), "\(messages)")
                #expect(messages.contains { $0.hasPrefix("libvirt connection died during a call that is not safe to repeat") }, "\(messages)")
                await releaseEventLoop()

                #expect(try await connection.lookup(missing) == nil, "the next call reconnects")
                #expect(await connection.connectionCount == 2)
            }
        }

        @Test func closeThenCallReconnects() async throws {
            let connection = try LibvirtConnection(logger: testLogger)
            try await connection.connect()
            try await connection.connect()
            #expect(await connection.connectionCount == 1, "connect is idempotent")
            await connection.close()
            #expect(await !connection.isConnected)
            #expect(try await connection.lookup(name: TestNames.unique("none")) == nil)
            #expect(await connection.connectionCount == 2)
        }

        @Test func streamsFinishWhenTheConnectionGoesAway() async throws {
            var connection: LibvirtConnection? = try LibvirtConnection(logger: testLogger)
            let stream = try await connection?.lifecycleEvents()
            let drained = Task {
                guard let stream else { return false }
                for await _ in stream {}
                return true
            }
            connection = nil
            let finished = Mutex(false)
            let watcher = Task {
                let result = await drained.value
                finished.withLock { $0 = result }
            }
            #expect(await eventually(timeout: .seconds(10)) { finished.withLock { $0 } }, "the stream ended with its connection")
            drained.cancel()
            watcher.cancel()
        }

        @Test func aBadURIFailsWithLibvirtsMessage() async throws {
            let connection = try LibvirtConnection(uri: "sftnosuchdriver:///system", logger: testLogger)
            let error = await #expect(throws: LibvirtError.self) { try await connection.connect() }
            #expect(error?.operation == "connect to")
            #expect(error?.object == "sftnosuchdriver:///system")
            #expect(error?.message.isEmpty == false)
            #expect(await !connection.isConnected)
        }
    }
}
