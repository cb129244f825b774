import Foundation
import Logging
@testable import SFBlobs
import SFStore
import SFSystem
import Testing

/// The image header parsers against hostile headers: real images made now with qemu-img, xorriso
/// and gzip, thousands of seeded mutations of them, and the headers that once crashed the agent.
/// A trap would kill this test process, so every case passing is the proof that none trapped; each
/// also checks what the answer was. (The coverage-guided run of the same parsers is
/// `scripts/fuzz-image-headers`, in `scripts/test`.)
@Suite struct ImageHeaderFuzzTests {
    /// One real image's header: its file's first 64 KiB (all of it up to 128 KiB, so a fixed VHD keeps its footer).
    struct Seed {
        let name: String
        let bytes: [UInt8]
        /// What the header check must say about it: a format, or nil for a refusal.
        let expected: ImageFormat?
    }

    static func run(_ arguments: [String]) throws {
        let result = try ChildProcess.run(arguments)
        guard result.status == 0 else { throw TestFailure("\(arguments.joined(separator: " ")): \(result.stderr)") }
    }

    static func header(_ path: String) throws -> [UInt8] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return Array(data.count > 131_072 ? data.prefix(65536) : data)
    }

    /// The corpus, made in `directory`.
    static func realHeaders(in directory: String) throws -> [Seed] {
        let made: [(String, [String], ImageFormat?)] = [
            ("v3.qcow2", ["-f", "qcow2"], .qcow2),
            ("v2.qcow2", ["-f", "qcow2", "-o", "compat=0.10"], .qcow2),
            ("small-clusters.qcow2", ["-f", "qcow2", "-o", "cluster_size=512"], .qcow2),
            ("big-clusters.qcow2", ["-f", "qcow2", "-o", "cluster_size=2M"], .qcow2),
            ("backing.qcow2", ["-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw"], nil),
            ("data-file.qcow2", ["-f", "qcow2", "-o", "data_file=\(directory)/data.raw"], nil),
            ("sparse.vmdk", ["-f", "vmdk"], .vmdk),
            ("stream.vmdk", ["-f", "vmdk", "-o", "subformat=streamOptimized"], .vmdk),
            ("dynamic.vhd", ["-f", "vpc"], .vhd),
            ("disk.vhdx", ["-f", "vhdx"], nil),
        ]
        var seeds: [Seed] = []
        for (name, options, expected) in made {
            try run(["/usr/bin/qemu-img", "create", "-q"] + options + ["\(directory)/\(name)", "16M"])
            seeds.append(Seed(name: name, bytes: try header("\(directory)/\(name)"), expected: expected))
        }
        try run(["/usr/bin/qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", "\(directory)/fixed.vhd", "64K"])
        seeds.append(Seed(name: "fixed.vhd", bytes: try header("\(directory)/fixed.vhd"), expected: .vhd))
        try FileManager.default.createDirectory(atPath: "\(directory)/iso-root", withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: "\(directory)/iso-root/hello.txt"))
        try run(["/usr/bin/xorriso", "-as", "mkisofs", "-quiet", "-o", "\(directory)/disk.iso", "\(directory)/iso-root"])
        seeds.append(Seed(name: "disk.iso", bytes: try header("\(directory)/disk.iso"), expected: .iso))
        var random = SplitMix64(seed: 7)
        try Data((0..<100_000).map { _ in UInt8(truncatingIfNeeded: random.next()) }).write(to: URL(fileURLWithPath: "\(directory)/blob"))
        try run(["/usr/bin/gzip", "-k", "\(directory)/blob"])
        seeds.append(Seed(name: "blob.gz", bytes: try header("\(directory)/blob.gz"), expected: .gzip))
        seeds.append(Seed(name: "page.html", bytes: Array("\n<!DOCTYPE html><html><body>nothing</body></html>".utf8), expected: nil))
        return seeds
    }

    /// The header check's answer, or the error it threw; anything but an ImageError is recorded as
    /// a failure, since callers could not turn it into a clear job error.
    static func check(_ bytes: [UInt8], allowRaw: Bool = true) -> Result<ImageFormat, ImageError> {
        do {
            return .success(try ImageInspector.detect(bytes: bytes, name: "/fuzz/input", allowRaw: allowRaw).format)
        } catch let error as ImageError {
            _ = error.description
            return .failure(error)
        } catch {
            Issue.record("the header check threw \(type(of: error)), not an ImageError: \(error)")
            return .failure(.unreadable(path: "", message: ""))
        }
    }

    @Test("real headers made by qemu-img, xorriso and gzip are told apart, and the unsafe ones refused")
    func realHeadersAreRecognised() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for seed in try Self.realHeaders(in: directory) {
            switch Self.check(seed.bytes) {
            case .success(let format): #expect(format == seed.expected, "\(seed.name) was taken for \(format)")
            case .failure(let error): #expect(seed.expected == nil, "\(seed.name) was refused: \(error)")
            }
        }
    }

    @Test("20,000 seeded mutations of real headers: each is a format or an ImageError, never a trap")
    func mutationsNeverTrap() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let seeds = try Self.realHeaders(in: directory)
        // Fixed seed: a failure names its iteration and can be replayed.
        var random = SplitMix64(seed: 0x5F_4E0D_E000_0013)
        var accepted = 0
        var refused = 0
        let perSeed = 20_000 / seeds.count
        for seed in seeds {
            for _ in 0..<perSeed {
                var bytes = seed.bytes
                for _ in 0...random.below(3) { Self.mutate(&bytes, &random) }
                switch Self.check(bytes, allowRaw: random.below(2) == 0) {
                case .success: accepted += 1
                case .failure: refused += 1
                }
            }
        }
        // Both answers came up: the mutations reached past the magic numbers into the fields.
        #expect(accepted > 1000 && refused > 1000, "accepted \(accepted), refused \(refused)")
    }

    /// Offsets of the fields the parsers read (qcow2, VMDK and VHD headers), where hostile values
    /// matter most.
    static let fieldOffsets = [4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 56, 60, 64, 72, 80, 96, 100, 104, 108, 112]
    /// Values at the edges of what the fields' types hold and of the checks.
    static let hostileValues: [UInt64] = [
        0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 511, 512, 1023, 1024, 2047, 2048, 2049, 1 << 20, 1 << 31, (1 << 32) - 1, 1 << 32,
        1 << 54, (1 << 55) - 1, 1 << 63, UInt64.max, UInt64.max - 511, UInt64(Int64.max), UInt64(Int64.max) / 512 + 1,
    ]

    static func mutate(_ bytes: inout [UInt8], _ random: inout SplitMix64) {
        guard !bytes.isEmpty else {
            bytes = [UInt8(truncatingIfNeeded: random.next())]
            return
        }
        switch random.below(7) {
        case 0:  // one bit
            let index = random.below(bytes.count)
            bytes[index] ^= 1 << UInt8(random.below(8))
        case 1, 2:  // a hostile 64- or 32-bit value, big- or little-endian, at a header field
            let value = hostileValues[random.below(hostileValues.count)]
            let width = random.below(2) == 0 ? 8 : 4
            let offset = random.below(3) == 0 ? random.below(bytes.count) : fieldOffsets[random.below(fieldOffsets.count)]
            let bigEndian = random.below(2) == 0
            for index in 0..<width where offset + index < bytes.count {
                let shift = UInt64(bigEndian ? (width - 1 - index) * 8 : index * 8)
                bytes[offset + index] = UInt8(truncatingIfNeeded: value >> shift)
            }
        case 3:  // cut short
            bytes.removeLast(random.below(bytes.count))
        case 4:  // a run of one byte
            let start = random.below(bytes.count)
            let length = min(random.below(64) + 1, bytes.count - start)
            let byte: UInt8 = [0, 0xFF, 0x20, 0x0A, 0x22][random.below(5)]
            bytes.replaceSubrange(start..<(start + length), with: repeatElement(byte, count: length))
        case 5:  // descriptor text in a VMDK's descriptor area, or anywhere
            let lines = [
                "RW 100 FLAT \"/etc/shadow\" 0\n", "RW\t100\tSPARSE\t\"other.vmdk\"\n", "createType=\"vmfs\"\n",
                "parentFileNameHint=\"/x\"\n", "RDONLY 1 SPARSE \"a\"\nRW 1 SPARSE \"b\"\n", "\"\"\"\n", "#\n",
            ]
            let text = Array(lines[random.below(lines.count)].utf8)
            let offset = random.below(2) == 0 ? 512 + random.below(512) : random.below(bytes.count)
            for (index, byte) in text.enumerated() where offset + index < bytes.count { bytes[offset + index] = byte }
        default:  // random bytes
            for _ in 0...random.below(8) { bytes[random.below(bytes.count)] = UInt8(truncatingIfNeeded: random.next()) }
        }
    }

    // MARK: The headers that crashed the agent, and their neighbours

    /// A sparse VMDK header (little-endian fields) with a descriptor at `descriptorSector`.
    static func vmdkHeader(capacity: UInt64 = 2048, descriptorSector: UInt64, descriptorSectors: UInt64 = 20, length: Int = 512) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        func put(_ value: UInt64, at offset: Int) { for index in 0..<8 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) } }
        bytes.replaceSubrange(0..<4, with: Array("KDMV".utf8))
        bytes[4] = 1
        put(capacity, at: 12)
        put(128, at: 20)
        put(descriptorSector, at: 28)
        put(descriptorSectors, at: 36)
        return bytes
    }

    @Test("a VMDK naming its descriptor at sector 2^54 (the crash of issue 13) is refused naming the sector")
    func vmdkDescriptorBeyondTheFile() async throws {
        for sector: UInt64 in [1 << 54, UInt64.max, UInt64(Int64.max) / 512 + 1, 2] {
            guard case .failure(.malformed(_, "vmdk", let reason)) = Self.check(Self.vmdkHeader(descriptorSector: sector)) else {
                Issue.record("descriptor at sector \(sector) was not refused as malformed")
                continue
            }
            #expect(reason.contains("sector \(sector)") && reason.contains("not inside the file (512 bytes)"), "\(reason)")
        }
        guard case .failure(.malformed(_, _, let reason)) = Self.check(Self.vmdkHeader(descriptorSector: 1, descriptorSectors: 1 << 60)) else {
            Issue.record("a descriptor of 2^60 sectors was not refused")
            return
        }
        #expect(reason.contains("descriptor size 1152921504606846976 sectors is outside 1...2048"))
        // The same header as a file, the way an upload reaches the image cache and a fetch the inspector.
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/crash.vmdk"
        try Data(Self.vmdkHeader(descriptorSector: 1 << 54)).write(to: URL(fileURLWithPath: path))
        #expect(throws: ImageError.self) { _ = try ImageInspector.detect(path) }
        await #expect(throws: ImageError.self) { _ = try await ImageInspector(logger: Logger(label: "sfnode.test")).inspect(path) }
    }

    @Test("a VMDK of capacity 0 with an embedded descriptor is refused: qemu would read that descriptor's extents as files")
    func vmdkCapacityZeroIsRefused() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/evil.vmdk"
        try Self.run(["/usr/bin/qemu-img", "create", "-q", "-f", "vmdk", path, "1M"])
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes.replaceSubrange(12..<20, with: repeatElement(0, count: 8))  // capacity 0
        // An extent name without '/' is a sibling: another blob in the store, by UUID.
        let descriptor = Array("# Disk DescriptorFile\nversion=1\n#createType=\"twoGbMaxExtentSparse\"\nRW 2048 SPARSE \"victim.vmdk\"\n".utf8)
        bytes.replaceSubrange(512..<(512 + 20 * 512), with: descriptor + [UInt8](repeating: 0, count: 20 * 512 - descriptor.count))
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: ImageError.unsafeVMDK(path: path, reason: "its capacity is 0, so qemu would follow the extents of its embedded descriptor as other files")) {
            _ = try ImageInspector.detect(path)
        }
        // The header of the same image with its real capacity passes.
        bytes.replaceSubrange(12..<20, with: [0, 8, 0, 0, 0, 0, 0, 0])
        #expect(throws: Never.self) { _ = try ImageInspector.detect(bytes: bytes) }
    }

    @Test("qemu-img info naming an extent in another file is refused, whatever the header check said")
    func qemuInfoExtentsMustBeTheImage() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: directory + "/victim.raw"))
        let path = directory + "/flat.vmdk"
        let descriptor = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"victim.raw\" 0\n"
        try Data(descriptor.utf8).write(to: URL(fileURLWithPath: path))
        #expect {
            _ = try ImageInspector.qemuInfoChecked(path, format: .vmdk, qemuImg: "/usr/bin/qemu-img")
        } throws: { error in
            guard case .unsafeVMDK(_, let reason) = error as? ImageError else { return false }
            return reason == "qemu-img reads its extent from another file, '\(directory)/victim.raw'"
        }
        // A real sparse VMDK's one extent is the image itself.
        try Self.run(["/usr/bin/qemu-img", "create", "-q", "-f", "vmdk", directory + "/real.vmdk", "1M"])
        _ = try ImageInspector.qemuInfoChecked(directory + "/real.vmdk", format: .vmdk, qemuImg: "/usr/bin/qemu-img")
    }

    @Test("a descriptor's extent line separated by tabs is read as qemu's sscanf reads it")
    func vmdkExtentWithTabs() throws {
        var bytes = Self.vmdkHeader(descriptorSector: 1, descriptorSectors: 1, length: 1024)
        let text = Array("createType=\"monolithicSparse\"\n\tRW\t100\tFLAT\t\"/etc/shadow\"\t0\n".utf8)
        bytes.replaceSubrange(512..<(512 + text.count), with: text)
        guard case .failure(.unsafeVMDK(_, let reason)) = Self.check(bytes) else {
            Issue.record("a tab-separated FLAT extent was not refused")
            return
        }
        #expect(reason.contains("names another extent"))
    }

    @Test("qcow2 header_length and extension lengths out of range are refused naming the field")
    func qcow2FieldsOutOfRange() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.run(["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", directory + "/a.qcow2", "1M"])
        let real = try Self.header(directory + "/a.qcow2")
        var long = real
        long.replaceSubrange(100..<104, with: [0xFF, 0xFF, 0xFF, 0xFF])
        guard case .failure(.malformed(_, "qcow2", let reason)) = Self.check(long) else {
            Issue.record("header_length 2^32 - 1 was not refused")
            return
        }
        #expect(reason == "header_length 4294967295 is outside 104...65536 (the cluster size)")
        var extensionPastCluster = real
        let headerLength = Int(real[103])  // 112 for qemu-img's version 3 headers
        extensionPastCluster.replaceSubrange(headerLength..<(headerLength + 8), with: [0x12, 0x34, 0x56, 0x78, 0xFF, 0xFF, 0xFF, 0xF0])
        guard case .failure(.malformed(_, "qcow2", let extensionReason)) = Self.check(extensionPastCluster) else {
            Issue.record("an extension of 4 GiB was not refused")
            return
        }
        #expect(extensionReason.contains("header extension 0x12345678") && extensionReason.contains("4294967280 bytes long"))
        var backingFar = real
        backingFar.replaceSubrange(8..<16, with: repeatElement(0xFF, count: 8))
        #expect(Self.check(backingFar) == .failure(.backingFile(path: "/fuzz/input", name: "(unreadable name)")))
    }

    @Test("an HTML page is refused without a byte of it in the message")
    func htmlIsNotEchoed() {
        let page = Array("<html><head><title>secret-token-4242</title></head>\u{1B}[31m</html>".utf8)
        guard case .failure(let error) = Self.check(page) else {
            Issue.record("an HTML page was accepted")
            return
        }
        #expect(error.description.contains("HTML"))
        #expect(!error.description.contains("secret-token") && !error.description.contains("\u{1B}"), "\(error)")
    }

    @Test("qemu-img info sizes that are not whole Int64s are refused, never converted with a trap")
    func qemuInfoSizes() throws {
        let hostile: [JSONValue] = [1e300, -1e300, 9.223372036854775807e18, 1.8446744073709552e19, -1, 1.5, "12", nil, .array([])]
        for value in hostile {
            #expect(throws: ImageError.self, "virtual-size \(value)") {
                _ = try ImageInspector.qemuInfoSize(["virtual-size": value], "virtual-size", path: "/x")
            }
        }
        #expect(throws: ImageError.malformed(path: "/x", format: "qemu-img info", reason: "virtual-size 1e+300 is not a size in bytes from 0 to 2^63 - 1")) {
            _ = try ImageInspector.qemuInfoSize(["virtual-size": 1e300], "virtual-size", path: "/x")
        }
        #expect(try ImageInspector.qemuInfoSize(["virtual-size": 1_048_576], "virtual-size", path: "/x") == 1_048_576)
        #expect(try ImageInspector.qemuInfoSize(["virtual-size": 9.2233720368547748e18], "virtual-size", path: "/x") == 9_223_372_036_854_774_784)
    }
}

/// Sebastiano Vigna's SplitMix64: a small, fixed-seed generator, so a failing mutation can be replayed.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in 0..<bound (bound > 0).
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
