import Foundation
import Logging
import NIOCore
import NIOPosix
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
/// Transfers go through ``HTTPFetcher``, so they have its limits (deadline, least rate, byte cap),
/// its retries, and its resumption: a transfer that drops asks for the rest with `Range`, and one
/// whose process died resumes from its partial file (``BlobStore/beginResumableIngest(key:url:uuid:expectedSHA512:replica:)``).
/// Only the peer's own address is reachable through it, whatever the node's fetch rules say.
public final class PeerClient: Sendable {
    /// What its requests are signed with.
    public let credentials: PeerCredentials
    /// The port every node's peer server listens on.
    public let port: Int
    let limits: HTTPFetcher.Configuration
    /// One event loop in the mesh's namespace, when that is not the process's own.
    private let group: MultiThreadedEventLoopGroup?
    let logger: Logger

    private init(credentials: PeerCredentials, port: Int, limits: HTTPFetcher.Configuration, group: MultiThreadedEventLoopGroup?, logger: Logger) {
        self.credentials = credentials
        self.port = port
        self.limits = limits
        self.group = group
        self.logger = logger
    }

    /// A client whose connections are made in network namespace `namespace` (nil: the process's own).
    public static func make(
        namespace: String?, credentials: PeerCredentials, port: Int, limits: HTTPFetcher.Configuration = HTTPFetcher.Configuration(),
        logger: Logger
    ) async throws -> PeerClient {
        guard let namespace else { return PeerClient(credentials: credentials, port: port, limits: limits, group: nil, logger: logger) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            // The loop's thread enters the namespace for good: the sockets it makes are made there.
            try await group.next().submit { try NetworkNamespace.enter(named: namespace) }.get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        return PeerClient(credentials: credentials, port: port, limits: limits, group: group, logger: logger)
    }

    /// Ends the client's event loop; transfers under way fail.
    public func shutdown() async {
        try? await group?.shutdownGracefully()
    }

    /// The URL of `path` on `peer`.
    func url(_ path: String, on peer: Peer) -> String { "http://\(peer.address):\(port)\(path)" }

    /// A fetcher that reaches `peer` only, signing each request.
    func fetcher(for peer: Peer) -> HTTPFetcher {
        var configuration = limits
        configuration.rules = DestinationRules(allow: [IPRange(.v4(peer.address), length: 32)], deny: [])
        configuration.maxRedirects = 0
        configuration.eventLoopGroup = group
        let credentials = credentials
        let prefix = "http://\(peer.address):\(port)"
        configuration.requestHeaders = { method, url in
            credentials.headers(method: method, path: url.hasPrefix(prefix) ? String(url.dropFirst(prefix.count)) : url)
        }
        return HTTPFetcher(configuration: configuration, logger: logger)
    }

    /// Copies `blob`'s data to `store` from the first of `peers` that has it, verified against the
    /// blob's sha512, and records this node as holding it. Returns the blob.
    public func pull(
        _ blob: Blob, from peers: [Peer], into store: BlobStore, progress: @escaping @Sendable (FetchProgress) -> Void = { _ in }
    ) async throws -> Blob {
        guard blob.state == .created, let sha512 = blob.sha512 else {
            throw BlobError.io("blob \(blob.uuid.lowercasedString) is \(blob.state.rawValue) with no checksum yet; only created blobs are copied")
        }
        guard !peers.isEmpty else {
            throw BlobError.missing(blob: blob.uuid, path: "no node holding it is reachable (locations: \(blob.locations.joined(separator: ", ")))")
        }
        let path = "/v1/blobs/\(blob.uuid.lowercasedString)"
        // The checkpoint names the blob, not a peer: a transfer that died resumes from any of them.
        let key = "peer-\(blob.uuid.lowercasedString)"
        let checkpointURL = "sfnode-peer:\(path)"
        let (first, resume) = try await store.beginResumableIngest(
            key: key, url: checkpointURL, uuid: blob.uuid, expectedSHA512: sha512, replica: true)
        let ingest = Mutex(first)
        let validator = Mutex(resume?.validator)
        var failures: [String] = []
        for peer in peers {
            let held = ingest.withLock { $0.bytesWritten }
            let resuming = validator.withLock { current in current.map { FetchResume(offset: held, validator: $0) } }
            if let resuming, resuming.offset > 0 {
                logger.info("resuming a blob transfer", metadata: ["blob.uuid": "\(blob.uuid.lowercasedString)", "peer.node": "\(peer.name)", "fetch.offset": "\(resuming.offset)"])
            }
            do {
                _ = try await fetcher(for: peer).fetch(
                    url(path, on: peer), hashing: false, resuming: resuming.flatMap { $0.offset > 0 ? $0 : nil }, progress: progress,
                    validated: { given in
                        validator.withLock { $0 = given }
                        try store.recordCheckpoint(key: key, url: checkpointURL, blob: blob.uuid, validator: given)
                    },
                    restart: {
                        // The same partial file starts again: let go of it before it is made anew.
                        try ingest.withLock { current in
                            current.abandon()
                            current = try store.beginIngest(uuid: blob.uuid, expectedSHA512: sha512, replica: true)
                        }
                    },
                    into: { bytes in try ingest.withLock { try $0.append(bytes) } })
                store.clearCheckpoint(key: key)
                let copied = try await ingest.withLock { $0 }.finish()
                logger.info("copied a blob from another node", metadata: ["blob.uuid": "\(blob.uuid.lowercasedString)", "peer.node": "\(peer.name)", "blob.size": "\(blob.size)"])
                return copied
            } catch let error as BlobError {
                // A checksum that does not match, a full disk: no other peer mends these.
                ingest.withLock { $0.abandon() }
                store.clearCheckpoint(key: key)
                throw error
            } catch {
                logger.warning("could not copy a blob from a node; trying the next", metadata: ["blob.uuid": "\(blob.uuid.lowercasedString)", "peer.node": "\(peer.name)", "error": "\(error)"])
                failures.append("\(peer): \(error)")
            }
        }
        ingest.withLock { $0.abandon() }
        store.clearCheckpoint(key: key)
        throw FetchError.transport(
            url: checkpointURL, message: "no node holding blob \(blob.uuid.lowercasedString) could send it: \(failures.joined(separator: "; "))")
    }

    /// The last `length` bytes (at most ``PeerServer/maximumConsoleLength``) of an instance's
    /// console log on `peer`.
    public func consoleTail(of instance: UUID, length: Int, on peer: Peer) async throws -> Data {
        let wanted = min(max(length, 0), PeerServer.maximumConsoleLength)
        let data = Mutex(Data())
        _ = try await fetcher(for: peer).fetch(
            url("/v1/instances/\(instance.uuidString.lowercased())/console?length=\(wanted)", on: peer), hashing: false,
            restart: { data.withLock { $0.removeAll() } },
            into: { bytes in
                try data.withLock { held in
                    guard held.count + bytes.count <= wanted else {
                        throw BlobError.invalidRange("node \(peer.name) sent more than the \(wanted) console bytes asked for")
                    }
                    held.append(contentsOf: bytes)
                }
            })
        return data.withLock { $0 }
    }
}
