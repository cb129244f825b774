import Crypto
import Foundation
import Synchronization

/// The sha512 of uploads, computed as their chunks arrive, so that finishing one need not read
/// the whole file back to hash it.
///
/// An upload's chunks come in separate requests (each an ``UploadSessions`` of its own), so the
/// running hashes live here, one per upload file, each a ``BackgroundHasher`` on a thread of its
/// own: the hash of one chunk overlaps the receiving and writing of the next. A running hash is
/// only a shortcut. Finishing uses it only when it covers exactly the file's bytes; a truncation,
/// appends that raced each other, a restart of the process or a full table (more than
/// ``limit`` uploads at once) leave the upload without one, and its finish hashes the file
/// itself, as before.
final class UploadHashes: Sendable {
    /// The hashes of this process's uploads.
    static let shared = UploadHashes()

    /// The most uploads hashed as they arrive at once: each holds a thread.
    static let limit = 16
    /// A running hash untouched this long gives its place to a new upload when the table is full
    /// (its client went away without abandoning it).
    static let idleEviction: Duration = .seconds(60)

    /// One upload's hash: its hasher and how many of the file's bytes it has been fed. Appends to
    /// one upload hold `lock` from their write to their feed, so the hash sees the file's order.
    final class Running: @unchecked Sendable {
        let lock = NSLock()
        let hasher: BackgroundHasher
        /// Guarded by `lock`; nil once the hash no longer matches the file.
        var hashed: Int64? = 0
        /// Guarded by the table's mutex.
        var lastUsed = ContinuousClock.now

        init() throws { hasher = try BackgroundHasher() }

        /// Feeds `bytes`, just written so that the file now ends at `end`, when they follow what
        /// was fed; otherwise (another append's bytes came between) the hash no longer matches
        /// the file and ends. False then. Call holding `lock`.
        func appended(_ bytes: UnsafeRawBufferPointer, endingAt end: Int64) -> Bool {
            guard let fed = hashed, end - Int64(bytes.count) == fed else {
                hashed = nil
                hasher.cancel()
                return false
            }
            hasher.feed(bytes)
            hashed = end
            return true
        }

        /// The digest of the file's `size` bytes, when exactly those were fed; else nil, and the
        /// hash ends. Call once, holding `lock`.
        func digest(ofSize size: Int64) -> SHA512.Digest? {
            guard hashed == size else {
                hasher.cancel()
                return nil
            }
            return hasher.finish()
        }
    }

    private let table = Mutex<[String: Running]>([:])

    /// The running hash of the upload file `path`, started when `starting` (its first chunk
    /// comes, at offset 0); nil when it has none and cannot start one.
    func running(for path: String, starting: Bool) -> Running? {
        let now = ContinuousClock.now
        let existing = table.withLock { table -> Running? in
            table[path]?.lastUsed = now
            return table[path]
        }
        if let existing { return existing }
        // The thread is started outside the table's lock.
        guard starting, let started = try? Running() else { return nil }
        let (kept, evicted) = table.withLock { table -> (Bool, Running?) in
            guard table[path] == nil else { return (false, nil) }
            var evicted: Running?
            if table.count >= Self.limit {
                guard
                    let (stalest, oldest) = table.min(by: { $0.value.lastUsed < $1.value.lastUsed }),
                    now - oldest.lastUsed >= Self.idleEviction
                else { return (false, nil) }
                evicted = table.removeValue(forKey: stalest)
            }
            table[path] = started
            return (true, evicted)
        }
        evicted?.hasher.cancel()
        guard kept else {
            started.hasher.cancel()
            return nil
        }
        return started
    }

    /// Ends and forgets the running hash of `path`, if any (a truncation, an abandoned upload).
    func forget(_ path: String) {
        table.withLock { $0.removeValue(forKey: path) }?.hasher.cancel()
    }

    /// Takes the running hash of `path` out of the table, for a finish.
    func take(_ path: String) -> Running? {
        table.withLock { $0.removeValue(forKey: path) }
    }
}
