import Crypto
import Foundation
import SFStore
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One blob's data being written: bytes go to `<uuid>.partial` and into a running sha512, and
/// ``finish(info:)`` turns the file into a blob (or finds the blob that already has this content).
/// Call ``finish(info:)`` or ``abandon()`` once; an ingest dropped without either removes its
/// partial file.
///
/// `@unchecked Sendable` is safe because every access to the mutable state (descriptor, hash,
/// count) holds `lock`: appends from different tasks are serialised, one writer at a time, so the
/// file and the hash always agree. (A `Mutex<State>` cannot be used: region checking ties the
/// caller's byte buffer to the state once the hasher has read it.)
public final class BlobIngest: @unchecked Sendable {
    /// The UUID the blob gets unless its content is already a blob.
    public let uuid: UUID
    /// The file being written.
    public let partialPath: String
    let store: BlobStore
    let expectedSHA512: String?
    /// Whether content the store already has becomes that blob rather than this one.
    let deduplicate: Bool
    /// Whether the data is this node's copy of an existing blob (``BlobStore/beginIngest(uuid:expectedSHA512:deduplicate:replica:)``).
    let replica: Bool
    private let lock = Mutex(())
    private var state: State
    /// The sha512 of the bytes, computed beside the writes (see ``BackgroundHasher``).
    private let hash: BackgroundHasher

    private struct State {
        var fd: Int32
        var written: Int64 = 0
        /// False once finished or abandoned: the descriptor is closed.
        var open = true
    }

    /// An ingest writing to `fd`, hashing through `hash`; `written` is what the file holds already
    /// (a resumed download's bytes, which `hash` has hashed), nothing by default.
    init(
        store: BlobStore, uuid: UUID, partialPath: String, expectedSHA512: String?, deduplicate: Bool = true, replica: Bool = false,
        fd: Int32, hash: BackgroundHasher, written: Int64 = 0
    ) {
        self.deduplicate = deduplicate
        self.replica = replica
        self.store = store
        self.uuid = uuid
        self.partialPath = partialPath
        self.expectedSHA512 = expectedSHA512
        self.state = State(fd: fd, written: written)
        self.hash = hash
    }

    /// Runs `body` on the state while holding the lock.
    private func locked<T>(_ body: (inout State) throws -> T) rethrows -> T {
        try lock.withLock { _ in try body(&state) }
    }

    deinit {
        locked { state in
            guard state.open else { return }
            close(state.fd)
            unlink(partialPath)
        }
        hash.cancel()
    }

    /// Bytes appended so far.
    public var bytesWritten: Int64 { locked { $0.written } }

    /// Appends `bytes` to the file and the hash. A full disk is ``BlobError/diskFull(path:)``.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        try locked { state in
            guard state.open else { throw BlobError.io("blob \(BlobStore.fileName(for: uuid)): append after finish or abandon") }
            guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
            var done = 0
            while done < bytes.count {
                let n = write(state.fd, base + done, bytes.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw BlobError.system("write", partialPath, code: errno)
                }
                done += n
            }
            hash.feed(bytes)
            state.written += Int64(bytes.count)
        }
    }

    /// Appends `bytes` to the file and the hash.
    public func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append($0) }
    }

    /// Appends `bytes` (such as `Data`) to the file and the hash, without copying when they are
    /// contiguous.
    public func append(contentsOf bytes: some Sequence<UInt8>) throws {
        let done: Void? = try bytes.withContiguousStorageIfAvailable { try append(UnsafeRawBufferPointer($0)) }
        if done == nil { try append(Array(bytes)) }
    }

    /// Syncs the file and makes it a blob: checks it against the expected sha512 (a mismatch is
    /// ``BlobError/checksumMismatch(expected:actual:)`` and leaves neither file nor blob), then
    /// returns the created blob that already has this content, or records a new one with `info`,
    /// moves the file into place and marks it created on this node.
    public func finish(info: [String: JSONValue] = [:]) async throws -> Blob {
        // fsync of a file of gigabytes can take seconds: on a blocking-work thread, not the pool.
        let (sha512, size) = try await runBlocking { try self.seal() }
        return try await store.commit(
            uuid: uuid, partial: partialPath, expectedSHA512: expectedSHA512, sha512: sha512, size: size, info: info,
            deduplicate: deduplicate, replica: replica)
    }

    /// Closes and syncs the file and returns its sha512 and size; blocks for the fsync.
    private func seal() throws -> (String, Int64) {
        try locked { state -> (String, Int64) in
            guard state.open else { throw BlobError.io("blob \(BlobStore.fileName(for: uuid)): finished twice or after abandon") }
            state.open = false
            defer { close(state.fd) }
            if fsync(state.fd) != 0 {
                let error = BlobError.system("fsync", partialPath, code: errno)
                unlink(partialPath)
                hash.cancel()
                throw error
            }
            return (Self.hex(hash.finish()), state.written)
        }
    }

    /// Stops writing and removes the partial file. Idempotent.
    public func abandon() {
        locked { state in
            guard state.open else { return }
            state.open = false
            close(state.fd)
            unlink(partialPath)
        }
        hash.cancel()
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
