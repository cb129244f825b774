import Foundation
import Logging
import SFBlobs
import SFStore
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Image inspection, unpacking, the cache and overlays, on small real images made with qemu-img.
@Suite struct ImageTests {
    let logger = Logger(label: "sfnode.test.image")

    func qemuImg(_ arguments: [String]) throws {
        let result = try ChildProcess.run(["/usr/bin/qemu-img"] + arguments)
        guard result.status == 0 else { throw TestFailure("qemu-img \(arguments): \(result.stderr)") }
    }

    func qemuInfo(_ path: String, format: String = "qcow2") throws -> [String: JSONValue] {
        let result = try ChildProcess.run(["/usr/bin/qemu-img", "info", "--output=json", "-f", format, path])
        guard result.status == 0, case .object(let info) = try JSONValue.parse(result.stdout) else {
            throw TestFailure("qemu-img info \(path): \(result.stderr)")
        }
        return info
    }

    /// A raw image of `megabytes` MiB with a recognisable, non-zero pattern.
    func makeRaw(_ path: String, megabytes: Int = 4) throws {
        var data = Data(count: megabytes << 20)
        for index in stride(from: 0, to: data.count, by: 4096) { data[index] = UInt8(truncatingIfNeeded: index >> 12) | 1 }
        try data.write(to: URL(fileURLWithPath: path))
    }

    func inode(_ path: String) -> UInt {
        var info = stat()
        return stat(path, &info) == 0 ? UInt(info.st_ino) : 0
    }

    func sameContent(_ raw: String, _ qcow2: String) throws -> Bool {
        try ChildProcess.run(["/usr/bin/qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", raw, qcow2]).status == 0
    }

    // MARK: Inspection

    @Test func inspectorTellsFormatsApartFromTheirHeaders() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let inspector = ImageInspector(logger: logger)

        try qemuImg(["create", "-q", "-f", "qcow2", directory + "/a.qcow2", "64M"])
        let qcow2 = try await inspector.inspect(directory + "/a.qcow2")
        #expect(qcow2.format == .qcow2)
        #expect(qcow2.virtualSize == 64 << 20)
        #expect(qcow2.clusterSize == 65536)
        #expect(qcow2.qemuInfo["format"] == "qcow2")

        try makeRaw(directory + "/a.raw", megabytes: 1)
        let raw = try await inspector.inspect(directory + "/a.raw")
        #expect(raw.format == .raw && raw.virtualSize == 1 << 20 && raw.clusterSize == nil)
        await #expect(throws: ImageError.rawNotAllowed(path: directory + "/a.raw")) {
            _ = try await inspector.inspect(directory + "/a.raw", allowRaw: false)
        }

        var iso = Data(count: 0x9000)
        iso.replaceSubrange(0x8001..<0x8006, with: Array("CD001".utf8))
        try iso.write(to: URL(fileURLWithPath: directory + "/a.iso"))
        let isoInfo = try await inspector.inspect(directory + "/a.iso")
        #expect(isoInfo.format == .iso && isoInfo.mimeType == "application/x-iso9660-image")

        try Data([0x1f, 0x8b, 8, 0]).write(to: URL(fileURLWithPath: directory + "/a.gz"))
        #expect(try await inspector.inspect(directory + "/a.gz").format == .gzip)

        try Data("\n<!DOCTYPE html><html><body>Not here</body></html>".utf8).write(to: URL(fileURLWithPath: directory + "/e.html"))
        await #expect {
            _ = try await inspector.inspect(directory + "/e.html")
        } throws: { error in
            guard case .notAnImage(_, let reason) = error as? ImageError else { return false }
            return reason.contains("HTML")
        }

        try Data("# Disk DescriptorFile\nRW 100 FLAT \"/etc/shadow\" 0\n".utf8).write(to: URL(fileURLWithPath: directory + "/d.vmdk"))
        await #expect {
            _ = try await inspector.inspect(directory + "/d.vmdk")
        } throws: { error in
            guard case .unsafeVMDK = error as? ImageError else { return false }
            return true
        }
    }

    @Test func backingFileIsRefusedByName() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/x.qcow2"
        // -u: qemu-img does not open the backing file; the header names it all the same.
        try qemuImg(["create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", path, "1M"])
        await #expect(throws: ImageError.backingFile(path: path, name: "/etc/shadow")) {
            _ = try await ImageInspector(logger: logger).inspect(path)
        }
        #expect(ImageError.backingFile(path: path, name: "/etc/shadow").description.contains("/etc/shadow"))
        let cache = ImageCache(directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger)
        await #expect(throws: ImageError.backingFile(path: path, name: "/etc/shadow")) {
            _ = try await cache.ensureBase(blobUUID: UUID(), dataPath: path, for: .disk)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/cache").allSatisfy { $0.hasSuffix(".lock") })
    }

    @Test func externalDataFileIsRefused() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/d.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "data_file=\(directory)/d.data", path, "1M"])
        await #expect {
            _ = try await ImageInspector(logger: logger).inspect(path)
        } throws: { error in
            guard case .externalDataFile(path, let name) = error as? ImageError else { return false }
            return name?.hasSuffix("d.data") == true
        }
    }

    // MARK: Gunzip

    @Test func truncatedGzipFailsWithZlibsWords() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try makeRaw(directory + "/a.raw", megabytes: 2)
        _ = try ChildProcess.run(["/usr/bin/gzip", "-k", directory + "/a.raw"])
        let whole = try Data(contentsOf: URL(fileURLWithPath: directory + "/a.raw.gz"))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: directory + "/cut.gz"))
        #expect(throws: ImageError.gunzip(path: directory + "/cut.gz", message: "unexpected end of file (the download is truncated)")) {
            try Gunzip.unpack(directory + "/cut.gz", to: directory + "/out")
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/out"))
        #expect(try Gunzip.unpack(directory + "/a.raw.gz", to: directory + "/out") == 2 << 20)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/out")) == Data(contentsOf: URL(fileURLWithPath: directory + "/a.raw")))
    }

    // MARK: The cache

    @Test func gzipIsUnpackedAndConverted() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try makeRaw(directory + "/a.raw")
        _ = try ChildProcess.run(["/usr/bin/gzip", "-k", directory + "/a.raw"])
        let cache = ImageCache(directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger)
        let blob = UUID()
        let base = try await cache.ensureBase(blobUUID: blob, dataPath: directory + "/a.raw.gz", for: .disk)
        #expect(base.format == .qcow2 && base.path == cache.path(for: blob, purpose: .disk))
        #expect(try qemuInfo(base.path)["cluster-size"] == 2_097_152)
        #expect(try sameContent(directory + "/a.raw", base.path))
        #expect(await cache.conversions == 1)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory + "/cache").filter { $0.contains("partial") }
        #expect(leftovers.isEmpty)
    }

    @Test func rawIsConvertedToTwoMebibyteClusters() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try makeRaw(directory + "/a.raw")
        let cache = ImageCache(directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger)
        let base = try await cache.ensureBase(blobUUID: UUID(), dataPath: directory + "/a.raw", for: .disk)
        let info = try qemuInfo(base.path)
        #expect(info["cluster-size"] == 2_097_152)
        #expect(info["virtual-size"] == 4_194_304)
        #expect(info["backing-filename"] == nil)
        #expect(try sameContent(directory + "/a.raw", base.path))
        #expect(await cache.conversions == 1)
        #expect(await cache.links == 0)
    }

    @Test func qcow2WithTwoMebibyteClustersIsLinked() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", directory + "/a.qcow2", "8M"])
        let cache = ImageCache(directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger)
        let base = try await cache.ensureBase(blobUUID: UUID(), dataPath: directory + "/a.qcow2", for: .disk)
        #expect(inode(base.path) == inode(directory + "/a.qcow2"))
        #expect(await cache.links == 1)
        #expect(await cache.conversions == 0)

        var iso = Data(count: 0x9000)
        iso.replaceSubrange(0x8001..<0x8006, with: Array("CD001".utf8))
        try iso.write(to: URL(fileURLWithPath: directory + "/a.iso"))
        let cdrom = try await cache.ensureBase(blobUUID: UUID(), dataPath: directory + "/a.iso", for: .cdrom)
        #expect(cdrom.format == .iso && cdrom.path.hasSuffix(".iso") && inode(cdrom.path) == inode(directory + "/a.iso"))
        await #expect {
            _ = try await cache.ensureBase(blobUUID: UUID(), dataPath: directory + "/a.qcow2", for: .cdrom)
        } throws: { error in
            guard case .unsupportedFormat = error as? ImageError else { return false }
            return true
        }
    }

    @Test func concurrentRequestsForOneBlobConvertOnce() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try makeRaw(directory + "/a.raw", megabytes: 16)
        let cache = ImageCache(directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger)
        let blob = UUID()
        async let first = cache.ensureBase(blobUUID: blob, dataPath: directory + "/a.raw", for: .disk)
        async let second = cache.ensureBase(blobUUID: blob, dataPath: directory + "/a.raw", for: .disk)
        let (one, two) = try await (first, second)
        #expect(one == two)
        #expect(await cache.conversions == 1)

        // Another process (another cache on the same directory) takes the lock, finds the base and
        // converts nothing.
        let other = ImageCache(directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger)
        #expect(try await other.ensureBase(blobUUID: blob, dataPath: directory + "/a.raw", for: .disk) == one)
        #expect(await other.conversions == 0)
    }

    @Test func evictionKeepsWhatIsInUseAndRemovesTheOldestFirst() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try makeRaw(directory + "/a.raw")
        let cacheDirectory = directory + "/cache"
        let builder = ImageCache(directory: cacheDirectory, highWaterBytes: 1 << 40, logger: logger)
        let blobs = [UUID(), UUID(), UUID()]
        for blob in blobs { _ = try await builder.ensureBase(blobUUID: blob, dataPath: directory + "/a.raw", for: .disk) }
        // Used in the order 0, 1, 2: blob 0 is the oldest, and in use.
        for blob in blobs {
            await builder.markUsed(blob)
            try await Task.sleep(for: .milliseconds(20))
        }
        let total = try await builder.totalBytes()
        #expect(try await builder.evict(inUse: []) == [])

        let tight = ImageCache(directory: cacheDirectory, highWaterBytes: total - 1, logger: logger)
        #expect(try await tight.evict(inUse: [blobs[0]]) == [blobs[1]])
        let empty = ImageCache(directory: cacheDirectory, highWaterBytes: 0, logger: logger)
        #expect(try await empty.evict(inUse: [blobs[0]]) == [blobs[2]])
        #expect(FileManager.default.fileExists(atPath: empty.path(for: blobs[0], purpose: .disk)))
        #expect(try await empty.evict(inUse: [blobs[0]]) == [])
    }

    // MARK: Overlays

    @Test func overlaySmallerThanItsBaseIsRefused() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let base = directory + "/base.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", base, "2G"])
        let disk = directory + "/disk"
        await #expect(throws: ImageError.overlayTooSmall(path: disk, requestedGiB: 1, baseVirtualSize: 2 << 30)) {
            try await createOverlay(base: base, baseFormat: .qcow2, at: disk, sizeGiB: 1)
        }
        #expect(ImageError.overlayTooSmall(path: disk, requestedGiB: 1, baseVirtualSize: 2 << 30).description.contains("at least 2 GiB"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["base.qcow2"])

        try await createOverlay(base: base, baseFormat: .qcow2, at: disk, sizeGiB: 3)
        let info = try qemuInfo(disk)
        #expect(info["backing-filename"] == .string(base))
        #expect(info["virtual-size"] == .number(Double(3 << 30)))
        try await createOverlay(base: base, baseFormat: .qcow2, at: directory + "/same", sizeGiB: nil)
        #expect(try qemuInfo(directory + "/same")["virtual-size"] == .number(Double(2 << 30)))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
