import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Fault injection for the crash tests: when `SFNODE_CRASH_AT` names a point, the agent kills itself
/// with SIGKILL on reaching it, exactly as a power cut or the OOM killer would, half-way through a
/// job; `abort:<point>` aborts there instead (SIGABRT), as a Swift runtime trap on hostile input
/// would, every time a job reaches it. Unset (always, outside those tests) it costs one dictionary
/// lookup made once per process.
public enum CrashPoint {
    private static let armed: String? = ProcessInfo.processInfo.environment["SFNODE_CRASH_AT"]

    /// Every point a handler passes, in the order it passes them; tests iterate over these.
    public static let all = [
        "network.create.after-egress", "network.create.after-namespace", "network.create.after-dhcp",
        "instance.create.after-disks", "instance.create.after-define", "instance.create.after-start",
        "interface.float.after-allocate", "interface.float.after-rules",
    ]

    /// Dies here if this is the armed point. Every crash point is also a step boundary where a job
    /// that has been cancelled (its lease lapsed) stops, by throwing `CancellationError`: between
    /// steps the job converges when re-run, exactly as after a crash there.
    public static func reach(_ point: String) throws {
        if armed == point { kill(getpid(), SIGKILL) }
        if let armed, armed.hasPrefix("abort:"), armed.dropFirst("abort:".count) == point { abort() }
        try Task.checkCancellation()
    }
}
