#if canImport(Glibc)
import Glibc
#endif
import Logging
import SFSystem
import ServiceLifecycle
import Synchronization

/// The systemd side of sfnode's life, as a swift-service-lifecycle service: `READY=1` when it runs,
/// `WATCHDOG=1` at half the watchdog period until graceful shutdown, `STOPPING=1` on the way out.
///
/// The pings come from a dedicated OS thread, not a task: requests that hold every cooperative
/// thread (blocking I/O done by mistake, a flood) must not starve them. That thread pings only while
/// the cooperative pool is alive, which a task proves by beating every second; when the beat is
/// older than half the watchdog period the pings stop, and systemd restarts a process whose tasks
/// no longer run.
///
/// Put it **last** in the `ServiceGroup`: services start in order, so `READY=1` goes out only after
/// everything before it has started, and graceful shutdown runs in reverse, so `STOPPING=1` is the
/// first thing systemd hears. Pings stop with it: systemd disarms the watchdog once told
/// `STOPPING=1`, and `TimeoutStopSec=` bounds the rest of the shutdown.
///
/// Without a notifier (not under systemd) it only waits for shutdown, so the same group runs anywhere.
public struct SystemdService: Service {
    private let notifier: SystemdNotifier?
    private let watchdogInterval: Duration?
    private let readyStatus: String?
    private let logger: Logger

    /// A service telling `notifier` about readiness and liveness; `watchdogInterval` is systemd's
    /// period (pings go at half of it), nil for no pings; `readyStatus` goes out with `READY=1`.
    public init(notifier: SystemdNotifier?, watchdogInterval: Duration?, readyStatus: String? = nil, logger: Logger) {
        self.notifier = notifier
        self.watchdogInterval = watchdogInterval
        self.readyStatus = readyStatus
        self.logger = logger
    }

    /// The service for this process's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    /// A malformed `NOTIFY_SOCKET` is logged and treated as absent rather than stopping the agent.
    public static func fromEnvironment(readyStatus: String? = nil, logger: Logger) -> SystemdService {
        var notifier: SystemdNotifier?
        do {
            notifier = try SystemdNotifier.fromEnvironment()
        } catch {
            logger.warning("NOTIFY_SOCKET is unusable; not notifying systemd", error: error)
        }
        return SystemdService(
            notifier: notifier, watchdogInterval: notifier == nil ? nil : SystemdNotifier.watchdogInterval(),
            readyStatus: readyStatus, logger: logger)
    }

    /// Sends `READY=1`, pings until graceful shutdown or cancellation, then sends `STOPPING=1`.
    public func run() async throws {
        send([.ready] + (readyStatus.map { [.status($0)] } ?? []))
        if let notifier, let interval = watchdogInterval {
            let pinger = WatchdogPinger(notifier: notifier, period: interval / 2, stallLimit: interval / 2, logger: logger)
            try pinger.start()
            // cancelWhenGracefulShutdown cancels the beat when shutdown starts, then returns its result.
            await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    pinger.beat()
                    do { try await Task.sleep(for: pinger.beatInterval) } catch { break }
                }
            }
            pinger.stop()
        } else {
            // Returns on graceful shutdown; throws only on cancellation, which ends the service too.
            try? await gracefulShutdown()
        }
        send([.stopping])
    }

    /// Failures are logged, not thrown: throwing would stop the whole group, and systemd's own
    /// start timeout or watchdog already acts on a notification that never arrived.
    private func send(_ messages: [NotifyMessage]) {
        guard let notifier else { return }
        do {
            try notifier.notify(messages)
            logger.debug("notified systemd", metadata: ["systemd.notify": "\(messages.map(\.line))"])
        } catch {
            logger.warning("notifying systemd failed", error: error, metadata: ["systemd.notify": "\(messages.map(\.line))"])
        }
    }
}

/// Sends `WATCHDOG=1` every `period` from its own OS thread while the cooperative pool beats
/// (``beat()``, from a task) at least every `stallLimit`.
final class WatchdogPinger: Sendable {
    /// How often the pool's task beats: every second, or four times per `stallLimit` when that is
    /// shorter (tests use periods of milliseconds).
    var beatInterval: Duration { min(.seconds(1), stallLimit / 4) }

    private let notifier: SystemdNotifier
    private let period: Duration
    private let stallLimit: Duration
    private let logger: Logger
    /// CLOCK_MONOTONIC nanoseconds of the last beat.
    private let lastBeat = Atomic<Int64>(0)
    private let stopped = Atomic<Bool>(false)

    init(notifier: SystemdNotifier, period: Duration, stallLimit: Duration, logger: Logger) {
        self.notifier = notifier
        self.period = period
        self.stallLimit = stallLimit
        self.logger = logger
    }

    /// Records that a task on the cooperative pool ran just now.
    func beat() { lastBeat.store(Self.now(), ordering: .releasing) }

    /// Starts the pinging thread (the first beat counts from now).
    func start() throws {
        beat()
        try OSThread.spawn(name: "sfnode-watchdog", stackSize: 256 << 10) { [self] in run() }
    }

    /// Ends the pinging thread after at most one period.
    func stop() { stopped.store(true, ordering: .releasing) }

    private func run() {
        var stalled = false
        while true {
            Self.sleep(period)
            if stopped.load(ordering: .acquiring) { return }
            let silence = Self.now() - lastBeat.load(ordering: .acquiring)
            if silence > Self.nanoseconds(stallLimit) {
                if !stalled {
                    logger.critical(
                        "the cooperative pool has not run for too long; no more watchdog pings, so systemd restarts the process",
                        metadata: ["watchdog.silence_ms": "\(silence / 1_000_000)"])
                }
                stalled = true
                continue
            }
            if stalled { logger.notice("the cooperative pool runs again; watchdog pings resume") }
            stalled = false
            do { try notifier.notify(.watchdog) } catch {
                logger.warning("systemd watchdog ping failed", error: error)
            }
        }
    }

    private static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let parts = duration.components
        return parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000
    }

    private static func sleep(_ duration: Duration) {
        let total = nanoseconds(duration)
        var request = timespec(tv_sec: Int(total / 1_000_000_000), tv_nsec: Int(total % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}
