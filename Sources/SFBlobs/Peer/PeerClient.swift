import Foundation
import Logging
import SFStore
import SFSystem
import Synchronization

/// Another node of the cluster, as this one reaches it: its name and its mesh address.
public struct Peer: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var address: IPv4Address

    public init(name: String, address: IPv4Address) {
        self.name = name
        self.address = address
    }

    public var description: String { "\(name) (\(address))" }
}

/// Asks other nodes' ``PeerServer``s for blob data and console logs, over the mesh.
///
/// Every connection is made by a thread inside the namespace holding the mesh (``PeerConnection``),
/// so a peer's address is only ever reached over the mesh. A transfer that drops is asked for again
/// from where it stopped (`Range`, with `If-Range` naming the blob, whose data never changes), from
/// the same node or another holder, with backoff; one whose process died resumes from its partial
/// file (``BlobStore/beginResumableIngest(key:url:uuid:expectedSHA512:replica:)``). The data is
/// verified against the blob's sha512 before it becomes this node's copy.
public final class PeerClient: Sendable {
    /// Timings and bounds of the transfers.
    public struct Limits: Sendable {
        /// How long a connection, and each read or write on it, may wait.
        public var timeout: Duration
        /// How many rounds over the holders are made before a transfer fails.
        public var attempts: Int
        /// The wait before the second round; each further round waits twice as long.
        public var firstRetryDelay: Duration
        /// Time allowed for one whole transfer, every round included (SFNODE_FETCH_DEADLINE_SECONDS).
        public var deadline: Duration

        public init(timeout: Duration = .seconds(30), attempts: Int = 5, firstRetryDelay: Duration = .milliseconds(500), deadline: Duration = .seconds(3600)) {
            self.timeout = timeout
            self.attempts = attempts
            self.firstRetryDelay = firstRetryDelay
            self.deadline = deadline
        }
    }

    /// What its requests are signed with.
    public let credentials: PeerCredentials
    /// The port every node's peer server listens on.
    public let port: Int
    let limits: Limits
    /// The thread, inside the mesh's namespace, that opens every connection.
    private let thread: NamespaceExecutor
    let logger: Logger

    private init(credentials: PeerCredentials, port: Int, limits: Limits, thread: NamespaceExecutor, logger: Logger) {
        self.credentials = credentials
        self.port = port
        self.limits = limits
        self.thread = thread
        self.logger = logger
    }

    /// A client whose connections are made in network namespace `namespace` (nil: the process's own).
    public static func make(
        namespace: String?, credentials: PeerCredentials, port: Int, limits: Limits = Limits(), logger: Logger
    ) async throws -> PeerClient {
        PeerClient(
            credentials: credentials, port: port, limits: limits, thread: try await NamespaceExecutor.start(namespace: namespace), logger: logger)
    }

    /// One signed `method target` (GET by default) to `peer`; `body` reads the answer (blocking, on
    /// a thread of its own).
    private func exchange<T: Sendable>(
        _ target: String, method: String = "GET", on peer: Peer, extra: [(String, String)] = [],
        _ body: @escaping @Sendable (PeerConnection, PeerResponseHead) throws -> T
    ) async throws -> T {
        let connection = try await PeerConnection.open(to: peer, port: port, from: thread, timeout: limits.timeout)
        let headers = credentials.headers(method: method, path: target) + extra
        // A transfer of gigabytes blocks for minutes: on a thread of its own, never on the shared
        // blocking-work threads that every upload, inspection and file operation waits for.
        let worker = try await ThreadExecutor.start(name: "peer-transfer")
        return try await worker.run {
            let head = try connection.send(method, target, headers: headers)
            return try body(connection, head)
        }
    }

    /// Copies `blob`'s data to `store` from the first of `peers` that sends it whole, verified
    /// against the blob's sha512, and records this node as holding it. Returns the blob.
    public func pull(
        _ blob: Blob, from peers: [Peer], into store: BlobStore, progress: @escaping @Sendable (FetchProgress) -> Void = { _ in }
    ) async throws -> Blob {
        guard blob.state == .created, let sha512 = blob.sha512 else {
            throw BlobError.io("blob \(blob.uuid.lowercasedString) is \(blob.state.rawValue) with no checksum yet; only created blobs are copied")
        }
        guard !peers.isEmpty else {
            throw PeerError.transport(node: "none", message: "no node holding blob \(blob.uuid.lowercasedString) is reachable (locations: \(blob.locations.joined(separator: ", ")))")
        }
        let target = "/v1/blobs/\(blob.uuid.lowercasedString)"
        // Every node serves a blob under this one validator: a transfer resumes from any of them.
        let etag = "\"sfblob-\(blob.uuid.lowercasedString)-\(blob.size)\""
        let key = "peer-\(blob.uuid.lowercasedString)"
        let checkpointURL = "sfnode-peer:\(target)"
        let (first, resume) = try await store.beginResumableIngest(
            key: key, url: checkpointURL, uuid: blob.uuid, expectedSHA512: sha512, replica: true)
        if let resume { logger.info("resuming a blob transfer", metadata: ["blob.uuid": "\(blob.uuid.lowercasedString)", "fetch.offset": "\(resume.offset)"]) }
        try store.recordCheckpoint(key: key, url: checkpointURL, blob: blob.uuid, validator: etag)
        let ingest = IngestSlot(first)
        let deadline = ContinuousClock.now + limits.deadline
        var failures: [String] = []
        var lastRefusal: PeerError?
        var delay = limits.firstRetryDelay
        // A node that refuses (403) or lacks the blob (404) is not asked again.
        var candidates = peers
        do {
            for round in 1...max(1, limits.attempts) {
                for peer in candidates {
                    do {
                        try await transfer(blob, target: target, etag: etag, from: peer, into: ingest, store: store, deadline: deadline, progress: progress)
                        store.clearCheckpoint(key: key)
                        let copied = try await ingest.current.finish()
                        logger.info("copied a blob from another node", metadata: ["blob.uuid": "\(blob.uuid.lowercasedString)", "peer.node": "\(peer.name)", "blob.size": "\(blob.size)"])
                        return copied
                    } catch let error as PeerError {
                        logger.warning("a blob transfer from another node failed; trying again", metadata: [
                            "blob.uuid": "\(blob.uuid.lowercasedString)", "peer.node": "\(peer.name)", "fetch.attempt": "\(round)", "error": "\(error)",
                        ])
                        failures.append("\(error)")
                        if !error.isTransient {
                            candidates.removeAll { $0 == peer }
                            lastRefusal = error
                        }
                    }
                }
                guard !candidates.isEmpty, round < limits.attempts, ContinuousClock.now + delay < deadline else { break }
                try await Task.sleep(for: delay)
                delay *= 2
            }
        } catch {
            // A checksum that does not match, a full disk, cancellation: no other node mends these.
            ingest.current.abandon()
            store.clearCheckpoint(key: key)
            throw error
        }
        ingest.current.abandon()
        store.clearCheckpoint(key: key)
        // Every holder refused or lacked it: that answer stands. Otherwise some may yet send it.
        if candidates.isEmpty, let lastRefusal { throw lastRefusal }
        throw PeerError.transport(
            node: peers.map(\.name).joined(separator: ", "),
            message: "no node holding blob \(blob.uuid.lowercasedString) could send it: \(failures.suffix(4).joined(separator: "; "))")
    }

    /// One request for what `ingest` lacks of `blob`, its answer appended to `ingest`.
    private func transfer(
        _ blob: Blob, target: String, etag: String, from peer: Peer, into ingest: IngestSlot, store: BlobStore,
        deadline: ContinuousClock.Instant, progress: @escaping @Sendable (FetchProgress) -> Void
    ) async throws {
        let held = ingest.current.bytesWritten
        let range: [(String, String)] = held > 0 ? [("Range", "bytes=\(held)-"), ("If-Range", etag)] : []
        try await exchange(target, on: peer, extra: range) { connection, head in
            var start: Int64 = 0
            switch head.status {
            case 206:
                let expected = "bytes \(held)-\(blob.size - 1)/\(blob.size)"
                guard head.headers["content-range"] == expected else {
                    throw PeerError.transport(node: peer.name, message: "asked from byte \(held), answered \(head.headers["content-range"] ?? "no Content-Range")")
                }
                start = held
            case 200:
                if held > 0 {
                    // The whole blob again: the bytes held go.
                    try ingest.startOver { old in
                        old.abandon()
                        return try store.beginIngest(uuid: blob.uuid, expectedSHA512: old.expectedSHA512, replica: true)
                    }
                }
            default:
                throw PeerError.status(node: peer.name, status: head.status, message: connection.reason(head))
            }
            // A node sends what the blob's record says, no more: the size bounds what is written.
            // Compared without adding: a length near Int64.max from a broken peer must not trap.
            guard let length = head.contentLength, length == blob.size - start else {
                throw PeerError.transport(node: peer.name, message: "sent \(head.contentLength.map(String.init) ?? "no") Content-Length from byte \(start) of a blob of \(blob.size)")
            }
            var reporter = start
            try connection.readBody(length, deadline: deadline) { bytes in
                try ingest.current.append(bytes)
                reporter += Int64(bytes.count)
                progress(FetchProgress(bytes: reporter, total: blob.size))
            }
        }
    }

    /// Empties an instance's console log on `peer`.
    public func clearConsole(of instance: UUID, on peer: Peer) async throws {
        try await exchange("/v1/instances/\(instance.uuidString.lowercased())/console", method: "DELETE", on: peer) { connection, head in
            guard head.status == 200 else { throw PeerError.status(node: peer.name, status: head.status, message: connection.reason(head)) }
        }
    }

    /// The last `length` bytes (at most ``PeerServer/maximumConsoleLength``) of an instance's
    /// console log on `peer`.
    public func consoleTail(of instance: UUID, length: Int, on peer: Peer) async throws -> Data {
        let wanted = min(max(length, 0), PeerServer.maximumConsoleLength)
        let deadline = ContinuousClock.now + limits.timeout
        return try await exchange("/v1/instances/\(instance.uuidString.lowercased())/console?length=\(wanted)", on: peer) { connection, head in
            guard head.status == 200 else { throw PeerError.status(node: peer.name, status: head.status, message: connection.reason(head)) }
            guard let count = head.contentLength, count <= Int64(wanted) else {
                throw PeerError.transport(node: peer.name, message: "sent \(head.contentLength.map(String.init) ?? "no") Content-Length for \(wanted) console bytes")
            }
            var data = Data()
            try connection.readBody(count, deadline: deadline) { data.append(contentsOf: $0) }
            return data
        }
    }
}

/// The ingest a transfer writes to, replaced when the transfer must start over.
final class IngestSlot: Sendable {
    private let slot: Mutex<BlobIngest>

    init(_ ingest: BlobIngest) { slot = Mutex(ingest) }

    var current: BlobIngest { slot.withLock { $0 } }

    /// Replaces the ingest with what `fresh` makes of the old one (which it must let go of first:
    /// the new one writes the same partial file).
    func startOver(_ fresh: (BlobIngest) throws -> BlobIngest) throws {
        try slot.withLock { $0 = try fresh($0) }
    }
}
