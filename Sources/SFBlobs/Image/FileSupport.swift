import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// Creates `path` with mode 0700 (if missing), and any missing parents with the default mode.
/// Foundation's `createDirectory(withIntermediateDirectories:attributes:)` gives the intermediate
/// directories the same attributes: a storage path that does not exist yet, made on the way to
/// its `blobs` directory, would become 0700 itself, and libvirt's qemu user could then no longer
/// reach the instance disks under it ("Permission denied" when the domain starts).
func createPrivateDirectory(_ path: String) throws {
    let parent = (path as NSString).deletingLastPathComponent
    if !parent.isEmpty { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) }
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
}

/// A file being written: raw descriptor writes (no buffering layer to flush or lose), ENOSPC
/// reported as ``ImageError/diskFull(path:)``.
final class OutputFile: @unchecked Sendable {
    // @unchecked: used by one writer at a time (a fetch's sink, a gunzip loop), never concurrently.
    let path: String
    private var descriptor: Int32

    /// Creates (or truncates) `path`, mode 0644.
    init(creating path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if descriptor < 0 { throw fileError("create", path) }
    }

    /// Writes all of `bytes`.
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var pointer = bytes.baseAddress else { return }
        var remaining = bytes.count
        while remaining > 0 {
            let written = Glibc.write(descriptor, pointer, remaining)
            if written < 0 {
                if errno == EINTR { continue }
                throw fileError("write", path)
            }
            pointer += written
            remaining -= written
        }
    }

    /// Moves the write position `count` bytes on without writing: the bytes skipped read as zeros
    /// and take no disk space (a hole), once ``setLength(_:)`` or a later write covers them.
    func skip(_ count: Int64) throws {
        guard let offset = off_t(exactly: count), lseek(descriptor, offset, SEEK_CUR) >= 0 else { throw fileError("seek", path) }
    }

    /// Sets the file's length, for a file that ends in a hole.
    func setLength(_ length: Int64) throws {
        guard let length = off_t(exactly: length), ftruncate(descriptor, length) == 0 else { throw fileError("truncate", path) }
    }

    /// Empties the file, for a download that starts again.
    func truncate() throws {
        if ftruncate(descriptor, 0) != 0 || lseek(descriptor, 0, SEEK_SET) < 0 { throw fileError("truncate", path) }
    }

    /// Flushes the data to disk, so a rename after it never publishes a file a crash could empty.
    func sync() throws {
        if fsync(descriptor) != 0 { throw fileError("fsync", path) }
    }

    /// Closes the descriptor. Idempotent.
    func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }

    deinit { close() }
}

/// The error for a failed file operation: a full disk (ENOSPC, EDQUOT) is ``ImageError/diskFull(path:)``,
/// anything else a ``SystemError`` naming the operation and the path.
func fileError(_ operation: String, _ path: String, code: Int32 = errno) -> any Error {
    if code == ENOSPC || code == EDQUOT { return ImageError.diskFull(path: path) }
    return SystemError("\(operation) \(path)", code: code)
}

/// rename(2), with the error naming both paths.
func renameFile(_ from: String, to: String) throws {
    if rename(from, to) != 0 { throw fileError("rename \(from) to", to) }
}

/// fsyncs a file by path (qemu-img's output, which sfnode did not write itself).
func syncFile(_ path: String) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw fileError("open", path) }
    defer { close(fd) }
    if fsync(fd) != 0 { throw fileError("fsync", path) }
}

/// fsyncs a directory, so that a rename into it survives a crash.
func syncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    fsync(fd)
    close(fd)
}

/// The file's size in bytes and whether it exists.
func fileSize(_ path: String) -> Int64? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return Int64(info.st_size)
}

/// Whether qemu-img's message says the disk filled up.
func mentionsDiskFull(_ text: String) -> Bool {
    text.contains("No space left on device") || text.contains("Disk quota exceeded")
}

/// Hands the file open as `fd` (named `path` in errors) to `body` from where it stands to its end,
/// 1 MiB at a time. Blocks.
func readChunks(_ fd: Int32, _ path: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw BlobError.system("read", path, code: errno)
        }
        if n == 0 { return }
        try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
    }
}
