#if canImport(Glibc)
import Glibc
#endif

/// SIGPIPE's default action kills the whole process. sfnode writes to sockets (libvirt's RPC client
/// meeting a daemon that just went away) and to pipes (a child's standard input) whose reader can
/// vanish; it wants those writes to fail with EPIPE instead, as libvirt's own tools do.
public enum BrokenPipes {
    private static let ignored: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// Ignores SIGPIPE process-wide; idempotent.
    public static func ignore() { ignored }
}
