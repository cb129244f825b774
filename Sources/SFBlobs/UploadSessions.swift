import Crypto
import Foundation
import SFStore
import SFSystem

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
            try Self.withUploadFile(path, flags: O_WRONLY | O_APPEND) { fd in
                // The first chunk starts the upload's running hash; the later ones feed it, in
                // the file's order (UploadHashes).
                let running = UploadHashes.shared.running(for: path, starting: try Self.size(fd, path) == 0)
                running?.lock.lock()
                defer { running?.lock.unlock() }
                let write = { (buffer: UnsafeRawBufferPointer) throws -> Int64 in
                    do {
                        try Self.write(fd, buffer, path)
                        let end = try Self.size(fd, path)
                        if let running, !running.appended(buffer, endingAt: end) { UploadHashes.shared.forget(path) }
                        return end
                    } catch {
                        if running != nil { UploadHashes.shared.forget(path) }
                        throw error
                    }
                }
                if let end = try bytes.withContiguousStorageIfAvailable({ try write(UnsafeRawBufferPointer($0)) }) { return end }
                return try Array(bytes).withUnsafeBytes(write)
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
            try Self.withUploadFile(path, flags: O_WRONLY) { fd in
                UploadHashes.shared.forget(path)
                let size = try Self.size(fd, path)
                guard offset >= 0, offset <= size else {
                    throw BlobError.invalidRange(
                        "upload \(BlobStore.fileName(for: uuid)) holds \(size) bytes; cannot truncate to \(offset)")
                }
                if ftruncate(fd, off_t(offset)) != 0 { throw BlobError.system("ftruncate", path, code: errno) }
                return offset
            }
        }
        return try await records.setUploadReceived(uuid: uuid, size)
    }

    /// Makes the uploaded bytes a blob (identical content gives the existing blob), then forgets the
    /// upload and removes its file. The file is hashed where it is and linked into the blob
    /// directory, never copied; only across filesystems is it copied through a ``BlobIngest``. The
    /// upload stays as it was when that fails.
    public func finish(uuid: UUID) async throws -> Blob {
        _ = try await localUpload(uuid)
        let path = path(of: uuid)
        if let blob = try await finishByLink(uuid: uuid, path: path) {
            try await abandon(uuid: uuid)
            return blob
        }
        let ingest = try blobs.beginIngest()
        do {
            // Reading and hashing gigabytes takes seconds: on a blocking-work thread, not the pool.
            try await runBlocking {
                try Self.withFile(path, flags: O_RDONLY) { fd in try readChunks(fd, path) { try ingest.append($0) } }
            }
        } catch {
            ingest.abandon()
            throw error
        }
        let blob = try await ingest.finish()
        try await abandon(uuid: uuid)
        return blob
    }

    /// The blob of the upload's file without copying it: the file is synced and hashed, then
    /// hard-linked into the blob directory as a partial blob. Nil when the blob directory is on
    /// another filesystem (the caller copies instead). The upload's file stays until the upload is
    /// abandoned, so a failure here loses nothing.
    private func finishByLink(uuid: UUID, path: String) async throws -> Blob? {
        try blobs.ensureDirectory()
        let blobUUID = UUID()
        let partial = blobs.partialPath(of: blobUUID)
        // Reading and hashing gigabytes takes seconds: on a blocking-work thread, not the pool.
        let hashed = try await runBlocking { () throws -> (String, Int64)? in
            // Under the upload's lock until the link is made: an append after it finds the file
            // linked and is refused, so that no byte lands in the blob after it was hashed. A file
            // linked already is a finish that died before it forgot the upload: this one completes it.
            try Self.withUploadFile(path, flags: O_RDONLY, soleLink: false) { fd in
                if fsync(fd) != 0 { throw BlobError.system("fsync", path, code: errno) }
                let size = try Self.size(fd, path)
                let digest: SHA512.Digest
                if let running = UploadHashes.shared.take(path),
                    let fed = running.lock.withLock({ running.digest(ofSize: size) })
                {
                    digest = fed
                } else {
                    // No running hash covers the file (UploadHashes): it is read back once.
                    var hasher = SHA512()
                    var read: Int64 = 0
                    try readChunks(fd, path) { chunk in
                        hasher.update(bufferPointer: chunk)
                        read += Int64(chunk.count)
                    }
                    guard read == size else {
                        throw BlobError.io("upload \(BlobStore.fileName(for: uuid)) changed while it was finished (\(read) bytes read of \(size))")
                    }
                    digest = hasher.finalize()
                }
                guard link(path, partial) == 0 else {
                    if errno == EXDEV { return nil }
                    throw BlobError.system("link \(path) to", partial, code: errno)
                }
                return (BlobIngest.hex(digest), size)
            }
        }
        guard let (sha512, size) = hashed else { return nil }
        return try await blobs.commit(uuid: blobUUID, partial: partial, expectedSHA512: nil, sha512: sha512, size: size, info: [:])
    }

    /// Forgets the upload and removes its file.
    public func abandon(uuid: UUID) async throws {
        try await records.deleteUpload(uuid: uuid)
        let path = path(of: uuid)
        UploadHashes.shared.forget(path)
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

    /// Runs `body` on the upload file `path` opened with `flags`, holding its lock (`flock`), so
    /// that appends, truncations and a finish's hash-and-link never interleave; refused when the
    /// file was removed meanwhile or, with `soleLink`, is no longer the upload's alone (a finish
    /// linked it into the blobs). Appends, truncations and finishes of one upload all run on the
    /// node that holds it, so the lock is the only one they need.
    private static func withUploadFile<T>(_ path: String, flags: Int32, soleLink: Bool = true, _ body: (Int32) throws -> T) throws -> T {
        try withFile(path, flags: flags) { fd in
            while flock(fd, LOCK_EX) != 0 {
                guard errno == EINTR else { throw BlobError.system("flock", path, code: errno) }
            }
            var opened = stat()
            var named = stat()
            if fstat(fd, &opened) != 0 { throw BlobError.system("fstat", path, code: errno) }
            guard stat(path, &named) == 0, named.st_dev == opened.st_dev, named.st_ino == opened.st_ino,
                !soleLink || opened.st_nlink == 1
            else {
                throw BlobError.uploadGone("upload \((path as NSString).lastPathComponent) was finished or removed while this request waited")
            }
            return try body(fd)
        }
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
