import Foundation
import Logging
import SFBlobs
import SFStore
import SFSystem
import ServiceLifecycle

/// The other nodes of the cluster as places to copy blob data from, over the mesh.
public struct BlobPeers: Sendable {
    public let client: PeerClient
    let nodes: any NodeStore
    let nodeName: String

    public init(client: PeerClient, nodes: any NodeStore, nodeName: String) {
        self.client = client
        self.nodes = nodes
        self.nodeName = nodeName
    }

    /// The nodes holding `blob` that this one can ask: in service, with a mesh address, the one seen
    /// most recently first (a node that went missing is asked last, not never: unknown is not gone).
    func holders(of blob: Blob) async throws -> [Peer] {
        let holding = Set(blob.locations).subtracting([nodeName])
        return try await nodes.nodes()
            .filter { holding.contains($0.name) && $0.deleted == nil && $0.meshAddress != nil }
            .sorted { ($0.lastSeen ?? .distantPast) > ($1.lastSeen ?? .distantPast) }
            .compactMap { node in node.meshAddress.map { Peer(name: node.name, address: $0) } }
    }

    /// Copies `blob`'s data into `store` from a node holding it, verified against its sha512.
    func copy(_ blob: Blob, into store: BlobStore, progress: @escaping @Sendable (FetchProgress) -> Void) async throws -> Blob {
        // Its locations as they are now: the node that had it when the job began may have let it go.
        let current = try await store.records.blob(uuid: blob.uuid)
        return try await client.pull(current, from: try await holders(of: current), into: store, progress: progress)
    }
}

/// Serves this node's blobs and console logs to the other nodes, at its mesh address, for as long
/// as the agent runs.
///
/// A server that cannot listen (the mesh address not up yet, the port taken) does not stop the
/// agent: its guests and jobs do not depend on it. It says why and tries again every 10 s; until it
/// listens, other nodes copy from another holder or wait.
public struct PeerServerService: Service {
    let start: @Sendable () async throws -> PeerServer
    let logger: Logger

    public init(logger: Logger, start: @escaping @Sendable () async throws -> PeerServer) {
        self.start = start
        self.logger = logger
    }

    public func run() async throws {
        var server: PeerServer?
        while server == nil && !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                server = try await start()
            } catch {
                logger.error("the peer server cannot listen; other nodes cannot copy blobs from this one until it does (retrying in 10 s)", metadata: ["error": "\(error)"])
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(10)) }
            }
        }
        try? await gracefulShutdown()
        await server?.stop()
    }
}
