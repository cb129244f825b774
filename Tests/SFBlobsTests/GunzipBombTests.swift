import Foundation
import Logging
import SFBlobs
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Decompression bombs and sparse output: gunzip stops at the image size limit and leaves nothing
/// behind, and zeros cost no disk space. Also the qemu-img time limit, through the image cache.
@Suite struct GunzipBombTests {
    let logger = Logger(label: "sfnode.test.gunzip")

    /// Runs a shell pipeline (gzip and head are the tools that make test data here).
    func shell(_ script: String) throws {
        let result = try ChildProcess.run(["/bin/sh", "-c", script])
        guard result.status == 0 else { throw TestFailure("\(script): \(result.stderr)") }
    }

    /// About 10 MiB of gzip that expands to 10 GiB: one member of 64 MiB of zeros, repeated (gzip
    /// members concatenate, and Gunzip reads them all, as gzip(1) does).
    func makeBomb(_ path: String, directory: String) throws {
        try shell("head -c 67108864 /dev/zero | gzip -9 > \(directory)/member.gz")
        try shell("for i in $(seq 160); do cat \(directory)/member.gz; done > \(path)")
    }

    func allocatedBytes(_ path: String) -> Int64 {
        var info = stat()
        guard stat(path, &info) == 0 else { return -1 }
        return Int64(info.st_blocks) * 512
    }

    @Test func aGzipBombStopsAtTheCapAndLeavesNoFile() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try makeBomb(directory + "/bomb.gz", directory: directory)
        #expect(allocatedBytes(directory + "/bomb.gz") < 20 << 20)
        #expect(throws: ImageError.imageTooLarge(path: directory + "/bomb.gz", operation: "gunzip", limit: 256 << 20)) {
            try Gunzip.unpack(directory + "/bomb.gz", to: directory + "/out", limit: 256 << 20)
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/out"))
        let message = ImageError.imageTooLarge(path: "p", operation: "gunzip", limit: 256 << 20).description
        #expect(message.contains("SFNODE_IMAGE_MAX_GIB") && message.contains("\(256 << 20) bytes"))
    }

    @Test func theImageCacheRefusesABombWithTheCapsErrorAndKeepsNoPartial() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try makeBomb(directory + "/bomb.gz", directory: directory)
        let cache = ImageCache(
            directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger, limits: ImageLimits(maxImageBytes: 128 << 20))
        let blob = UUID()
        await #expect(throws: ImageError.imageTooLarge(path: directory + "/bomb.gz", operation: "gunzip", limit: 128 << 20)) {
            _ = try await cache.ensureBase(blobUUID: blob, dataPath: directory + "/bomb.gz", for: .disk)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: directory + "/cache").filter { !$0.hasSuffix(".lock") }
        #expect(left.isEmpty)
    }

    @Test func zerosBecomeHolesAndTheContentIsExact() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // 64 MiB of zeros, 5 bytes of data, 3 bytes of zeros, then 64 MiB of zeros: the data lands
        // mid-block, and the file ends in a hole.
        try shell(
            "(head -c 67108864 /dev/zero; printf hello; head -c 3 /dev/zero; head -c 67108864 /dev/zero) | gzip -1 > \(directory)/s.gz")
        let length = try Gunzip.unpack(directory + "/s.gz", to: directory + "/out", limit: 1 << 30)
        #expect(length == 2 * 67_108_864 + 8)
        var info = stat()
        #expect(stat(directory + "/out", &info) == 0 && Int64(info.st_size) == length)
        // Two 4 KiB blocks hold data at most (the one with "hello" and, on some file systems, its
        // neighbour); 128 MiB of zeros take nothing.
        #expect(allocatedBytes(directory + "/out") <= 64 << 10)
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: directory + "/out"))
        defer { try? handle.close() }
        try handle.seek(toOffset: 67_108_864 - 2)
        #expect(try handle.read(upToCount: 11) == Data([0, 0] + Array("hello".utf8) + [0, 0, 0, 0]))
        // Byte for byte what gzip itself writes.
        try shell("gzip -dc \(directory)/s.gz | cmp - \(directory)/out")
    }

    @Test func anImageWithinTheCapUnpacksWhole() throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try shell("head -c 3000000 /dev/urandom > \(directory)/r && gzip -k \(directory)/r")
        #expect(try Gunzip.unpack(directory + "/r.gz", to: directory + "/out", limit: 3_000_000) == 3_000_000)
        try shell("cmp \(directory)/r \(directory)/out")
        #expect(throws: ImageError.imageTooLarge(path: directory + "/r.gz", operation: "gunzip", limit: 2_999_999)) {
            try Gunzip.unpack(directory + "/r.gz", to: directory + "/out2", limit: 2_999_999)
        }
    }

    @Test func aHangingQemuImgIsKilledAtItsLimit() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // A qemu-img that never answers, as a crafted image can make the real one.
        let fake = directory + "/qemu-img"
        try "#!/bin/sh\nexec /bin/sleep 600\n".write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        try shell("head -c 1048576 /dev/urandom > \(directory)/disk.raw")
        let cache = ImageCache(
            directory: directory + "/cache", highWaterBytes: 1 << 30, logger: logger, qemuImg: fake,
            limits: ImageLimits(qemuImgTimeLimit: .seconds(1)))
        await #expect(throws: ImageError.qemuImgTimedOut(operation: "info", path: directory + "/disk.raw", seconds: 1)) {
            _ = try await cache.ensureBase(blobUUID: UUID(), dataPath: directory + "/disk.raw", for: .disk)
        }
        #expect(ImageError.qemuImgTimedOut(operation: "convert", path: "p", seconds: 1).description.contains("SFNODE_QEMU_IMG_TIMEOUT_SECONDS"))
    }
}
