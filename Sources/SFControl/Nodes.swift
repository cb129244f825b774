import Foundation
import SFStore
import Synchronization

/// The set of missing nodes, read at most once a second: every instance view asks for it.
final class MissingNodeCache: Sendable {
    private let cached = Mutex<(names: Set<String>, read: Date)?>(nil)

    func fresh(now: Date) -> Set<String>? {
        cached.withLock { entry in
            guard let entry, abs(now.timeIntervalSince(entry.read)) < 1 else { return nil }
            return entry.names
        }
    }

    func store(_ names: Set<String>, now: Date) { cached.withLock { $0 = (names, now) } }
}

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

    /// The store's clock, which stamps check-ins: what a node's age is measured against.
    public func clock() async throws -> Date {
        try await controlled { try await store.clock() }
    }

    /// Whether the node checked in within ``ControlSettings/checkInTimeout`` of `now` (by
    /// ``clock()``).
    public func isLive(_ node: Node, now: Date) -> Bool {
        let timeout = Double(settings.checkInTimeout.components.seconds)
        return node.lastSeen.map { now.timeIntervalSince($0) <= timeout } ?? false
    }

    /// The nodes that are `missing` now (in service, not checked in within
    /// ``ControlSettings/checkInTimeout``): their instances are shown with power state `unknown`,
    /// never changed in the store, so that they read as they really are again once the node is back.
    /// Read from the store at most once a second, however many views ask. Ages are measured by the
    /// store's clock, which stamped the check-ins.
    public func missingNodes() async throws -> Set<String> {
        if let cached = nodeStates.fresh(now: Date()) { return cached }
        let now = try await clock()
        let missing = Set(try await nodes().filter { $0.deleted == nil && !isLive($0, now: now) }.map(\.name))
        nodeStates.store(missing, now: Date())
        return missing
    }

    /// The power state an instance is shown with: `unknown` while its node is missing (unknown is
    /// not gone: what the node last said may no longer be true, and nothing is changed), else the
    /// one its node last reported.
    public static func shownPowerState(of instance: Instance, missingNodes: Set<String>) -> String {
        instance.node.map(missingNodes.contains) == true ? "unknown" : instance.powerState.rawValue
    }

    /// The node's state as Shaken Fist names it: `deleted` once an operator deleted it, else
    /// `created` while it checks in and `missing` when it has not lately.
    public func state(of node: Node, now: Date) -> String {
        node.deleted != nil ? "deleted" : isLive(node, now: now) ? "created" : "missing"
    }

    /// Deletes a node as Shaken Fist does: the operator's word that it is gone for good, never a
    /// guess from silence (a node that stops checking in is only `missing`). The node stays listed,
    /// `deleted`, and takes no more instances or jobs; the jobs queued for it fail; its instances
    /// that were made or being made are deleted with their interfaces, which frees their addresses,
    /// MACs and floating addresses, and their networks are refreshed on the network node so DHCP,
    /// DNS and NAT stop serving them; they hold no blobs any more, and the node is no blob's
    /// location. Instances in an error state stay for the operator, as in
    /// Shaken Fist. Running it again changes nothing more.
    @discardableResult public func deleteNode(named name: String, requestID: String? = nil) async throws -> Node {
        let node = try await controlled {
            do {
                return try await store.deleteNode(named: name, reason: "node \(name) was deleted")
            } catch StoreError.notFound {
                throw ControlError.notFound("node not found")
            }
        }
        let gone: [InstanceState] = [.initial, .preflight, .creating, .created]
        let records = try blobRecords()
        var touched = Set<UUID>()
        try await controlled {
            for instance in try await store.instances(node: name) where gone.contains(instance.state) {
                let uuid = instance.uuid.lowercasedString
                for interface in try await store.interfaces(instanceUUID: instance.uuid) where interface.state != .deleted {
                    touched.insert(interface.networkUUID)
                    try await store.setInterfaceState(uuid: interface.uuid, to: .deleted)
                }
                try await store.setInstanceState(uuid: instance.uuid, to: .deleted)
                // Its disks no longer hold their images (the node that had them is gone).
                for reference in try await records.references(holderType: "instance", holderUUID: instance.uuid.uuidString) {
                    try await records.removeReference(reference)
                }
                try await store.record(
                    Event(objectType: "instance", objectUUID: uuid, type: .audit, fqdn: name,
                          message: "instance deleted with its node \(name)", extra: requestID.map { ["request-id": .string($0)] }))
            }
            var jobs: [NewJob] = []
            for network in touched.sorted(by: { $0.uuidString < $1.uuidString }) {
                var job = try JobOrder(.networkRefresh, .network(network), requestID: requestID).job(for: .networkNode)
                // As the agent's refreshes: idempotent and read from the store when run.
                job.objectKey = nil
                jobs.append(job)
            }
            if !jobs.isEmpty { _ = try await store.enqueue(jobs) }
            // What was on the node is not anywhere any more, as Shaken Fist drops it from blob locations.
            for blob in try await records.blobs() where blob.locations.contains(name) {
                try await records.removeBlobLocation(uuid: blob.uuid, node: name)
            }
            try await store.record(
                Event(objectType: "node", objectUUID: name, type: .audit, fqdn: name,
                      message: "node deleted", extra: requestID.map { ["request-id": .string($0)] }))
        }
        return node
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
