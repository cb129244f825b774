import Crypto
import Foundation
import SFStore
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Shaken Fist's upload API on this node: `POST /upload` makes an empty file, each
/// `POST /upload/<uuid>` appends a chunk, `POST /upload/<uuid>/truncate/<offset>` cuts back to a
/// point a client resumes from, and the finished file becomes a blob (then an artifact version).
///
/// Files are `<directory>/<uuid>`; the upload records say which node holds them.
public struct UploadSessions: Sendable {
    public let blobs: BlobStore
    public let records: any BlobRecords
    /// Where upload files are, such as `<storage>/uploads`.
    public let directory: String

    /// How long Shaken Fist keeps an upload that never became a blob.
    public static let lifetime: TimeInterval = 7 * 24 * 3600

    /// The running sha512 of each upload this process appended every byte of, in order: its finish
    /// then needs neither to read the file back nor to copy it (the file is linked into the blob
    /// directory). Any doubt (a restart, a truncate, appends that overlapped) drops the entry, and
    /// the finish reads the file as before. One entry per pending upload, which quotas bound.
    private static let runningHashes = Mutex<[UUID: RunningHash]>([:])

    private struct RunningHash {
        var hasher: SHA512
        /// The file's size when the hash last caught up with it.
        var bytes: Int64
    }

    public init(blobs: BlobStore, records: any BlobRecords, directory: String) {
        self.blobs = blobs
        self.records = records
        self.directory = directory
    }

    /// The file of upload `uuid`.
    public func path(of uuid: UUID) -> String { directory + "/" + BlobStore.fileName(for: uuid) }

    /// Starts an empty upload on this node.
    public func create(namespace: String) async throws -> Upload {
        do {
            try createPrivateDirectory(directory)
        } catch {
            throw BlobError.io("creating the upload directory \(directory): \(error)")
        }
        let upload = Upload(node: blobs.nodeName, namespace: namespace)
        let path = path(of: upload.uuid)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 { throw BlobError.system("open", path, code: errno) }
        close(fd)
        do {
            try await records.createUpload(upload)
        } catch {
            unlink(path)
            throw error
        }
        return upload
    }

    /// Appends `bytes` at the end of the upload's file and records its new size. The write runs on
    /// a blocking-work thread: a chunk of megabytes to a slow disk must not hold a cooperative thread
    /// that every other request needs.
    @discardableResult public func append<Bytes: Sequence<UInt8> & Sendable>(uuid: UUID, bytes: Bytes) async throws -> Upload {
        _ = try await localUpload(uuid)
        let path = path(of: uuid)
        let size = try await runBlocking {
            try Self.withFile(path, flags: O_WRONLY | O_APPEND) { fd in
                let before = try Self.size(fd, path)
                let written: Int64 = try {
                    let contiguous: Int64? = try bytes.withContiguousStorageIfAvailable { chunk in
                        let raw = UnsafeRawBufferPointer(chunk)
                        try Self.write(fd, raw, path)
                        return Self.hashAlong(uuid, raw, from: before)
                    }
                    if let contiguous { return contiguous }
                    return try Array(bytes).withUnsafeBytes { raw in
                        try Self.write(fd, raw, path)
                        return Self.hashAlong(uuid, raw, from: before)
                    }
                }()
                let after = try Self.size(fd, path)
                // Another append landed beside this one: the hash no longer follows the file.
                if after != written { Self.runningHashes.withLock { _ = $0.removeValue(forKey: uuid) } }
                return after
            }
        }
        return try await records.setUploadReceived(uuid: uuid, size)
    }

    /// Cuts the upload's file back to `offset` bytes, for a client resuming after a failed chunk.
    /// An offset past the end is ``BlobError/invalidRange(_:)`` (Shaken Fist would pad with zeros,
    /// which no resuming client wants).
    @discardableResult public func truncate(uuid: UUID, to offset: Int64) async throws -> Upload {
        _ = try await localUpload(uuid)
        let path = path(of: uuid)
        let size = try await runBlocking {
            try Self.withFile(path, flags: O_WRONLY) { fd in
                let size = try Self.size(fd, path)
                guard offset >= 0, offset <= size else {
                    throw BlobError.invalidRange(
                        "upload \(BlobStore.fileName(for: uuid)) holds \(size) bytes; cannot truncate to \(offset)")
                }
                if ftruncate(fd, off_t(offset)) != 0 { throw BlobError.system("ftruncate", path, code: errno) }
                Self.runningHashes.withLock { _ = $0.removeValue(forKey: uuid) }
                return offset
            }
        }
        return try await records.setUploadReceived(uuid: uuid, size)
    }

    /// Makes the uploaded bytes a blob through a ``BlobIngest`` (so identical content gives the
    /// existing blob), then forgets the upload and removes its file. The upload stays as it was
    /// when that fails.
    public func finish(uuid: UUID) async throws -> Blob {
        _ = try await localUpload(uuid)
        let path = path(of: uuid)
        if let blob = try await finishHashed(uuid: uuid, path: path) {
            try await abandon(uuid: uuid)
            return blob
        }
        let ingest = try blobs.beginIngest()
        do {
            // Reading and hashing gigabytes takes seconds: on a blocking-work thread, not the pool.
            try await runBlocking {
                try Self.withFile(path, flags: O_RDONLY) { fd in
                    var buffer = [UInt8](repeating: 0, count: 1 << 20)
                    while true {
                        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                        if n < 0 {
                            if errno == EINTR { continue }
                            throw BlobError.system("read", path, code: errno)
                        }
                        if n == 0 { break }
                        try buffer.withUnsafeBytes { try ingest.append(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                    }
                }
            }
        } catch {
            ingest.abandon()
            throw error
        }
        let blob = try await ingest.finish()
        try await abandon(uuid: uuid)
        return blob
    }

    /// The blob of an upload whose hash followed every append: the file synced and hard-linked
    /// into the blob directory as a partial blob, so nothing is read or copied. Nil when the hash
    /// did not follow the file (the caller reads it instead). The upload's file stays until the
    /// upload is abandoned, so a failure here loses nothing.
    private func finishHashed(uuid: UUID, path: String) async throws -> Blob? {
        guard let running = Self.runningHashes.withLock({ $0.removeValue(forKey: uuid) }) else { return nil }
        try blobs.ensureDirectory()
        let blobUUID = UUID()
        let partial = blobs.partialPath(of: blobUUID)
        let linked = try await runBlocking { () throws -> Bool in
            try Self.withFile(path, flags: O_RDONLY) { fd in
                guard try Self.size(fd, path) == running.bytes else { return false }
                if fsync(fd) != 0 { throw BlobError.system("fsync", path, code: errno) }
                // Another filesystem (EXDEV) cannot take a link: the caller copies instead.
                return link(path, partial) == 0
            }
        }
        guard linked else { return nil }
        return try await blobs.commit(
            uuid: blobUUID, partial: partial, expectedSHA512: nil, sha512: BlobIngest.hex(running.hasher.finalize()), size: running.bytes, info: [:])
    }

    /// Carries upload `uuid`'s running hash over `bytes`, just written after the file's first
    /// `offset` bytes, when it had followed the file that far (or the file was empty); returns the
    /// size the file should now have.
    private static func hashAlong(_ uuid: UUID, _ bytes: UnsafeRawBufferPointer, from offset: Int64) -> Int64 {
        let end = offset + Int64(bytes.count)
        // Taken out while hashing: an append beside this one finds nothing and leaves it alone.
        let taken = runningHashes.withLock { hashes -> RunningHash? in
            if let running = hashes.removeValue(forKey: uuid) { return running.bytes == offset ? running : nil }
            return offset == 0 ? RunningHash(hasher: SHA512(), bytes: 0) : nil
        }
        guard var running = taken else { return end }
        running.hasher.update(bufferPointer: bytes)
        running.bytes = end
        runningHashes.withLock { $0[uuid] = running }
        return end
    }

    /// Forgets the upload and removes its file.
    public func abandon(uuid: UUID) async throws {
        Self.runningHashes.withLock { _ = $0.removeValue(forKey: uuid) }
        try await records.deleteUpload(uuid: uuid)
        let path = path(of: uuid)
        if unlink(path) != 0 && errno != ENOENT { throw BlobError.system("unlink", path, code: errno) }
    }

    /// Abandons this node's uploads older than ``lifetime`` (as of `now`) and removes upload files
    /// that no upload record names. Returns the UUIDs and paths removed.
    public func expire(now: Date = Date()) async throws -> [String] {
        var removed: [String] = []
        // Listed before the records are read: a file made after the listing is not looked at, and
        // one listed already had its record unless its create failed.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let uploads = try await records.uploads()
        for upload in uploads where upload.node == blobs.nodeName && now.timeIntervalSince(upload.created) > Self.lifetime {
            try await abandon(uuid: upload.uuid)
            removed.append(path(of: upload.uuid))
        }
        let known = Set(uploads.map(\.uuid))
        for name in names.sorted() {
            guard let uuid = UUID(uuidString: name), name == BlobStore.fileName(for: uuid), !known.contains(uuid) else { continue }
            if unlink(path(of: uuid)) == 0 { removed.append(path(of: uuid)) }
        }
        return removed
    }

    /// The upload, which must be on this node.
    private func localUpload(_ uuid: UUID) async throws -> Upload {
        let upload = try await records.upload(uuid: uuid)
        guard upload.node == blobs.nodeName else {
            throw BlobError.io("upload \(BlobStore.fileName(for: uuid)) is on node \(upload.node), not \(blobs.nodeName)")
        }
        return upload
    }

    private static func withFile<T>(_ path: String, flags: Int32, _ body: (Int32) throws -> T) throws -> T {
        let fd = open(path, flags | O_CLOEXEC)
        if fd < 0 { throw BlobError.system("open", path, code: errno) }
        defer { close(fd) }
        return try body(fd)
    }

    private static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws {
        if let code = writeAll(fd, bytes) { throw BlobError.system("write", path, code: code) }
    }

    private static func size(_ fd: Int32, _ path: String) throws -> Int64 {
        var info = stat()
        if fstat(fd, &info) != 0 { throw BlobError.system("fstat", path, code: errno) }
        return Int64(info.st_size)
    }
}
