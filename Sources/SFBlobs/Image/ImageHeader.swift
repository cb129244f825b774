// The image header parsers, in plain Swift (no Foundation, no system calls): they read through an
// ``ImageByteSource``, so the same code runs over a file (``ImageFile``) and over bytes in memory,
// which is how `scripts/fuzz-image-headers` compiles them with libFuzzer and how the tests feed them
// mutated headers. Keep this file, ImageError.swift and nothing else in that script's source list.

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

/// Where an image's header bytes come from: the file, or bytes in memory.
protocol ImageByteSource {
    /// What errors call the image (its path).
    var path: String { get }
    /// The image's real size in bytes; every offset a header names is checked against it.
    var size: Int64 { get }
    /// Up to `count` bytes at `offset`: fewer at the end of the image, none past it.
    func read(at offset: Int64, count: Int) throws -> [UInt8]
}

/// An image held in memory (the fuzzer's and the tests' input).
struct InMemoryImage: ImageByteSource {
    let path: String
    let bytes: [UInt8]

    var size: Int64 { Int64(bytes.count) }

    func read(at offset: Int64, count: Int) throws -> [UInt8] {
        guard offset >= 0, count > 0, offset < size else { return [] }
        // offset < size = bytes.count, so it fits an Int; count is clamped to what is left.
        let start = Int(offset)
        return Array(bytes[start..<(start + min(count, bytes.count - start))])
    }
}

/// The header checks for one image.
///
/// Every number read from a header is a value the image's author chose. Each is converted with
/// checked arithmetic (`multipliedReportingOverflow`, `Int(exactly:)`) and bounded (against fixed
/// limits and against the image's real size) before it is used as an offset or a length, and an
/// out-of-range value is refused as ``ImageError/malformed(path:format:reason:)`` naming the field
/// and its value: no header can trap the process.
struct HeaderCheck<Source: ImageByteSource> {
    let source: Source
    let allowRaw: Bool
    var path: String { source.path }

    /// The bytes read up front: every magic number and fixed header sfnode checks is in them.
    static var headBytes: Int { 64 * 1024 }
    /// The largest embedded VMDK descriptor accepted, in 512-byte sectors (qemu-img and VMware write 20).
    static var maxVMDKDescriptorSectors: UInt64 { 2048 }

    func run() throws -> (format: ImageFormat, clusterSize: Int?) {
        let head = try source.read(at: 0, count: Self.headBytes)
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
        if head.count >= 0x8006, head[0x8001..<0x8006].elementsEqual("CD001".utf8) { return (.iso, nil) }
        // A fixed VHD has its footer only at the end.
        let tail = try source.read(at: max(0, source.size - 512), count: 512)
        if tail.count == 512, tail.starts(with: Array("conectix".utf8)) {
            try checkVHD(footer: tail)
            return (.vhd, nil)
        }
        if let first = head.first(where: { !isWhitespace($0) }), first == UInt8(ascii: "<") {
            // Never the page's own bytes: they are whatever a remote server chose to send, and this
            // message ends up in events every namespace's tools print.
            throw ImageError.notAnImage(
                path: path,
                reason: "it is an HTML or XML page, not a disk image (probably an error page served with status 200); check the URL")
        }
        guard allowRaw else { throw ImageError.rawNotAllowed(path: path) }
        return (.raw, nil)
    }

    /// qcow2 header (big-endian, docs/interop/qcow2.txt): refuses a backing file, an external data
    /// file and encryption; returns the cluster size.
    private func checkQcow2(_ head: [UInt8]) throws -> Int {
        guard head.count >= 72 else { throw malformed("qcow2", "the header is truncated (\(head.count) bytes, 72 needed)") }
        let version = be32(head, 4)
        guard version == 2 || version == 3 else { throw malformed("qcow2", "version \(version) is neither 2 nor 3") }
        let backingOffset = be64(head, 8)
        let backingSize = be32(head, 16)
        if backingOffset != 0 || backingSize != 0 {
            // Refused either way; the name is read only when it lies inside the file, to show it.
            var name = "(unreadable name)"
            if (1...1023).contains(backingSize), let offset = Int64(exactly: backingOffset), offset < source.size {
                name = String(decoding: try source.read(at: offset, count: Int(backingSize)), as: UTF8.self)
            }
            throw ImageError.backingFile(path: path, name: name)
        }
        let clusterBits = be32(head, 20)
        guard (9...21).contains(clusterBits) else { throw malformed("qcow2", "cluster_bits \(clusterBits) is outside 9...21") }
        let clusterSize = 1 << Int(clusterBits)
        let cryptMethod = be32(head, 32)
        if cryptMethod != 0 {
            throw ImageError.unsupportedFormat(path: path, format: "qcow2", reason: "it is encrypted (crypt_method \(cryptMethod))")
        }
        var headerLength = 72
        if version == 3 {
            guard head.count >= 104 else { throw malformed("qcow2", "the version 3 header is truncated (\(head.count) bytes, 104 needed)") }
            let length = be32(head, 100)
            // qemu's own bounds: the header is at least its version 3 fields and fits its first cluster.
            guard length >= 104, length <= clusterSize else {
                throw malformed("qcow2", "header_length \(length) is outside 104...\(clusterSize) (the cluster size)")
            }
            headerLength = Int(length)
        }
        // Header extensions run from the header's end to the end of the first cluster, where qemu
        // reads them, which can lie beyond the bytes read up front.
        let firstCluster = clusterSize > head.count ? try source.read(at: 0, count: clusterSize) : head
        let dataFileName = try extensionString(firstCluster, from: headerLength, type: 0x4441_5441)  // "DATA"
        // Incompatible feature bit 2 (version 3 only) says the data is elsewhere; the extension names where.
        if dataFileName != nil || (version == 3 && be64(head, 72) & (1 << 2) != 0) {
            throw ImageError.externalDataFile(path: path, name: dataFileName)
        }
        return clusterSize
    }

    /// The data of qcow2 header extension `type`, as text, when `bytes` (the first cluster) holds it.
    private func extensionString(_ bytes: [UInt8], from start: Int, type wanted: UInt32) throws -> String? {
        var offset = start
        // offset and length stay below 2^33 (a cluster is at most 2 MiB, a length at most 2^32 - 1):
        // no sum here can overflow an Int.
        while offset + 8 <= bytes.count {
            let type = be32(bytes, offset)
            let length = Int(be32(bytes, offset + 4))
            if type == 0 { return nil }
            guard offset + 8 + length <= bytes.count else {
                throw malformed("qcow2", "header extension 0x\(String(type, radix: 16)) at byte \(offset) is \(length) bytes long, past the first cluster")
            }
            if type == wanted { return String(decoding: bytes[(offset + 8)..<(offset + 8 + length)], as: UTF8.self) }
            offset += 8 + (length + 7) / 8 * 8
        }
        return nil
    }

    /// A sparse (KDMV) VMDK with an embedded descriptor: only monolithicSparse and streamOptimized,
    /// no parent, and at most one SPARSE extent that is the file itself. The fields are
    /// little-endian: capacity (sectors) at byte 12, the descriptor's sector at 28 and its length in
    /// sectors at 36 (qemu's VMDK4Header, after the magic).
    private func checkSparseVMDK(_ head: [UInt8]) throws {
        guard head.count >= 44 else { throw malformed("vmdk", "the header is truncated (\(head.count) bytes, 44 needed)") }
        let capacity = le64(head, 12)
        let descriptorSector = le64(head, 28)
        let descriptorSectors = le64(head, 36)
        // Without a descriptor there is nothing that could name another file.
        guard descriptorSector != 0 else { return }
        // qemu reads a sparse header of capacity 0 as a pointer to a descriptor *file*, follows
        // that descriptor's extents wherever they point (1 MiB of it, whatever the size field says),
        // and a bare extent name is then a sibling of the image: another blob in the store.
        guard capacity != 0 else {
            throw ImageError.unsafeVMDK(
                path: path, reason: "its capacity is 0, so qemu would follow the extents of its embedded descriptor as other files")
        }
        guard (1...Self.maxVMDKDescriptorSectors).contains(descriptorSectors) else {
            throw malformed("vmdk", "descriptor size \(descriptorSectors) sectors is outside 1...\(Self.maxVMDKDescriptorSectors)")
        }
        let (start, overflow) = descriptorSector.multipliedReportingOverflow(by: 512)
        let length = descriptorSectors * 512  // at most 1 MiB, by the check above
        guard !overflow, let offset = Int64(exactly: start), offset < source.size, length <= UInt64(source.size - offset) else {
            throw malformed(
                "vmdk", "descriptor at sector \(descriptorSector), \(descriptorSectors) sectors long, is not inside the file (\(source.size) bytes)")
        }
        let bytes = try source.read(at: offset, count: Int(length))
        let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        var extents = 0
        for rawLine in text.split(whereSeparator: \.isNewline) {
            // qemu reads descriptor lines with sscanf: any run of blanks separates words.
            let words = rawLine.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\u{0B}" || $0 == "\u{0C}" })
            guard let first = words.first, !first.hasPrefix("#") else { continue }
            let line = words.joined(separator: " ")
            if first.hasPrefix("parentFileNameHint") {
                throw ImageError.backingFile(path: path, name: quoted(line) ?? line)
            }
            if first.hasPrefix("createType") {
                let kind = quoted(line) ?? ""
                guard kind == "monolithicSparse" || kind == "streamOptimized" else {
                    throw ImageError.unsafeVMDK(
                        path: path, reason: "createType '\(kind)' may name other files (only monolithicSparse and streamOptimized are accepted)")
                }
            }
            if ["RW", "RDONLY", "NOACCESS"].contains(first) {
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
        guard footer.count >= 64 else { throw malformed("vhd", "the footer is truncated (\(footer.count) bytes, 64 needed)") }
        let diskType = be32(footer, 60)
        if diskType == 4 { throw ImageError.backingFile(path: path, name: "(VHD differencing disk parent)") }
        guard diskType == 2 || diskType == 3 else {
            throw malformed("vhd", "disk type \(diskType) is neither fixed (2) nor dynamic (3)")
        }
    }

    private func malformed(_ format: String, _ reason: String) -> ImageError {
        ImageError.malformed(path: path, format: format, reason: reason)
    }
}

private func quoted(_ line: String) -> String? {
    guard let start = line.firstIndex(of: "\""), let end = line[line.index(after: start)...].firstIndex(of: "\"") else {
        return nil
    }
    return String(line[line.index(after: start)..<end])
}

private func isWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d }

// The callers check `bytes.count` against the field's end before reading it.

private func be32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    (0..<4).reduce(0) { $0 << 8 | UInt32(bytes[offset + $1]) }
}

private func be64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
}

private func le64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
    (0..<8).reversed().reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
}
