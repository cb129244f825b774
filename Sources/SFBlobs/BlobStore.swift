import Foundation
import Logging
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// Why blob data could not be written, verified or read. Each message names the file or blob and
/// what is wrong.
public enum BlobError: Error, CustomStringConvertible, Sendable {
    /// The filesystem holding `path` is full (ENOSPC or EDQUOT).
    case diskFull(path: String)
    /// The data's sha512 is `actual`, not the `expected` one it was announced with.
    case checksumMismatch(expected: String, actual: String)
    /// An offset, limit or length is out of range; the message says which and why.
    case invalidRange(String)
    /// The blob has no data file on this node at `path`.
    case missing(blob: UUID, path: String)
    /// An upload finished or removed while a request for it waited; the message names it.
    case uploadGone(String)
    /// Any other failed file operation: the operation, the path and errno's text.
    case io(String)

    /// A sentence naming what is wrong.
    public var description: String {
        switch self {
        case .diskFull(let path): return "no space left on the device holding \(path)"
        case .checksumMismatch(let expected, let actual):
            return "blob data failed its checksum: sha512 is \(actual), expected \(expected)"
        case .invalidRange(let reason): return "invalid range: \(reason)"
        case .missing(let blob, let path): return "blob \(BlobStore.fileName(for: blob)) has no data on this node (\(path))"
        case .uploadGone(let reason), .io(let reason): return reason
        }
    }

    /// The error for `operation` on `path` failing with errno `code`.
    static func system(_ operation: String, _ path: String, code: Int32) -> BlobError {
        if code == ENOSPC || code == EDQUOT { return .diskFull(path: path) }
        return .io(SystemError("\(operation) \(path)", code: code).description)
    }
}

/// Blob data on this node's disk: one file per blob, `<directory>/<uuid>`, written through
/// ``BlobIngest`` as `<uuid>.partial` and renamed into place only once complete, synced and
/// verified. The records (state, sha512, locations, references) live in ``BlobRecords``.
///
/// A crash at any point leaves either a `.partial` (which ``sweep()`` removes) or a complete,
/// verified file whose record exists: the record is written before the rename, so a data file
/// without a record is always garbage.
public final class BlobStore: Sendable {
    /// How long a `.partial` may sit unwritten before ``sweep()`` takes it for abandoned (Shaken
    /// Fist's 300 s).
    public static let partialLifetime: TimeInterval = 300

    public let records: any BlobRecords
    /// Where the data files are, such as `<storage>/blobs`.
    public let directory: String
    /// This node's name, as recorded in blob locations.
    public let nodeName: String
    let logger: Logger

    /// A store of blob data in `directory`, which is made (mode 0700) when first written to.
    public init(records: any BlobRecords, directory: String, nodeName: String, logger: Logger) {
        self.records = records
        self.directory = directory
        self.nodeName = nodeName
        self.logger = logger
    }

    /// A UUID as blob files and records spell it: lower case.
    static func fileName(for uuid: UUID) -> String { uuid.lowercasedString }

    /// The data file of blob `uuid` (whether or not it exists).
    public func path(of uuid: UUID) -> String { directory + "/" + Self.fileName(for: uuid) }

    func partialPath(of uuid: UUID) -> String { path(of: uuid) + ".partial" }

    /// Whether this node has the data file of blob `uuid`.
    public func hasData(_ uuid: UUID) -> Bool {
        var info = stat()
        return stat(path(of: uuid), &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    // MARK: - Writing

    /// Starts writing a new blob's data. `expectedSHA512`, when given, is checked by
    /// ``BlobIngest/finish(info:)``. `deduplicate` false keeps the data as blob `uuid` even when a
    /// blob with the same content exists: a snapshot's UUID is handed out before its data exists,
    /// and its client waits for exactly that blob. `replica` makes the data this node's copy of blob
    /// `uuid`, which exists already (created, with `expectedSHA512`) and is held by other nodes.
    public func beginIngest(uuid: UUID = UUID(), expectedSHA512: String? = nil, deduplicate: Bool = true, replica: Bool = false) throws -> BlobIngest {
        try ensureDirectory()
        let partial = partialPath(of: uuid)
        let fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { throw BlobError.system("open", partial, code: errno) }
        let hash: BackgroundHasher
        do {
            hash = try BackgroundHasher()
        } catch {
            close(fd)
            unlink(partial)
            throw BlobError.io("starting the hash of blob \(Self.fileName(for: uuid)): \(error)")
        }
        return BlobIngest(
            store: self, uuid: uuid, partialPath: partial, expectedSHA512: expectedSHA512?.lowercased(), deduplicate: deduplicate,
            replica: replica, fd: fd, hash: hash)
    }

    /// Turns a synced, hashed `.partial` into a blob: reuses a created blob with the same content
    /// when there is one (so identical data is stored once), else records a new blob, renames the
    /// file into place and marks it created here. The partial is gone however this ends.
    func commit(
        uuid: UUID, partial: String, expectedSHA512: String?, sha512: String, size: Int64, info: [String: JSONValue],
        deduplicate: Bool = true, replica: Bool = false
    ) async throws -> Blob {
        let metadata: Logger.Metadata = ["blob.uuid": "\(Self.fileName(for: uuid))", "blob.sha512": "\(sha512)"]
        defer { unlink(partial) }
        if let expectedSHA512, expectedSHA512 != sha512 {
            logger.warning(
                "blob data failed checksum validation",
                metadata: metadata.merging(["blob.expected_sha512": "\(expectedSHA512)"]) { $1 })
            throw BlobError.checksumMismatch(expected: expectedSHA512, actual: sha512)
        }
        if replica {
            // Verified against the record's checksum above: this node's copy of a blob others hold.
            guard expectedSHA512 != nil else { throw BlobError.io("a copy of blob \(Self.fileName(for: uuid)) needs its checksum to be verified") }
            try await moveIntoPlace(partial, uuid)
            return try await records.addBlobLocation(uuid: uuid, node: nodeName)
        }
        if deduplicate, let existing = try await records.blob(sha512: sha512) {
            // The same content is already a blob: keep one copy. Another node may hold it and not
            // this one; then this verified file becomes this node's copy of it.
            if !hasData(existing.uuid) { try await moveIntoPlace(partial, existing.uuid) }
            logger.debug(
                "blob data matches an existing blob",
                metadata: metadata.merging(["blob.existing": "\(Self.fileName(for: existing.uuid))"]) { $1 })
            return try await records.addBlobLocation(uuid: existing.uuid, node: nodeName)
        }
        try await records.createBlob(Blob(uuid: uuid, size: size, state: .initial))
        do {
            try await moveIntoPlace(partial, uuid)
        } catch {
            _ = try? await records.setBlobState(uuid: uuid, to: .error)
            throw error
        }
        let blob = try await records.completeBlob(uuid: uuid, size: size, sha512: sha512, info: info, node: nodeName)
        logger.info("blob data stored", metadata: metadata.merging(["blob.size": "\(size)"]) { $1 })
        return blob
    }

    /// Renames `partial` to blob `uuid`'s data file and syncs the directory, so the rename itself
    /// survives a power cut.
    private func moveIntoPlace(_ partial: String, _ uuid: UUID) async throws {
        let target = path(of: uuid)
        let directory = directory
        try await runBlocking {
            if rename(partial, target) != 0 { throw BlobError.system("rename \(partial) to", target, code: errno) }
            let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if fd < 0 { throw BlobError.system("open", directory, code: errno) }
            defer { close(fd) }
            if fsync(fd) != 0 { throw BlobError.system("fsync", directory, code: errno) }
        }
    }

    func ensureDirectory() throws {
        do {
            try createPrivateDirectory(directory)
        } catch {
            throw BlobError.io("creating the blob directory \(directory): \(error)")
        }
    }

    // MARK: - Reading

    /// Up to `limit` bytes (nil: to the end) of blob `uuid` from `offset`. An offset at or past
    /// the end gives empty data, as Shaken Fist's API does; the whole range is read into memory,
    /// so large reads should use ``chunks(_:offset:limit:chunkSize:)``.
    public func read(_ uuid: UUID, offset: Int64 = 0, limit: Int64? = nil) throws -> Data {
        var data = Data()
        let file = try openForReading(uuid)
        let range = try Self.range(of: uuid, size: file.size, offset: offset, limit: limit)
        var position = range.lowerBound
        while position < range.upperBound {
            let chunk = try file.read(at: position, count: Int(min(range.upperBound - position, 1 << 24)))
            data.append(chunk)
            position += Int64(chunk.count)
        }
        return data
    }

    /// The same bytes as ``read(_:offset:limit:)`` as a sequence of chunks of at most `chunkSize`
    /// bytes, read as they are asked for. The file is opened (and a missing blob or bad range
    /// reported) now, so a caller can refuse the request before it starts a response.
    public func chunks(_ uuid: UUID, offset: Int64 = 0, limit: Int64? = nil, chunkSize: Int = 1 << 20) throws -> BlobChunks {
        guard chunkSize > 0 else {
            throw BlobError.invalidRange("chunk size \(chunkSize) for blob \(Self.fileName(for: uuid)) is not positive")
        }
        let file = try openForReading(uuid)
        let range = try Self.range(of: uuid, size: file.size, offset: offset, limit: limit)
        return BlobChunks(file: file, range: range, chunkSize: chunkSize)
    }

    private func openForReading(_ uuid: UUID) throws -> ReadableFile {
        let path = path(of: uuid)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { throw BlobError.missing(blob: uuid, path: path) }
            throw BlobError.system("open", path, code: code)
        }
        var info = stat()
        if fstat(fd, &info) != 0 {
            let error = BlobError.system("fstat", path, code: errno)
            close(fd)
            throw error
        }
        return ReadableFile(fd: fd, path: path, size: Int64(info.st_size))
    }

    /// The byte range `offset`, `limit` selects in a file of `size` bytes, clamped to the file.
    static func range(of uuid: UUID, size: Int64, offset: Int64, limit: Int64?) throws -> Range<Int64> {
        guard offset >= 0 else { throw BlobError.invalidRange("offset \(offset) into blob \(fileName(for: uuid)) is negative") }
        if let limit, limit < 0 { throw BlobError.invalidRange("limit \(limit) for blob \(fileName(for: uuid)) is negative") }
        let start = min(offset, size)
        let available = size - start
        return start..<(start + min(limit ?? available, available))
    }

    // MARK: - Releasing and sweeping

    /// Drops `reference` and returns how many references the blob has left. When that removed the
    /// blob's last one (the blob is now deleted), its data on this node goes too.
    @discardableResult public func release(_ reference: BlobReference) async throws -> Int {
        let remaining = try await records.removeReference(reference)
        if remaining == 0, try await records.blob(uuid: reference.blobUUID).state == .deleted {
            try await removeData(reference.blobUUID)
        }
        return remaining
    }

    /// Removes blob `uuid`'s data file here and this node from its locations.
    private func removeData(_ uuid: UUID) async throws {
        let path = path(of: uuid)
        // Freeing the extents of a file of gigabytes blocks.
        try await runBlocking {
            if unlink(path) != 0 && errno != ENOENT { throw BlobError.system("unlink", path, code: errno) }
        }
        _ = try await records.removeBlobLocation(uuid: uuid, node: nodeName)
        logger.info("blob data removed", metadata: ["blob.uuid": "\(Self.fileName(for: uuid))"])
    }

    /// Removes `.partial` files unwritten for ``partialLifetime`` and the data files of blobs the
    /// records say are deleted or do not know; never a file of a blob in any other state. Returns
    /// the paths removed. When the records cannot be read it removes no data file.
    public func sweep() async throws -> [String] {
        let directory = directory
        // Listing and stat-ing a large directory blocks: on a blocking-work thread, not the pool.
        let listing = try await runBlocking { () throws -> [String]? in
            // Nothing was ever written here.
            if access(directory, F_OK) != 0 && errno == ENOENT { return nil }
            do {
                return try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
            } catch {
                throw BlobError.io("listing the blob directory \(directory): \(error)")
            }
        }
        guard let names = listing else { return [] }
        // Listed before the records are read: a file renamed into place after the listing is not
        // looked at, and one listed already had its record (records are written before renames).
        let known = Dictionary(try await records.blobs().map { ($0.uuid, $0) }, uniquingKeysWith: { first, _ in first })
        var doomed: [(path: String, blob: Blob?)] = []
        var partials: [String] = []
        var checkpoints: [String] = []
        for name in names {
            if name.hasSuffix(".partial") {
                partials.append(directory + "/" + name)
                continue
            }
            if name.hasPrefix("fetch-") && name.hasSuffix(".json") {
                checkpoints.append(directory + "/" + name)
                continue
            }
            guard let uuid = UUID(uuidString: name), name == Self.fileName(for: uuid) else { continue }
            let blob = known[uuid]
            guard blob == nil || blob?.state == .deleted else { continue }
            doomed.append((directory + "/" + name, blob))
        }
        let doomedPaths = doomed.map(\.path)
        let partialPaths = partials
        let checkpointPaths = checkpoints
        let (removedPartials, unlinked) = try await runBlocking { () -> ([String], [String: String]) in
            let now = Date().timeIntervalSince1970
            var removedPartials: [String] = []
            for path in partialPaths {
                var info = stat()
                guard stat(path, &info) == 0, now - Double(info.st_mtim.tv_sec) > Self.partialLifetime else { continue }
                if unlink(path) == 0 { removedPartials.append(path) }
            }
            // A download's checkpoint goes with its partial file (a live download writes the
            // partial, not the checkpoint, so only the partial's age tells).
            for path in checkpointPaths {
                var info = stat()
                guard stat(path, &info) == 0, now - Double(info.st_mtim.tv_sec) > Self.partialLifetime else { continue }
                let checkpoint = FileManager.default.contents(atPath: path).flatMap { try? JSONDecoder().decode(FetchCheckpoint.self, from: $0) }
                if let blob = checkpoint?.blob, access(directory + "/" + Self.fileName(for: blob) + ".partial", F_OK) == 0 { continue }
                if unlink(path) == 0 { removedPartials.append(path) }
            }
            // Each path maps to "" when removed, or to why it could not be.
            var unlinked: [String: String] = [:]
            for path in doomedPaths {
                unlinked[path] = unlink(path) == 0 ? "" : "\(SystemError.fromErrno("unlink"))"
            }
            return (removedPartials, unlinked)
        }
        var removed = removedPartials
        for (path, blob) in doomed {
            if let failure = unlinked[path], !failure.isEmpty {
                logger.warning("could not remove blob data", metadata: ["blob.path": "\(path)", "error": "\(failure)"])
                continue
            }
            removed.append(path)
            if let blob, blob.locations.contains(nodeName) {
                _ = try await records.removeBlobLocation(uuid: blob.uuid, node: nodeName)
            }
        }
        if !removed.isEmpty { logger.info("swept blob files", metadata: ["blob.removed": "\(removed.count)"]) }
        return removed
    }
}

/// An open data file, shared by a ``BlobChunks`` and its iterators; `pread` keeps no file position,
/// so they never disturb each other.
final class ReadableFile: Sendable {
    let fd: Int32
    let path: String
    let size: Int64

    init(fd: Int32, path: String, size: Int64) {
        self.fd = fd
        self.path = path
        self.size = size
    }

    deinit { close(fd) }

    /// `count` bytes at `offset`; the file is immutable, so a short read means it was truncated
    /// under us.
    func read(at offset: Int64, count: Int) throws -> Data {
        var data = Data(count: count)
        var done = 0
        while done < count {
            let n = data.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return pread(fd, base + done, count - done, off_t(offset) + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw BlobError.system("pread", path, code: errno)
            }
            if n == 0 { throw BlobError.io("\(path) ended at byte \(offset + Int64(done)), before byte \(offset + Int64(count))") }
            done += n
        }
        return data
    }
}

/// A blob's bytes as chunks, read from disk as they are asked for (for streaming a response).
public struct BlobChunks: AsyncSequence, Sendable {
    public typealias Element = Data

    let file: ReadableFile
    let range: Range<Int64>
    let chunkSize: Int

    /// How many bytes the sequence yields in all.
    public var count: Int64 { range.upperBound - range.lowerBound }

    public func makeAsyncIterator() -> Iterator {
        Iterator(file: file, position: range.lowerBound, end: range.upperBound, chunkSize: chunkSize)
    }

    /// Reads the next chunk on each call.
    public struct Iterator: AsyncIteratorProtocol {
        let file: ReadableFile
        var position: Int64
        let end: Int64
        let chunkSize: Int

        public mutating func next() async throws -> Data? {
            guard position < end else { return nil }
            try Task.checkCancellation()
            // A read from a busy disk blocks: on a blocking-work thread, not a cooperative one.
            let (readable, offset, count) = (file, position, Int(Swift.min(Int64(chunkSize), end - position)))
            let chunk = try await runBlocking { try readable.read(at: offset, count: count) }
            self.position += Int64(chunk.count)
            return chunk
        }
    }
}
