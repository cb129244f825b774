import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Files that appear whole or not at all: written (or made by a tool) under a temporary name
/// beside the target, synced, given their mode, and renamed over it. A reader (dnsmasq on
/// SIGHUP, QEMU, the client) never sees half a file, and a crash leaves at most a stray
/// temporary file, never a truncated target that a later run would take for finished.
public enum AtomicFile {
    /// The temporary name `write(_:to:mode:)` uses, unique to this process.
    public static func temporaryPath(for path: String) -> String { path + ".partial-\(getpid())" }

    /// Replaces `path` with `contents`, readable as `mode` from the moment it appears.
    public static func write(_ contents: Data, to path: String, mode: mode_t) throws {
        let temporary = temporaryPath(for: path)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw SystemError.fromErrno("open \(temporary)") }
        do {
            if let code = contents.withUnsafeBytes({ writeAll(descriptor, $0) }) { throw SystemError("write \(temporary)", code: code) }
        } catch {
            close(descriptor)
            unlink(temporary)
            throw error
        }
        close(descriptor)
        try publish(temporary, as: path, mode: mode)
    }

    /// Moves a finished temporary file (made by `qemu-img` or `xorriso`, say) over `path`: synced,
    /// given `mode` when one is asked for, then renamed. The temporary file is removed on failure.
    public static func publish(_ temporary: String, as path: String, mode: mode_t? = nil) throws {
        do {
            // open(2) ignores the mode of an existing file and the umask narrows a new one.
            if let mode, chmod(temporary, mode) != 0 { throw SystemError.fromErrno("chmod \(temporary)") }
            let descriptor = open(temporary, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { throw SystemError.fromErrno("open \(temporary)") }
            let synced = fsync(descriptor) == 0
            close(descriptor)
            guard synced else { throw SystemError.fromErrno("fsync \(temporary)") }
            guard rename(temporary, path) == 0 else { throw SystemError.fromErrno("rename \(temporary) to \(path)") }
        } catch {
            unlink(temporary)
            throw error
        }
    }
}

/// Writes all of `bytes` to `descriptor`, going on after short writes and interruptions; the
/// errno of a failure, or nil.
public func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
    guard let base = bytes.baseAddress else { return nil }
    var offset = 0
    while offset < bytes.count {
        let written = Glibc.write(descriptor, base + offset, bytes.count - offset)
        if written < 0 {
            if errno == EINTR { continue }
            return errno
        }
        offset += written
    }
    return nil
}
