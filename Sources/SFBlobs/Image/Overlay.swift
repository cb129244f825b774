import Foundation
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// Creates an instance disk as a qcow2 copy-on-write overlay on a cached base image:
/// `qemu-img create -f qcow2 -b BASE -F FORMAT PATH [SIZE G]`, written to
/// `<path>.partial` and renamed, so a crash never leaves a half-made disk that a later run would
/// take for finished. An existing `path` is kept as it is (the disk of an instance being realized
/// again).
///
/// - Parameters:
///   - base: the cached image (trusted: sfnode made it), inspected with its format given explicitly.
///   - baseFormat: the base's format (qcow2 for the image cache's disks).
///   - sizeGiB: the disk size; nil keeps the base's virtual size. A size below the base's virtual
///     size is refused with ``ImageError/overlayTooSmall(path:requestedGiB:baseVirtualSize:)``:
///     shrinking would cut off the end of the guest's file system.
///   - qemuImg: the qemu-img binary, by absolute path.
///   - timeLimit: the wall-clock limit of each qemu-img run; the base is sfnode's own output and
///     `create` writes only metadata, so the default is ``ImageLimits``' own.
public func createOverlay(
    base: String, baseFormat: ImageFormat, at path: String, sizeGiB: Int?, qemuImg: String = "/usr/bin/qemu-img",
    timeLimit: Duration = ImageLimits().qemuImgTimeLimit
) async throws {
    try await runQemuImgCreate(at: path, timeLimit: timeLimit) {
        try createOverlayBlocking(base: base, baseFormat: baseFormat, at: path, sizeGiB: sizeGiB, qemuImg: qemuImg, timeLimit: timeLimit)
    }
}

/// Creates an empty qcow2 disk of `sizeGiB` at `path` (`qemu-img create -f qcow2 PATH SIZEG`), by the
/// same temporary-then-rename rule as ``createOverlay(base:baseFormat:at:sizeGiB:qemuImg:timeLimit:)``.
/// An existing `path` is kept as it is.
public func createBlankDisk(
    at path: String, sizeGiB: Int, qemuImg: String = "/usr/bin/qemu-img", timeLimit: Duration = ImageLimits().qemuImgTimeLimit
) async throws {
    try await runQemuImgCreate(at: path, timeLimit: timeLimit) {
        if FileManager.default.fileExists(atPath: path) { return }
        guard sizeGiB > 0 else { throw ImageError.overlayTooSmall(path: path, requestedGiB: sizeGiB, baseVirtualSize: 0) }
        try qemuImgCreate([qemuImg, "create", "-q", "-f", "qcow2"], at: path, size: "\(sizeGiB)G", timeLimit: timeLimit)
    }
}

/// Runs a disk's making off the cooperative pool; a qemu-img past `timeLimit` leaves no partial file
/// and is reported as ``ImageError/qemuImgTimedOut(operation:path:seconds:)``.
private func runQemuImgCreate(at path: String, timeLimit: Duration, _ work: @escaping @Sendable () throws -> Void) async throws {
    try await runBlocking {
        do {
            try work()
        } catch ChildProcessError.timedOut(let command, _) {
            unlink(path + ".partial")
            throw ImageError.qemuImgTimedOut(
                operation: command.contains(" create ") ? "create" : "info", path: path, seconds: timeLimit.components.seconds)
        }
    }
}

private func createOverlayBlocking(
    base: String, baseFormat: ImageFormat, at path: String, sizeGiB: Int?, qemuImg: String, timeLimit: Duration
) throws {
    if FileManager.default.fileExists(atPath: path) { return }
    guard let format = baseFormat.qemuFormat else {
        throw ImageError.unsupportedFormat(path: base, format: baseFormat.rawValue, reason: "an overlay's base must be unpacked first")
    }
    if let sizeGiB {
        guard sizeGiB > 0 else { throw ImageError.overlayTooSmall(path: path, requestedGiB: sizeGiB, baseVirtualSize: 0) }
        let info = try ChildProcess.run([qemuImg, "info", "--output=json", "-f", format, base], timeLimit: timeLimit)
        guard info.status == 0 else {
            throw ImageError.qemuImg(operation: "info", path: base, message: info.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard case .object(let fields)? = try? JSONValue.parse(info.stdout) else {
            throw ImageError.qemuImg(operation: "info", path: base, message: "its output is not a JSON object")
        }
        let virtual = try ImageInspector.qemuInfoSize(fields, "virtual-size", path: base)
        // A size too large for bytes in an Int64 is larger than any base, so only a small one can be too small.
        let (requestedBytes, overflow) = Int64(sizeGiB).multipliedReportingOverflow(by: 1 << 30)
        if !overflow && requestedBytes < virtual {
            throw ImageError.overlayTooSmall(path: path, requestedGiB: sizeGiB, baseVirtualSize: virtual)
        }
    }
    try qemuImgCreate(
        [qemuImg, "create", "-q", "-f", "qcow2", "-b", base, "-F", format], at: path, size: sizeGiB.map { "\($0)G" }, timeLimit: timeLimit)
}

/// `argv` with `<path>.partial` (and `size`) appended, run under `timeLimit`; the result synced and
/// renamed to `path`, or nothing left behind.
private func qemuImgCreate(_ argv: [String], at path: String, size: String?, timeLimit: Duration) throws {
    let partial = path + ".partial"
    unlink(partial)
    let result = try ChildProcess.run(argv + [partial] + (size.map { [$0] } ?? []), timeLimit: timeLimit)
    guard result.status == 0 else {
        unlink(partial)
        let message = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        if mentionsDiskFull(message) { throw ImageError.diskFull(path: path) }
        throw ImageError.qemuImg(operation: "create", path: path, message: message)
    }
    do {
        try syncFile(partial)
        try renameFile(partial, to: path)
    } catch {
        unlink(partial)
        throw error
    }
}
