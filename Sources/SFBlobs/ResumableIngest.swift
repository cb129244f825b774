import Crypto
import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// Where a download into a blob stands, written beside the blob's partial file as
/// `fetch-<key>.json`, so that a process that starts after one died mid-download resumes it rather
/// than starting from byte 0 (an image of gigabytes, killed repeatedly, would otherwise never arrive).
public struct FetchCheckpoint: Codable, Sendable, Equatable {
    /// The URL being downloaded.
    public var url: String
    /// The blob whose partial file holds the bytes so far.
    public var blob: UUID
    /// The validator the server sent with them (``FetchResume/validator``); nil when it sent none,
    /// and then nothing can be resumed.
    public var validator: String?
}

extension BlobStore {
    /// The checkpoint file of downloads named `key` (one at a time per key: an artifact's fetch).
    func checkpointPath(key: String) -> String { directory + "/fetch-\(key).json" }

    /// Where to write a download of `url` named `key`: the partial blob a dead process left for it,
    /// with the point to resume from, when its checkpoint names this URL and a validator and its
    /// partial file is still there (``sweep()`` removes both once abandoned); else a new ingest. The
    /// bytes already held are hashed again here (the hash state died with the process), off the
    /// cooperative pool. `uuid`, `expectedSHA512` and `replica` are as for
    /// ``beginIngest(uuid:expectedSHA512:deduplicate:replica:)``; with `uuid`, only a checkpoint of
    /// that blob is resumed.
    public func beginResumableIngest(
        key: String, url: String, uuid: UUID? = nil, expectedSHA512: String? = nil, replica: Bool = false
    ) async throws -> (BlobIngest, FetchResume?) {
        try ensureDirectory()
        let path = checkpointPath(key: key)
        if let data = FileManager.default.contents(atPath: path), let checkpoint = try? JSONDecoder().decode(FetchCheckpoint.self, from: data),
            checkpoint.url == url, let validator = checkpoint.validator, uuid == nil || checkpoint.blob == uuid
        {
            let partial = partialPath(of: checkpoint.blob)
            let expected = expectedSHA512?.lowercased()
            let resumed = try await runBlocking { () throws -> BlobIngest? in
                let fd = open(partial, O_RDWR | O_APPEND | O_CLOEXEC)
                guard fd >= 0 else { return nil }
                var hasher = SHA512()
                var total: Int64 = 0
                let read: Void? = try? readChunks(fd, partial) { chunk in
                    hasher.update(bufferPointer: chunk)
                    total += Int64(chunk.count)
                }
                guard read != nil, total > 0, let hash = try? BackgroundHasher(continuing: hasher) else {
                    close(fd)
                    return nil
                }
                return BlobIngest(
                    store: self, uuid: checkpoint.blob, partialPath: partial, expectedSHA512: expected, replica: replica, fd: fd,
                    hash: hash, written: total)
            }
            if let resumed { return (resumed, FetchResume(offset: resumed.bytesWritten, validator: validator)) }
        }
        return (try beginIngest(uuid: uuid ?? UUID(), expectedSHA512: expectedSHA512, replica: replica), nil)
    }

    /// Records that the download named `key` writes `url` into `blob`'s partial file, under
    /// `validator`; replaced whole (a crash leaves the old checkpoint or the new one).
    public func recordCheckpoint(key: String, url: String, blob: UUID, validator: String?) throws {
        let data = try JSONEncoder().encode(FetchCheckpoint(url: url, blob: blob, validator: validator))
        try AtomicFile.write(data, to: checkpointPath(key: key), mode: 0o600)
    }

    /// Forgets the download named `key`: it finished, or failed in a way that must start over.
    public func clearCheckpoint(key: String) {
        unlink(checkpointPath(key: key))
    }
}
