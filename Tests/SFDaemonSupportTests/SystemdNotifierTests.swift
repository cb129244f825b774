import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

@testable import SFDaemonSupport

@Suite("sd_notify")
struct SystemdNotifierTests {
    @Test("READY, STOPPING, WATCHDOG and STATUS reach a path socket and an abstract one", arguments: [false, true])
    func messages(abstract: Bool) async throws {
        let socket = try abstract ? FakeDatagramSocket.abstract() : FakeDatagramSocket.path()
        let notifier = try #require(try SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": socket.address]))
        try notifier.notify(.ready)
        try notifier.notify(.watchdog)
        try notifier.notify([.status("line one\nline two"), .stopping])
        let received = try await socket.receive(count: 3).map(\.text)
        #expect(received == ["READY=1", "WATCHDOG=1", "STATUS=line one line two\nSTOPPING=1"])
    }

    @Test("no NOTIFY_SOCKET means no notifier; a relative one is an error")
    func environment() throws {
        #expect(try SystemdNotifier.fromEnvironment([:]) == nil)
        #expect(try SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": ""]) == nil)
        #expect(throws: (any Error).self) { try SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "run/notify"]) }
        #expect(throws: (any Error).self) { try SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "@"]) }
    }

    @Test("the watchdog interval comes from WATCHDOG_USEC, only for the process WATCHDOG_PID names")
    func watchdogInterval() {
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "30000000"], pid: 42) == .seconds(30))
        #expect(
            SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"], pid: 42)
                == .seconds(30))
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"], pid: 42) == nil)
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "0"], pid: 42) == nil)
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "soon"], pid: 42) == nil)
        #expect(SystemdNotifier.watchdogInterval(environment: [:], pid: 42) == nil)
    }

    @Test("EXTEND_TIMEOUT_USEC is in whole microseconds")
    func extendTimeout() {
        #expect(NotifyMessage.extendTimeout(.milliseconds(1500)).line == "EXTEND_TIMEOUT_USEC=1500000")
    }
}

@Suite("SystemdService")
struct SystemdServiceTests {
    @Test("sends READY, then WATCHDOG pings at half the interval, then STOPPING on graceful shutdown")
    func lifecycle() async throws {
        let socket = try FakeDatagramSocket.path()
        let service = SystemdService(
            notifier: try SystemdNotifier(socket: socket.address), watchdogInterval: .milliseconds(100),
            readyStatus: "serving", logger: Logger(label: "test"))
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                let ready = try #require(try await socket.receive())
                #expect(ready.text == "READY=1\nSTATUS=serving")
                let pings = try await socket.receive(count: 3)
                #expect(pings.map(\.text) == ["WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"])
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        // Whatever pings were in flight, the last datagram is STOPPING=1 and nothing follows it.
        var rest = try await socket.receive(count: 10, timeout: .milliseconds(300)).map(\.text)
        #expect(rest.popLast() == "STOPPING=1")
        #expect(rest.allSatisfy { $0 == "WATCHDOG=1" })
    }

    @Test("without a watchdog it sends READY, waits for shutdown, sends STOPPING")
    func noWatchdog() async throws {
        let socket = try FakeDatagramSocket.abstract()
        let service = SystemdService(
            notifier: try SystemdNotifier(socket: socket.address), watchdogInterval: nil, logger: Logger(label: "test"))
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                #expect(try await socket.receive()?.text == "READY=1")
                #expect(try await socket.receive(timeout: .milliseconds(200)) == nil)
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(try await socket.receive()?.text == "STOPPING=1")
    }

    @Test("in a ServiceGroup it is shut down by the group's graceful shutdown")
    func inServiceGroup() async throws {
        let socket = try FakeDatagramSocket.path()
        let service = SystemdService(
            notifier: try SystemdNotifier(socket: socket.address), watchdogInterval: .seconds(60), logger: Logger(label: "test"))
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: service)], gracefulShutdownSignals: [], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(try await socket.receive()?.text == "READY=1")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(try await socket.receive()?.text == "STOPPING=1")
    }
}
