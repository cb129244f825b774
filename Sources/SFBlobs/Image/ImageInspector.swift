import Foundation
import Logging
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// What inspecting an image found.
public struct ImageInfo: Sendable, Equatable {
    /// The format its header bytes say (never qemu's guess).
    public let format: ImageFormat
    /// The size the guest sees, in bytes, from qemu-img; nil for gzip, which must be unpacked first.
    public let virtualSize: Int64?
    /// Bytes the file takes on disk.
    public let actualSize: Int64
    /// qcow2's cluster size in bytes (2 MiB is what the cache wants), nil for other formats.
    public let clusterSize: Int?
    /// `qemu-img info --output=json`, verbatim; empty for gzip.
    public let qemuInfo: [String: JSONValue]
    /// The MIME type, for the blob's record.
    public var mimeType: String { format.mimeType }
}

/// Identifies disk images from their header bytes and checks that they are self-contained.
///
/// The format is decided here, never by qemu-img's probing: a raw image whose first bytes spell a
/// qcow2 header naming `/etc/shadow` as its backing file would otherwise be opened as qcow2 and hand
/// that file to the guest (the reason OpenStack wrote format_inspector). qemu-img is then run with the
/// detected format given explicitly, only to learn sizes, and its answer is checked again for backing
/// and data files.
///
/// The header check runs in the agent's own process, not in a child, on purpose: the parsers
/// (ImageHeader.swift) are plain Swift over bytes, with no C and no unsafe pointers, so the only way
/// a hostile header could kill the process is a Swift trap, an overflowing conversion or an index
/// out of range. Every number they read from a header goes through checked arithmetic and is bounded
/// against the image's real size before use, and a coverage-guided fuzzer
/// (`scripts/fuzz-image-headers`, run by `scripts/test`) and a seeded mutation test
/// (`ImageHeaderFuzzTests`) feed them real qcow2, VMDK, VHD, VHDX, ISO and gzip headers and their
/// mutations, asserting that each answer is a format or a thrown ``ImageError``. A child process per
/// image would cost a fork and exec on every boot's cache check to guard against a failure those
/// tests show cannot happen. qemu-img, which is C and parses far more, does run as a child, under
/// prlimit.
public struct ImageInspector: Sendable {
    private let logger: Logger
    private let qemuImg: String

    /// An inspector running `qemuImg` (an absolute path) for sizes.
    public init(logger: Logger, qemuImg: String = "/usr/bin/qemu-img") {
        self.logger = logger
        self.qemuImg = qemuImg
    }

    /// Inspects `path`: detects the format from its header, refuses images that name other files,
    /// then asks qemu-img (format explicit) for the virtual size. Runs off the cooperative pool.
    ///
    /// - Parameter allowRaw: whether a file with no recognised header is accepted as a raw image.
    /// - Throws: ``ImageError`` naming the file and what is wrong with it.
    public func inspect(_ path: String, allowRaw: Bool = true) async throws -> ImageInfo {
        let qemuImg = qemuImg
        let logger = logger
        return try await runBlocking {
            try Self.inspectBlocking(path, allowRaw: allowRaw, qemuImg: qemuImg, logger: logger)
        }
    }

    /// The header checks alone, without qemu-img: the format, and the qcow2 cluster size.
    public static func detect(_ path: String, allowRaw: Bool = true) throws -> (format: ImageFormat, clusterSize: Int?) {
        let file = try ImageFile(path)
        defer { file.close() }
        return try HeaderCheck(source: file, allowRaw: allowRaw).run()
    }

    /// The header checks over an image held in memory, `name` standing for its path in errors: what
    /// the fuzzers and tests drive.
    public static func detect(bytes: [UInt8], name: String = "(image in memory)", allowRaw: Bool = true) throws
        -> (format: ImageFormat, clusterSize: Int?)
    {
        try HeaderCheck(source: InMemoryImage(path: name, bytes: bytes), allowRaw: allowRaw).run()
    }

    private static func inspectBlocking(_ path: String, allowRaw: Bool, qemuImg: String, logger: Logger) throws -> ImageInfo {
        let file = try ImageFile(path)
        let (format, headerClusterSize) = try HeaderCheck(source: file, allowRaw: allowRaw).run()
        let actualSize = file.allocatedBytes
        file.close()
        guard format.qemuFormat != nil else {
            return ImageInfo(format: format, virtualSize: nil, actualSize: actualSize, clusterSize: nil, qemuInfo: [:])
        }
        let info = try qemuInfoChecked(path, format: format, qemuImg: qemuImg)
        let virtual = try qemuInfoSize(info, "virtual-size", path: path)
        var clusterSize = headerClusterSize
        if clusterSize == nil, format == .qcow2, info["cluster-size"] != nil {
            clusterSize = Int(try qemuInfoSize(info, "cluster-size", path: path))
        }
        logger.debug(
            "inspected image",
            metadata: ["image.path": "\(path)", "image.format": "\(format.rawValue)", "image.virtual_size": "\(virtual)"])
        return ImageInfo(format: format, virtualSize: virtual, actualSize: actualSize, clusterSize: clusterSize, qemuInfo: info)
    }

    /// A size in qemu-img's JSON answer: JSON numbers arrive as doubles, and one the image made
    /// huge (2^63 and past) or not whole must be refused rather than converted with a trap.
    static func qemuInfoSize(_ info: [String: JSONValue], _ key: String, path: String) throws -> Int64 {
        guard let value = info[key] else {
            throw ImageError.qemuImg(operation: "info", path: path, message: "its answer has no \(key)")
        }
        guard case .number(let number) = value, let size = Int64(exactly: number), size >= 0 else {
            let shown = (try? value.jsonText()) ?? "\(value)"
            throw ImageError.malformed(path: path, format: "qemu-img info", reason: "\(key) \(shown) is not a size in bytes from 0 to 2^63 - 1")
        }
        return size
    }

    /// qemu-img info for `format`, refusing a backing or data file that qemu-img sees.
    static func qemuInfoChecked(_ path: String, format: ImageFormat, qemuImg: String, timeLimit: Duration? = nil) throws -> [String: JSONValue] {
        guard let qemuFormat = format.qemuFormat else {
            throw ImageError.unsupportedFormat(path: path, format: format.rawValue, reason: "qemu-img cannot read it")
        }
        let info = try qemuInfo(path, timeLimit: timeLimit, format: qemuFormat, qemuImg: qemuImg)
        // Belt and braces: the header check already refused these, but if qemu-img sees a backing or
        // data file that the header parser missed, the image is refused all the same.
        if let backing = findKey(["backing-filename", "full-backing-filename"], in: .object(info)) {
            throw ImageError.backingFile(path: path, name: backing)
        }
        if let dataFile = findKey(["data-file"], in: .object(info)) {
            throw ImageError.externalDataFile(path: path, name: dataFile)
        }
        // A VMDK's extents must all be the image itself: qemu follows an embedded descriptor's
        // extents in some headers (capacity 0), which the header check refuses, and this catches any
        // other way qemu finds to open a second file.
        if format == .vmdk, case .object(let specific)? = info["format-specific"], case .object(let data)? = specific["data"],
            case .array(let extents)? = data["extents"]
        {
            for case .object(let extent) in extents {
                let name = extent["filename"]?.stringValue ?? "(no filename)"
                guard name == path else {
                    throw ImageError.unsafeVMDK(path: path, reason: "qemu-img reads its extent from another file, '\(name)'")
                }
            }
        }
        return info
    }

    /// `qemu-img info --output=json -f FORMAT PATH`, under prlimit when it is installed: a crafted
    /// image can make qemu-img spin or allocate without bound (CVE-2015-5162), so it gets 30 s of
    /// CPU and 1 GiB of address space.
    private static func qemuInfo(_ path: String, timeLimit: Duration? = nil, format: String, qemuImg: String) throws -> [String: JSONValue] {
        var command = [qemuImg, "info", "--output=json", "-f", format, path]
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit") {
            command = ["/usr/bin/prlimit", "--cpu=30", "--as=1073741824"] + command
        }
        let output = try ChildProcess.run(command, timeLimit: timeLimit)
        guard output.status == 0 else {
            throw ImageError.qemuImg(
                operation: "info", path: path, message: output.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard case .object(let info)? = try? JSONValue.parse(output.stdout) else {
            throw ImageError.qemuImg(operation: "info", path: path, message: "its output is not a JSON object")
        }
        return info
    }
}

/// The first string value found under any of `keys`, anywhere in `value`.
private func findKey(_ keys: Set<String>, in value: JSONValue) -> String? {
    switch value {
    case .object(let members):
        for (key, member) in members {
            if keys.contains(key) {
                if case .string(let name) = member { return name }
                if member != .null { return "\(member)" }
            }
            if let found = findKey(keys, in: member) { return found }
        }
        return nil
    case .array(let items):
        for item in items { if let found = findKey(keys, in: item) { return found } }
        return nil
    default:
        return nil
    }
}

/// An image file opened for reading its header.
final class ImageFile: ImageByteSource {
    let path: String
    private var descriptor: Int32
    /// The file size in bytes.
    let size: Int64
    /// Bytes allocated on disk (a sparse raw image takes less than its size).
    let allocatedBytes: Int64

    init(_ path: String) throws {
        self.path = path
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        if descriptor < 0 {
            throw ImageError.unreadable(path: path, message: String(cString: strerror(errno)))
        }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(descriptor)
            throw ImageError.unreadable(path: path, message: message)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(descriptor)
            throw ImageError.notAnImage(path: path, reason: "it is not a regular file")
        }
        size = Int64(info.st_size)
        // The kernel's numbers, but still saturated rather than trapped on.
        let (allocated, overflow) = Int64(info.st_blocks).multipliedReportingOverflow(by: 512)
        allocatedBytes = overflow ? Int64.max : allocated
    }

    /// Up to `count` bytes at `offset` (fewer at the end of the file).
    func read(at offset: Int64, count: Int) throws -> [UInt8] {
        guard offset >= 0, count > 0, offset < size else { return [] }
        var bytes = [UInt8](repeating: 0, count: Int(min(Int64(count), size - offset)))
        var done = 0
        while done < bytes.count {
            let got = bytes.withUnsafeMutableBytes { buffer in
                pread(descriptor, buffer.baseAddress.map { $0 + done }, buffer.count - done, off_t(offset) + off_t(done))
            }
            if got < 0 {
                if errno == EINTR { continue }
                throw ImageError.unreadable(path: path, message: String(cString: strerror(errno)))
            }
            if got == 0 { break }
            done += got
        }
        return Array(bytes.prefix(done))
    }

    func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }

    deinit { close() }
}

