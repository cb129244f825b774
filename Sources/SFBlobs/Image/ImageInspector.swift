import Foundation
import Logging
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// A disk image format sfnode tells apart by its header bytes.
public enum ImageFormat: String, Sendable, Codable, CaseIterable {
    case qcow2
    case raw
    case vmdk
    /// An ISO 9660 (CD-ROM) image: raw data to qemu, attached as a cdrom.
    case iso
    /// A gzip-compressed image, to be unpacked and inspected again.
    case gzip
    /// Microsoft VHD (qemu calls it vpc).
    case vhd

    /// The name qemu-img's `-f` takes, or nil for gzip (qemu cannot read it).
    public var qemuFormat: String? {
        switch self {
        case .qcow2: return "qcow2"
        case .raw, .iso: return "raw"
        case .vmdk: return "vmdk"
        case .vhd: return "vpc"
        case .gzip: return nil
        }
    }

    /// The MIME type recorded with a blob (what libmagic reports for the same files).
    public var mimeType: String {
        switch self {
        case .qcow2: return "application/x-qemu-disk"
        case .raw: return "application/octet-stream"
        case .vmdk: return "application/x-vmdk-disk"
        case .iso: return "application/x-iso9660-image"
        case .gzip: return "application/gzip"
        case .vhd: return "application/x-vhd-disk"
        }
    }
}

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
        return try HeaderCheck(file: file, allowRaw: allowRaw).run()
    }

    private static func inspectBlocking(_ path: String, allowRaw: Bool, qemuImg: String, logger: Logger) throws -> ImageInfo {
        let file = try ImageFile(path)
        let (format, headerClusterSize) = try HeaderCheck(file: file, allowRaw: allowRaw).run()
        let actualSize = file.allocatedBytes
        file.close()
        guard format.qemuFormat != nil else {
            return ImageInfo(format: format, virtualSize: nil, actualSize: actualSize, clusterSize: nil, qemuInfo: [:])
        }
        let info = try qemuInfoChecked(path, format: format, qemuImg: qemuImg)
        guard case .number(let virtual)? = info["virtual-size"], virtual >= 0 else {
            throw ImageError.qemuImg(operation: "info", path: path, message: "its answer has no virtual-size")
        }
        var clusterSize = headerClusterSize
        if clusterSize == nil, format == .qcow2, case .number(let size)? = info["cluster-size"] { clusterSize = Int(size) }
        logger.debug(
            "inspected image",
            metadata: ["path": "\(path)", "format": "\(format.rawValue)", "virtual_size": "\(Int64(virtual))"])
        return ImageInfo(
            format: format, virtualSize: Int64(virtual), actualSize: actualSize, clusterSize: clusterSize, qemuInfo: info)
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
final class ImageFile {
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
        allocatedBytes = Int64(info.st_blocks) * 512
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

/// The header checks for one file.
private struct HeaderCheck {
    let file: ImageFile
    let allowRaw: Bool
    var path: String { file.path }

    func run() throws -> (format: ImageFormat, clusterSize: Int?) {
        let head = try file.read(at: 0, count: 64 * 1024)
        guard !head.isEmpty else { throw ImageError.notAnImage(path: path, reason: "it is empty") }
        if head.starts(with: [0x1f, 0x8b]) { return (.gzip, nil) }
        if head.starts(with: Array("QFI".utf8) + [0xfb]) { return (.qcow2, try checkQcow2(head)) }
        if head.starts(with: Array("KDMV".utf8)) {
            try checkSparseVMDK(head)
            return (.vmdk, nil)
        }
        if head.starts(with: Array("# Disk DescriptorFile".utf8)) {
            throw ImageError.unsafeVMDK(
                path: path, reason: "it is a text descriptor, whose extents are other files on the host")
        }
        if head.starts(with: Array("vhdxfile".utf8)) {
            throw ImageError.unsupportedFormat(path: path, format: "vhdx", reason: "VHDX is not accepted; convert it to qcow2")
        }
        if head.starts(with: Array("conectix".utf8)) {
            try checkVHD(footer: head)
            return (.vhd, nil)
        }
        if head.count >= 0x8006, Array(head[0x8001..<0x8006]) == Array("CD001".utf8) { return (.iso, nil) }
        // A fixed VHD has its footer only at the end.
        let tail = try file.read(at: max(0, file.size - 512), count: 512)
        if tail.count == 512, tail.starts(with: Array("conectix".utf8)) {
            try checkVHD(footer: tail)
            return (.vhd, nil)
        }
        if let first = head.first(where: { !isWhitespace($0) }), first == UInt8(ascii: "<") {
            let preview = String(decoding: head.prefix(60), as: UTF8.self)
                .replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
            throw ImageError.notAnImage(
                path: path,
                reason: "it starts like HTML/XML ('\(preview)'), probably an error page served with status 200; check the URL")
        }
        guard allowRaw else { throw ImageError.rawNotAllowed(path: path) }
        return (.raw, nil)
    }

    /// qcow2 header (big-endian, docs/interop/qcow2.txt): refuses a backing file, an external data
    /// file and encryption; returns the cluster size.
    private func checkQcow2(_ head: [UInt8]) throws -> Int {
        guard head.count >= 72 else { throw ImageError.malformed(path: path, format: "qcow2", reason: "the header is truncated") }
        let version = be32(head, 4)
        guard version == 2 || version == 3 else {
            throw ImageError.malformed(path: path, format: "qcow2", reason: "version \(version) is neither 2 nor 3")
        }
        let backingOffset = be64(head, 8)
        let backingSize = be32(head, 16)
        if backingOffset != 0 || backingSize != 0 {
            var name = "(unreadable name)"
            if backingSize > 0, backingSize <= 1023, backingOffset < UInt64(file.size) {
                let bytes = try file.read(at: Int64(backingOffset), count: Int(backingSize))
                name = String(decoding: bytes, as: UTF8.self)
            }
            throw ImageError.backingFile(path: path, name: name)
        }
        let clusterBits = be32(head, 20)
        guard (9...21).contains(clusterBits) else {
            throw ImageError.malformed(path: path, format: "qcow2", reason: "cluster_bits \(clusterBits) is outside 9...21")
        }
        if be32(head, 32) != 0 {
            throw ImageError.unsupportedFormat(
                path: path, format: "qcow2", reason: "it is encrypted (crypt_method \(be32(head, 32)))")
        }
        var headerLength = 72
        if version == 3 {
            guard head.count >= 104 else {
                throw ImageError.malformed(path: path, format: "qcow2", reason: "the version 3 header is truncated")
            }
            let incompatible = be64(head, 72)
            headerLength = Int(be32(head, 100))
            let dataFileName = extensionString(head, from: headerLength, type: 0x4441_5441)  // "DATA"
            if incompatible & (1 << 2) != 0 || dataFileName != nil {
                throw ImageError.externalDataFile(path: path, name: dataFileName)
            }
        }
        return 1 << Int(clusterBits)
    }

    /// The data of header extension `type`, as text, when present in the first bytes.
    private func extensionString(_ head: [UInt8], from start: Int, type wanted: UInt32) -> String? {
        var offset = start
        while offset + 8 <= head.count {
            let type = be32(head, offset)
            let length = Int(be32(head, offset + 4))
            if type == 0 { return nil }
            guard offset + 8 + length <= head.count else { return nil }
            if type == wanted { return String(decoding: head[(offset + 8)..<(offset + 8 + length)], as: UTF8.self) }
            offset += 8 + (length + 7) / 8 * 8
        }
        return nil
    }

    /// A sparse (KDMV) VMDK with an embedded descriptor: only monolithicSparse and streamOptimized,
    /// no parent, and at most one SPARSE extent that is the file itself.
    private func checkSparseVMDK(_ head: [UInt8]) throws {
        guard head.count >= 44 else { throw ImageError.malformed(path: path, format: "vmdk", reason: "the header is truncated") }
        let descriptorSector = le64(head, 28)
        let descriptorSectors = le64(head, 36)
        guard descriptorSector > 0, descriptorSectors > 0, descriptorSectors <= 2048 else {
            // streamOptimized images may carry no embedded descriptor only if they are single
            // files; without a descriptor there is nothing that could name another file.
            return
        }
        let bytes = try file.read(at: Int64(descriptorSector * 512), count: Int(descriptorSectors * 512))
        let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        var extents = 0
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("parentFileNameHint") {
                throw ImageError.backingFile(path: path, name: quoted(line) ?? line)
            }
            if line.hasPrefix("createType") {
                let kind = quoted(line) ?? ""
                guard kind == "monolithicSparse" || kind == "streamOptimized" else {
                    throw ImageError.unsafeVMDK(
                        path: path, reason: "createType '\(kind)' may name other files (only monolithicSparse and streamOptimized are accepted)")
                }
            }
            let words = line.split(separator: " ")
            if let access = words.first, ["RW", "RDONLY", "NOACCESS"].contains(String(access)) {
                extents += 1
                let kind = words.count > 2 ? String(words[2]) : ""
                guard kind == "SPARSE", extents == 1 else {
                    throw ImageError.unsafeVMDK(path: path, reason: "its descriptor names another extent: '\(line)'")
                }
                if let name = quoted(line), name.contains("/") {
                    throw ImageError.unsafeVMDK(path: path, reason: "its extent names the path '\(name)'")
                }
            }
        }
    }

    /// VHD footer: disk type 4 is a differencing disk, whose parent is another file.
    private func checkVHD(footer: [UInt8]) throws {
        guard footer.count >= 64 else { throw ImageError.malformed(path: path, format: "vhd", reason: "the footer is truncated") }
        let diskType = be32(footer, 60)
        if diskType == 4 { throw ImageError.backingFile(path: path, name: "(VHD differencing disk parent)") }
        guard diskType == 2 || diskType == 3 else {
            throw ImageError.malformed(path: path, format: "vhd", reason: "disk type \(diskType) is neither fixed (2) nor dynamic (3)")
        }
    }
}

private func quoted(_ line: String) -> String? {
    guard let start = line.firstIndex(of: "\""), let end = line[line.index(after: start)...].firstIndex(of: "\"") else {
        return nil
    }
    return String(line[line.index(after: start)..<end])
}

private func isWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d }

private func be32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    (0..<4).reduce(0) { $0 << 8 | UInt32(bytes[offset + $1]) }
}

private func be64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
}

private func le64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
    (0..<8).reversed().reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
}
