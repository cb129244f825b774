/// Why an image cannot be used or prepared. Each message names the file and what is wrong, and
/// says what the operator or user can do about it.
public enum ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The image names a backing file; following it would let a guest read any file on the host.
    case backingFile(path: String, name: String)
    /// A qcow2 whose data lives in another file (an external data file), which is refused likewise.
    case externalDataFile(path: String, name: String?)
    /// The file is not a disk image at all (an HTML error page, an empty file).
    case notAnImage(path: String, reason: String)
    /// The file has no recognised image header and the caller does not accept raw images.
    case rawNotAllowed(path: String)
    /// A VMDK whose descriptor names other files, or of a kind sfnode does not accept.
    case unsafeVMDK(path: String, reason: String)
    /// A format sfnode recognises but does not accept.
    case unsupportedFormat(path: String, format: String, reason: String)
    /// A header that cannot be right (truncated, impossible values, encrypted).
    case malformed(path: String, format: String, reason: String)
    /// qemu-img failed; `message` is what it said.
    case qemuImg(operation: String, path: String, message: String)
    /// zlib could not unpack a gzip image.
    case gunzip(path: String, message: String)
    /// The file system filled up while writing `path`.
    case diskFull(path: String)
    /// An overlay was asked for that is smaller than its base.
    case overlayTooSmall(path: String, requestedGiB: Int, baseVirtualSize: Int64)
    /// A file could not be read.
    case unreadable(path: String, message: String)
    /// Unpacking or converting `path` (`operation`: `gunzip`, `qemu-img convert`) would write more
    /// than the image size limit: a decompression bomb, or an image larger than the node takes.
    case imageTooLarge(path: String, operation: String, limit: Int64)
    /// qemu-img ran past its wall-clock limit and was killed.
    case qemuImgTimedOut(operation: String, path: String, seconds: Int64)

    /// Whether trying again later may help: only a full disk (once space is freed) and a failed
    /// read may; a bad image stays bad.
    public var isRetryable: Bool {
        switch self {
        case .diskFull, .unreadable: return true
        default: return false
        }
    }

    /// The message.
    public var description: String {
        switch self {
        case .backingFile(let path, let name):
            return "refusing image \(path): it names the backing file '\(name)'; images must be self-contained "
                + "(flatten it with 'qemu-img convert -O qcow2' before uploading)"
        case .externalDataFile(let path, let name):
            return "refusing image \(path): it keeps its data in an external file"
                + (name.map { " '\($0)'" } ?? "") + "; images must be self-contained"
        case .notAnImage(let path, let reason):
            return "\(path) is not a disk image: \(reason)"
        case .rawNotAllowed(let path):
            return "\(path) has no recognised image header (qcow2, vmdk, vhd, iso, gzip) and raw images are not accepted here"
        case .unsafeVMDK(let path, let reason):
            return "refusing VMDK image \(path): \(reason); convert it to qcow2 first"
        case .unsupportedFormat(let path, let format, let reason):
            return "refusing \(format) image \(path): \(reason)"
        case .malformed(let path, let format, let reason):
            return "\(path) is a malformed \(format) image: \(reason)"
        case .qemuImg(let operation, let path, let message):
            return "qemu-img \(operation) \(path) failed: \(message)"
        case .gunzip(let path, let message):
            return "cannot unpack gzip image \(path): \(message)"
        case .diskFull(let path):
            return "no space left on the device holding \(path): free space there (unused images in the image "
                + "cache, deleted instances' disks) or move the storage path to a larger file system, then retry"
        case .overlayTooSmall(let path, let requestedGiB, let baseVirtualSize):
            let baseGiB = (baseVirtualSize + (1 << 30) - 1) >> 30
            return "cannot create disk \(path) of \(requestedGiB) GiB: its image is \(baseVirtualSize) bytes "
                + "(\(baseGiB) GiB rounded up) and a disk cannot be smaller than its image; ask for at least \(baseGiB) GiB"
        case .unreadable(let path, let message):
            return "cannot read \(path): \(message)"
        case .imageTooLarge(let path, let operation, let limit):
            return "\(operation) of image \(path) stopped: its output passes the image size limit of \(limit) bytes "
                + "(SFNODE_IMAGE_MAX_GIB); nothing was kept"
        case .qemuImgTimedOut(let operation, let path, let seconds):
            return "qemu-img \(operation) \(path) was killed after running for its limit of \(seconds) s "
                + "(SFNODE_QEMU_IMG_TIMEOUT_SECONDS)"
        }
    }
}
