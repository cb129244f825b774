import Foundation
import SFStore

/// A job being run, as `GET /admin/locks` shows it: sfnode's leases take the place of Shaken
/// Fist's etcd locks (one per object a node is working on).
public struct Lease: Sendable, Equatable {
    /// Shaken Fist's key shape: `/sflocks/sf/<object type>/<object id>` (or `/sflocks/sf/job/<id>`
    /// for a job with no object).
    public let key: String
    /// The job's id.
    public let id: String
    /// The node holding it.
    public let node: String
    /// The holding process.
    public let pid: Int?
    /// What it is doing: the job's kind.
    public let operation: String
    /// When the lease lapses unless renewed.
    public let expires: Date?
}

extension Control {
    /// The cluster's nodes, by name.
    public func nodes() async throws -> [Node] {
        try await controlled { try await store.nodes() }
    }

    /// The node called `name`, or 404 `node not found`.
    public func node(named name: String) async throws -> Node {
        guard let node = try await controlled({ try await store.node(named: name) }) else { throw ControlError.notFound("node not found") }
        return node
    }

    /// Whether the node checked in within ``ControlSettings/checkInTimeout`` of `now`.
    public func isLive(_ node: Node, now: Date = Date()) -> Bool {
        let timeout = Double(settings.checkInTimeout.components.seconds)
        return node.lastSeen.map { now.timeIntervalSince($0) <= timeout } ?? false
    }

    /// The leases held now: one per running job.
    public func leases() async throws -> [Lease] {
        try await controlled { try await store.jobs(states: [.running], limit: 10_000) }.map { job in
            // The owner is "<node>:<pid>:<nonce>" (JobRunner); the node name has no ':'.
            let owner = (job.leaseOwner ?? "").split(separator: ":", omittingEmptySubsequences: false)
            let object = job.objectKey.map { $0.replacingOccurrences(of: ":", with: "/") } ?? "job/\(job.id)"
            return Lease(
                key: "/sflocks/sf/\(object)", id: String(job.id), node: owner.first.map(String.init) ?? "",
                pid: owner.count > 1 ? Int(owner[1]) : nil, operation: job.kind, expires: job.leaseExpiry)
        }
    }
}
