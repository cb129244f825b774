import Logging
import ServiceLifecycle

/// The systemd side of sfnode's life, as a swift-service-lifecycle service: `READY=1` when it runs,
/// `WATCHDOG=1` at half the watchdog period until graceful shutdown, `STOPPING=1` on the way out.
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
            let period = interval / 2
            let logger = self.logger
            // cancelWhenGracefulShutdown cancels the loop when shutdown starts, then returns its result.
            await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    do { try await Task.sleep(for: period) } catch { return }
                    do { try notifier.notify(.watchdog) } catch {
                        logger.warning("systemd watchdog ping failed", error: error)
                    }
                }
            }
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
