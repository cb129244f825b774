#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SFSystem

/// One state change told to the service manager (see `sd_notify(3)`).
public enum NotifyMessage: Sendable, Equatable {
    /// `READY=1`: start-up is complete; a `Type=notify` unit becomes active.
    case ready
    /// `STOPPING=1`: shutdown has begun.
    case stopping
    /// `WATCHDOG=1`: still alive; must come more often than `WatchdogSec=`.
    case watchdog
    /// `STATUS=…`: a free-form line `systemctl status` shows.
    case status(String)
    /// `EXTEND_TIMEOUT_USEC=…`: ask for more time for the current start or stop.
    case extendTimeout(Duration)

    /// The `KEY=value` line. A newline would end the assignment early, so it becomes a space.
    public var line: String {
        switch self {
        case .ready: return "READY=1"
        case .stopping: return "STOPPING=1"
        case .watchdog: return "WATCHDOG=1"
        case .status(let text): return "STATUS=" + text.replacingOccurrences(of: "\n", with: " ")
        case .extendTimeout(let duration): return "EXTEND_TIMEOUT_USEC=\(microseconds(duration))"
        }
    }
}

/// `sd_notify` without libsystemd: each notification is one datagram of `KEY=value` lines sent to
/// the socket systemd names in `$NOTIFY_SOCKET` (a path, or an abstract name spelt `@name`).
public struct SystemdNotifier: Sendable {
    /// The socket, as `$NOTIFY_SOCKET` spells it.
    public let socket: String
    private let address: UnixSocketAddress

    /// A notifier for the socket named `socket` (an absolute path or `@abstract`).
    public init(socket: String) throws {
        self.socket = socket
        self.address = try UnixSocketAddress(socket)
    }

    /// The notifier systemd asked for through `NOTIFY_SOCKET`, or nil when it is unset or empty
    /// (not started by systemd, or by a unit that is not `Type=notify`). A value that is neither a
    /// path nor `@name` throws (libsystemd's `vsock:` form is not supported).
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> SystemdNotifier? {
        guard let socket = environment["NOTIFY_SOCKET"], !socket.isEmpty else { return nil }
        return try SystemdNotifier(socket: socket)
    }

    /// Sends `messages` together in one datagram (as `sd_notify("READY=1\nSTATUS=…")` does).
    public func notify(_ messages: [NotifyMessage]) throws {
        guard !messages.isEmpty else { return }
        // A fresh socket per notification, like libsystemd: nothing to keep open or share.
        let sender = try UnixDatagramSender()
        try sender.send(Array(messages.map(\.line).joined(separator: "\n").utf8), to: address)
    }

    /// Sends one message.
    public func notify(_ message: NotifyMessage) throws {
        try notify([message])
    }

    /// The watchdog period systemd expects pings within (`WatchdogSec=`), or nil when the watchdog
    /// is off or meant for another process.
    ///
    /// From `WATCHDOG_USEC`; when `WATCHDOG_PID` is set it must be `pid`, because a child that
    /// inherited the environment must not keep a hung parent alive (`sd_watchdog_enabled`'s rule).
    public static func watchdogInterval(
        environment: [String: String] = ProcessInfo.processInfo.environment, pid: Int32 = getpid()
    ) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let pidText = environment["WATCHDOG_PID"], !pidText.isEmpty {
            guard let watched = Int32(pidText), watched == pid else { return nil }
        }
        return .microseconds(Int64(clamping: usec))
    }
}

/// Whole microseconds in `duration`, never negative.
private func microseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    guard seconds >= 0 else { return 0 }
    return UInt64(seconds) * 1_000_000 + UInt64(attoseconds / 1_000_000_000_000)
}
