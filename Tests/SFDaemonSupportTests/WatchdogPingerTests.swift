import Logging
import Testing

@testable import SFDaemonSupport

@Suite("watchdog pings from their own thread")
struct WatchdogPingerTests {
    @Test("pings while the pool beats, stops when the beat stalls past the limit, resumes when it beats again")
    func followsThePool() async throws {
        let socket = try FakeDatagramSocket.path()
        let pinger = WatchdogPinger(
            notifier: try SystemdNotifier(socket: socket.address), period: .milliseconds(50), stallLimit: .milliseconds(300),
            logger: Logger(label: "test"))
        try pinger.start()
        defer { pinger.stop() }
        // The beat is fresh from start(): pings come.
        #expect(try await socket.receive(count: 2, timeout: .seconds(2)).count == 2)
        // No beat for longer than the limit (a pool that runs nothing): pings stop.
        try await Task.sleep(for: .milliseconds(400))
        while try socket.receiveNow() != nil {}
        #expect(try await socket.receive(timeout: .milliseconds(300)) == nil)
        pinger.beat()
        #expect(try await socket.receive(timeout: .seconds(2))?.text == "WATCHDOG=1")
    }
}
