import Logging
import Testing

@testable import SFDaemonSupport

@Suite("watchdog pings from their own thread")
struct WatchdogPingerTests {
    @Test("pings while the pool beats, stops when the beat stalls past the limit, resumes when it beats again")
    func followsThePool() async throws {
        let socket = try FakeDatagramSocket.path()
        let pinger = WatchdogPinger(
            notifier: try SystemdNotifier(socket: socket.address), period: .milliseconds(50), stallLimit: .seconds(1),
            logger: Logger(label: "test"))
        try pinger.start()
        defer { pinger.stop() }
        // The pool beats (as the agent's pool does every period): pings come.
        let beating = Task {
            while !Task.isCancelled {
                pinger.beat()
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        defer { beating.cancel() }
        let pinged = try await socket.receive(count: 2, timeout: .seconds(10)).count
        beating.cancel()
        _ = await beating.value
        #expect(pinged == 2)
        // No beat for longer than the limit (a pool that runs nothing): pings stop. Stopped means a
        // quiet gap thirty periods long, looked for until a deadline rather than at a fixed moment.
        var quiet = false
        let deadline = ContinuousClock.now + .seconds(15)
        while !quiet, ContinuousClock.now < deadline {
            while try socket.receiveNow() != nil {}
            quiet = try await socket.receive(timeout: .milliseconds(1_500)) == nil
        }
        #expect(quiet, "pings went on without a beat")
        pinger.beat()
        #expect(try await socket.receive(timeout: .seconds(10))?.text == "WATCHDOG=1")
    }
}
