#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on a file, held from ``acquire(path:)`` until ``release()``.
///
/// Used for `/run/xtables.lock`, the lock every iptables program takes around a table
/// update, so that sfnode's libiptc commits never interleave with theirs.
public final class FileLock {
    private var descriptor: Int32

    private init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    /// Opens (creating it if needed) and locks `path`, waiting for other holders.
    public static func acquire(path: String) throws -> FileLock {
        try lock(open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600), path: path)
    }

    /// Locks the directory `path` itself (`flock` on its descriptor), which needs no lock file in it.
    public static func acquire(directory path: String) throws -> FileLock {
        try lock(open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), path: path)
    }

    private static func lock(_ fd: Int32, path: String) throws -> FileLock {
        if fd < 0 { throw SystemError.fromErrno("open \(path)") }
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let error = SystemError.fromErrno("flock \(path)")
            close(fd)
            throw error
        }
        return FileLock(descriptor: fd)
    }

    /// Releases the lock. Idempotent.
    public func release() {
        guard descriptor >= 0 else { return }
        close(descriptor)
        descriptor = -1
    }

    deinit {
        release()
    }
}
