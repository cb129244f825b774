import Foundation
import Logging
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// The node's image cache, `<storage>/image-cache`: one base image per blob, ready for instance
/// disks to be overlays on (`<blob>.qcow2`, qcow2 with 2 MiB clusters) or to be attached as a
/// CD-ROM (`<blob>.iso`).
///
/// Races (Shaken Fist #1311 and #1877, Incus/LXD's same-image fetch races): concurrent requests for
/// one blob in this process share one in-flight task; other processes are kept out by an `flock` on
/// `<blob>.lock`, and existence is checked again once the lock is held (Nova's `cache()` pattern).
/// A base is only ever published by renaming a finished, fsynced file into place, so a crash leaves
/// at worst a `.partial` that the next attempt removes.
///
/// Eviction (Shaken Fist #1300, Nova's "disappearing images"): an entry the caller says is in use is
/// never removed; the rest go oldest-used first, only while the cache is above its high-water mark.
public actor ImageCache {
    /// What the base will be used as.
    public enum Purpose: String, Sendable {
        /// A disk: the base becomes qcow2 with 2 MiB clusters, for overlays.
        case disk
        /// A CD-ROM: the image must be an ISO, and stays one.
        case cdrom
    }

    /// A base image in the cache.
    public struct CachedImage: Sendable, Equatable {
        /// The blob it was made from.
        public let blobUUID: UUID
        /// Its path in the cache.
        public let path: String
        /// qcow2 for disks, iso for CD-ROMs.
        public let format: ImageFormat
    }

    /// The cache directory.
    public nonisolated let directory: String
    /// Above this many bytes, ``evict(inUse:)`` removes unused entries.
    public nonisolated let highWaterBytes: Int64
    private let logger: Logger
    private let qemuImg: String
    private let limits: ImageLimits
    private var inFlight = SingleFlight<String, (CachedImage, Outcome)>()

    /// How many bases this cache converted with qemu-img (the rest were linked or already there).
    public private(set) var conversions = 0
    /// How many bases were hard-linked (or copied) into place without conversion.
    public private(set) var links = 0

    /// A cache in `directory` (normally `<storage>/image-cache`, created when first needed), its
    /// unpacking and qemu-img runs bounded by `limits`.
    public init(
        directory: String, highWaterBytes: Int64, logger: Logger, qemuImg: String = "/usr/bin/qemu-img",
        limits: ImageLimits = ImageLimits()
    ) {
        self.limits = limits
        self.directory = directory
        self.highWaterBytes = highWaterBytes
        self.logger = logger
        self.qemuImg = qemuImg
    }

    /// The cache path a blob's base has for `purpose`, whether or not it exists yet.
    public nonisolated func path(for blobUUID: UUID, purpose: Purpose) -> String {
        "\(directory)/\(blobUUID.lowercasedString).\(purpose == .disk ? "qcow2" : "iso")"
    }

    /// Makes sure the base for `blobUUID`, whose data is the file `dataPath`, is in the cache, and
    /// returns it. The data is inspected first (backing files, external data files and HTML error
    /// pages are refused), a gzip is unpacked and inspected again, then a qcow2 that already has
    /// 2 MiB clusters (or an ISO for a CD-ROM) is hard-linked and anything else converted with
    /// `qemu-img convert -O qcow2 -o cluster_size=2M`.
    ///
    /// The blocking work runs off the cooperative pool and outside the actor, so other images are
    /// prepared meanwhile; concurrent calls for the same blob and purpose share one preparation.
    ///
    /// - Throws: ``ImageError``; ``ImageError/diskFull(path:)`` says what to free.
    public func ensureBase(blobUUID: UUID, dataPath: String, for purpose: Purpose) async throws -> CachedImage {
        let key = "\(blobUUID)/\(purpose.rawValue)"
        let job = Job(
            blobUUID: blobUUID, dataPath: dataPath, purpose: purpose, directory: directory,
            finalPath: path(for: blobUUID, purpose: purpose), qemuImg: qemuImg, limits: limits, logger: logger)
        let flight = inFlight.join(key) { Task { try await runBlocking { try job.run() } } }
        defer { if flight.started { inFlight.end(key) } }
        let (image, outcome) = try await flight.task.value
        BlobMetrics.cacheLookup(hit: outcome == .present)
        // Counted once, by the caller that ran the preparation.
        guard flight.started else { return image }
        switch outcome {
        case .converted: conversions += 1
        case .linked: links += 1
        case .present: return image
        }
        if let bytes = try? totalBytes() { BlobMetrics.cacheSize(bytes) }
        return image
    }

    /// Records that `blobUUID`'s bases were used now (their mtime), for eviction's oldest-first order.
    /// A hard-linked base shares its inode, and so its mtime, with the blob's data file; nothing
    /// reads that mtime as the content's age.
    public func markUsed(_ blobUUID: UUID) {
        for purpose in [Purpose.disk, .cdrom] { touch(path(for: blobUUID, purpose: purpose)) }
    }

    /// The bytes the cache's bases take on disk.
    public func totalBytes() throws -> Int64 {
        try entries().reduce(0) { $0 + $1.bytes }
    }

    /// When the cache takes more than ``highWaterBytes``, removes bases not in `inUse`, least
    /// recently used first, until it is under the mark (or only bases in use are left). A base being
    /// prepared is never removed either. Returns the blobs whose bases were removed.
    public func evict(inUse: Set<UUID>) async throws -> [UUID] {
        let busy = Set(inFlight.keys.compactMap { UUID(uuidString: String($0.prefix(36))) })
        let protected = inUse.union(busy)
        let directory = directory
        let highWater = highWaterBytes
        let logger = logger
        let candidates = try entries()
        return try await runBlocking {
            var total = candidates.reduce(0) { $0 + $1.bytes }
            guard total > highWater else {
                BlobMetrics.cacheSize(total)
                return []
            }
            var removed: [UUID] = []
            for entry in candidates.sorted(by: { $0.lastUsed < $1.lastUsed }) where !protected.contains(entry.blobUUID) {
                if total <= highWater { break }
                // Under the blob's lock, so no other process is between its existence check and
                // its use of the file.
                let lock = try FileLock.acquire(path: "\(directory)/\(entry.blobUUID.lowercasedString).lock")
                defer { lock.release() }
                if unlink(entry.path) != 0 && errno != ENOENT { throw fileError("unlink", entry.path) }
                total -= entry.bytes
                if !removed.contains(entry.blobUUID) { removed.append(entry.blobUUID) }
                logger.info(
                    "evicted image from cache",
                    metadata: ["blob_uuid": "\(entry.blobUUID)", "path": "\(entry.path)", "bytes": "\(entry.bytes)"])
            }
            BlobMetrics.cacheSize(total)
            if total > highWater {
                logger.warning(
                    "image cache stays above its high-water mark: the rest is in use",
                    metadata: ["bytes": "\(total)", "high_water": "\(highWater)"])
            }
            return removed
        }
    }

    private struct Entry: Sendable {
        let blobUUID: UUID
        let path: String
        let bytes: Int64
        let lastUsed: Int64  // mtime, nanoseconds
    }

    /// The cache's finished bases (`<uuid>.qcow2`, `<uuid>.iso`).
    private func entries() throws -> [Entry] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var result: [Entry] = []
        for name in names {
            let parts = name.split(separator: ".")
            guard parts.count == 2, parts[1] == "qcow2" || parts[1] == "iso", let uuid = UUID(uuidString: String(parts[0]))
            else { continue }
            let path = "\(directory)/\(name)"
            var info = stat()
            guard stat(path, &info) == 0 else { continue }
            result.append(
                Entry(
                    blobUUID: uuid, path: path, bytes: Int64(info.st_blocks) * 512,
                    lastUsed: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)))
        }
        return result
    }
}

/// The bounds on preparing one base: how large an unpacked or converted image may grow, and how
/// long a qemu-img run may take before it is killed.
public struct ImageLimits: Sendable, Equatable {
    /// The most bytes a gunzip may write, and (with room for qcow2 metadata) a conversion
    /// (SFNODE_IMAGE_MAX_GIB).
    public var maxImageBytes: Int64
    /// The wall-clock limit of each qemu-img run (SFNODE_QEMU_IMG_TIMEOUT_SECONDS).
    public var qemuImgTimeLimit: Duration

    /// Defaults: 64 GiB, 30 minutes.
    public init(maxImageBytes: Int64 = 64 << 30, qemuImgTimeLimit: Duration = .seconds(1800)) {
        self.maxImageBytes = maxImageBytes
        self.qemuImgTimeLimit = qemuImgTimeLimit
    }
}

/// How a base came to be in the cache.
private enum Outcome: Sendable {
    case present, linked, converted
}

/// One preparation of one base, run on a Dispatch worker: every step blocks.
private struct Job: Sendable {
    let blobUUID: UUID
    let dataPath: String
    let purpose: ImageCache.Purpose
    let directory: String
    let finalPath: String
    let qemuImg: String
    let limits: ImageLimits
    let logger: Logger

    var format: ImageFormat { purpose == .disk ? .qcow2 : .iso }

    func run() throws -> (ImageCache.CachedImage, Outcome) {
        let image = ImageCache.CachedImage(blobUUID: blobUUID, path: finalPath, format: format)
        if FileManager.default.fileExists(atPath: finalPath) {
            touch(finalPath)
            return (image, .present)
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ImageError.unreadable(path: directory, message: "cannot create the image cache directory: \(error)")
        }
        let lock = try FileLock.acquire(path: "\(directory)/\(blobUUID.lowercasedString).lock")
        defer { lock.release() }
        // Another process may have finished it while this one waited for the lock.
        if FileManager.default.fileExists(atPath: finalPath) {
            touch(finalPath)
            return (image, .present)
        }
        let partial = finalPath + ".partial"
        let unpacked = "\(directory)/\(blobUUID.lowercasedString).unpacked.partial"
        unlink(partial)
        unlink(unpacked)
        defer {
            unlink(partial)
            unlink(unpacked)
        }
        let outcome = try prepare(partial: partial, unpacked: unpacked)
        syncDirectory(directory)
        logger.info(
            "image cached",
            metadata: ["blob_uuid": "\(blobUUID)", "path": "\(finalPath)", "how": "\(outcome)"])
        return (image, outcome)
    }

    private func prepare(partial: String, unpacked: String) throws -> Outcome {
        var source = dataPath
        var (detected, clusterSize) = try ImageInspector.detect(source)
        if detected == .gzip {
            logger.info("unpacking gzip image", metadata: ["blob_uuid": "\(blobUUID)", "path": "\(source)"])
            try Gunzip.unpack(source, to: unpacked, limit: limits.maxImageBytes)
            source = unpacked
            (detected, clusterSize) = try ImageInspector.detect(source)
            if detected == .gzip {
                throw ImageError.unsupportedFormat(path: dataPath, format: "gzip", reason: "it is gzip inside gzip")
            }
        }
        switch purpose {
        case .cdrom:
            guard detected == .iso else {
                throw ImageError.unsupportedFormat(
                    path: dataPath, format: detected.rawValue, reason: "a CD-ROM needs an ISO 9660 image")
            }
            try publish(source, isTemporary: source == unpacked, partial: partial)
            return .linked
        case .disk:
            if detected == .qcow2 && clusterSize == 2 << 20 {
                // qemu-img info double-checks what the header said (backing and data files).
                _ = try qemuInfoChecked(source, format: .qcow2)
                try publish(source, isTemporary: source == unpacked, partial: partial)
                return .linked
            }
            _ = try qemuInfoChecked(source, format: detected)
            try convert(source, format: detected, to: partial)
            return .converted
        }
    }

    /// `qemu-img info`'s checks, within the time limit.
    private func qemuInfoChecked(_ source: String, format: ImageFormat) throws {
        do {
            _ = try ImageInspector.qemuInfoChecked(source, format: format, qemuImg: qemuImg, timeLimit: limits.qemuImgTimeLimit)
        } catch ChildProcessError.timedOut {
            throw ImageError.qemuImgTimedOut(operation: "info", path: source, seconds: limits.qemuImgTimeLimit.components.seconds)
        }
    }

    /// Puts `source` in place as the base without copying: renames a temporary file, hard-links
    /// the blob's file, and copies only when the cache is on another file system.
    private func publish(_ source: String, isTemporary: Bool, partial: String) throws {
        if isTemporary {
            try renameFile(source, to: finalPath)
            return
        }
        if link(source, finalPath) == 0 { return }
        let code = errno
        guard code == EXDEV || code == EPERM || code == EMLINK else { throw fileError("link \(source) to", finalPath, code: code) }
        logger.info("cannot hard-link the image into the cache; copying", metadata: ["from": "\(source)", "errno": "\(code)"])
        try copyFile(source, to: partial)
        try renameFile(partial, to: finalPath)
    }

    private func convert(_ source: String, format: ImageFormat, to partial: String) throws {
        guard let qemuFormat = format.qemuFormat else {
            throw ImageError.unsupportedFormat(path: source, format: format.rawValue, reason: "qemu-img cannot read it")
        }
        logger.info(
            "converting image to qcow2 with 2 MiB clusters",
            metadata: ["blob_uuid": "\(blobUUID)", "from_format": "\(format.rawValue)"])
        var command = [qemuImg, "convert", "-q", "-f", qemuFormat, "-O", "qcow2", "-o", "cluster_size=2M", source, partial]
        // Like qemu-img info (ImageInspector), under prlimit: the input is a tenant's file, and a
        // crafted one can make qemu-img spin, allocate or (compressed clusters) write without
        // bound. CPU time as long as the wall-clock limit, 2 GiB of address space (convert keeps a
        // few clusters in flight), and the output file no larger than the image limit plus room
        // for qcow2's metadata.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit") {
            let seconds = max(1, limits.qemuImgTimeLimit.components.seconds)
            let (fileLimit, overflow) = limits.maxImageBytes.addingReportingOverflow(1 << 30)
            command = ["/usr/bin/prlimit", "--cpu=\(seconds)", "--as=\(2 << 30)", "--fsize=\(overflow ? Int64.max : fileLimit)"] + command
        }
        let result: CommandOutput
        do {
            result = try ChildProcess.run(command, timeLimit: limits.qemuImgTimeLimit)
        } catch ChildProcessError.timedOut {
            throw ImageError.qemuImgTimedOut(operation: "convert", path: source, seconds: limits.qemuImgTimeLimit.components.seconds)
        }
        // 128 + SIGXFSZ: the output reached the file size limit above.
        if result.status == 128 + SIGXFSZ {
            throw ImageError.imageTooLarge(path: source, operation: "qemu-img convert", limit: limits.maxImageBytes)
        }
        guard result.status == 0 else {
            let message = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            if mentionsDiskFull(message) { throw ImageError.diskFull(path: finalPath) }
            throw ImageError.qemuImg(operation: "convert", path: source, message: message)
        }
        try syncFile(partial)
        try renameFile(partial, to: finalPath)
    }
}

/// Copies `source` to `destination` in 1 MiB chunks, fsynced.
private func copyFile(_ source: String, to destination: String) throws {
    let input = open(source, O_RDONLY | O_CLOEXEC)
    if input < 0 { throw ImageError.unreadable(path: source, message: String(cString: strerror(errno))) }
    defer { close(input) }
    let output = try OutputFile(creating: destination)
    defer { output.close() }
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw ImageError.unreadable(path: source, message: String(cString: strerror(errno)))
        }
        if count == 0 { break }
        try buffer.withUnsafeBytes { try output.write(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }
    try output.sync()
}

/// Sets a file's mtime (and atime) to now; a missing file is ignored.
private func touch(_ path: String) {
    utimensat(AT_FDCWD, path, nil, 0)
}
