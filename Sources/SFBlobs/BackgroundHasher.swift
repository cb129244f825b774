import Crypto
import Foundation
import SFSystem

/// sha512 of a stream of bytes, computed on a thread of its own while the caller goes on receiving
/// and writing the next ones.
///
/// sha512 runs at one core's speed (about 360 MB/s here), and a blob's bytes are received, written
/// and hashed: on one thread those take turns, so a download, an upload or a copy between nodes
/// ran at 60-80 % of sha512 alone. Here the hash takes the second core. Chunks wait in a queue of
/// at most ``maximumQueuedBytes``; a writer that gets that far ahead waits, so memory stays bounded
/// whatever the sender's speed.
///
/// `@unchecked Sendable` because every access to the queue and the hash state holds `condition`,
/// and the hash itself is only touched by the hashing thread until ``finish()`` has it back.
final class BackgroundHasher: @unchecked Sendable {
    /// The most bytes waiting to be hashed before ``feed(_:)`` waits.
    static let maximumQueuedBytes = 32 << 20

    private let condition = NSCondition()
    private var queue: [Data] = []
    private var queuedBytes = 0
    /// No more chunks will come: the thread hashes what is queued and ends.
    private var closing = false
    private var digest: SHA512.Digest?

    /// Starts hashing after `initial` (a resumed download's bytes, hashed already).
    init(continuing initial: SHA512 = SHA512()) throws {
        try OSThread.spawn(name: "blob-sha512") { [self] in run(initial) }
    }

    /// Queues a copy of `bytes` to be hashed, waiting while the queue is full.
    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        let chunk = Data(bytes)
        condition.lock()
        defer { condition.unlock() }
        while queuedBytes > 0 && queuedBytes + chunk.count > Self.maximumQueuedBytes && !closing { condition.wait() }
        guard !closing else { return }
        queue.append(chunk)
        queuedBytes += chunk.count
        condition.broadcast()
    }

    /// Waits for everything fed to be hashed and returns the digest. Call once.
    func finish() -> SHA512.Digest {
        condition.lock()
        defer { condition.unlock() }
        closing = true
        condition.broadcast()
        while digest == nil { condition.wait() }
        return digest ?? SHA512().finalize()
    }

    /// Lets the thread end without hashing what is queued (an ingest abandoned).
    func cancel() {
        condition.lock()
        closing = true
        queue.removeAll()
        queuedBytes = 0
        condition.broadcast()
        condition.unlock()
    }

    private func run(_ initial: SHA512) {
        var hasher = initial
        while true {
            condition.lock()
            while queue.isEmpty && !closing { condition.wait() }
            if queue.isEmpty {
                digest = hasher.finalize()
                condition.broadcast()
                condition.unlock()
                return
            }
            let chunk = queue.removeFirst()
            queuedBytes -= chunk.count
            condition.broadcast()
            condition.unlock()
            hasher.update(data: chunk)
        }
    }
}
