import Foundation
import SFStore

/// Where an instance goes, and the audit trail of why.
struct Placement: Sendable {
    var node: String
    /// "schedule …" lines, recorded as audit events on the instance (as Shaken Fist does).
    var audit: [String]
}

/// What a node has left, as placement sees it.
struct NodeLoad: Sendable {
    var cpus = 0
    var memoryMiB = 0
    var diskGiB = 0
}

extension Control {
    /// Chooses a hypervisor for `request`: one that checked in within the timeout and has room for
    /// its vCPUs (with the overcommit ratio), memory (likewise) and disks. `force_placement` names
    /// the node outright (it must still be alive and have room). Among the rest, Shaken Fist's
    /// affinity metadata (tag → score, summed over the instances already on a node that carry
    /// the tag) decides, then the node with the most free vCPUs.
    func place(_ request: InstanceRequest) async throws -> Placement {
        // Check-ins are stamped by the store's clock: ages are measured against it, not this node's.
        let now = try await clock()
        let nodes = try await store.nodes()
        let live = try await store.instances(node: nil).filter { $0.state != .deleted && $0.node != nil }
        var audit: [String] = []
        var candidates = nodes.filter { $0.roles.contains(.hypervisor) }
        if let forced = request.forcePlacement {
            guard let node = candidates.first(where: { $0.name == forced }) else {
                throw ControlError.notFound("node \(forced) not found (or not a hypervisor): it cannot take force_placement")
            }
            candidates = [node]
            audit.append("schedule forced to \(forced)")
        }
        guard !candidates.isEmpty else {
            throw ControlError(.insufficientResources, "no hypervisor has checked in: start the agent first (sfnode serve, the README's first command, or sfnode agent)")
        }
        let timeout = settings.checkInTimeout.components.seconds
        var fits: [(node: Node, load: NodeLoad)] = []
        for node in candidates {
            guard node.deleted == nil else {
                audit.append("schedule rejected \(node.name): it was deleted")
                continue
            }
            guard let seen = node.lastSeen, now.timeIntervalSince(seen) <= Double(timeout) else {
                audit.append("schedule rejected \(node.name): not checked in for \(timeout) s")
                continue
            }
            guard let capacity = node.capacity else {
                audit.append("schedule rejected \(node.name): it has reported no capacity")
                continue
            }
            // Saturating sums: the rows were checked when they were made, but a sum held at Int.max
            // still refuses the node, where an overflow would have killed the process.
            var load = NodeLoad()
            for instance in live where instance.node == node.name {
                load.cpus = saturatingSum(load.cpus, instance.cpus)
                load.memoryMiB = saturatingSum(load.memoryMiB, instance.memory)
                load.diskGiB = saturatingSum(load.diskGiB, instance.diskSpec.reduce(0) { saturatingSum($0, $1.size ?? 0) })
            }
            let askedDisk = request.disks.reduce(0) { saturatingSum($0, $1.size ?? 0) }
            let cpuLimit = Self.scaled(capacity.cpus, by: settings.cpuOvercommit)
            let memoryLimit = Self.scaled(capacity.memoryMiB, by: settings.memoryOvercommit)
            if saturatingSum(load.cpus, request.cpus) > cpuLimit {
                audit.append("schedule rejected \(node.name): \(load.cpus) of \(cpuLimit) vCPUs in use, \(request.cpus) more do not fit")
            } else if saturatingSum(load.memoryMiB, request.memoryMiB) > memoryLimit {
                audit.append("schedule rejected \(node.name): \(load.memoryMiB) of \(memoryLimit) MiB in use, \(request.memoryMiB) more do not fit")
            } else if saturatingSum(load.diskGiB, askedDisk) > capacity.diskGiB {
                audit.append("schedule rejected \(node.name): \(load.diskGiB) of \(capacity.diskGiB) GiB of disk promised, \(askedDisk) more do not fit")
            } else {
                fits.append((node, load))
            }
        }
        guard !fits.isEmpty else {
            throw ControlError(.insufficientResources, "no node has room for the instance: " + audit.joined(separator: "; "))
        }
        let affinity = Self.affinity(request.metadata)
        var best: (node: Node, score: Int, free: Int)?
        for (node, load) in fits {
            var score = 0
            if !affinity.isEmpty {
                for instance in live where instance.node == node.name {
                    let tags = try await store.metadata(objectType: "instance", objectUUID: instance.uuid.lowercasedString)["tags"]
                    // Any number of instances, each with any number of (repeated) tags, may count.
                    for case .string(let tag) in tags?.arrayValue ?? [] { score = saturatingSum(score, affinity[tag] ?? 0) }
                }
            }
            let (difference, overflow) = Self.scaled(node.capacity?.cpus ?? 0, by: settings.cpuOvercommit).subtractingReportingOverflow(load.cpus)
            let free = overflow ? (load.cpus > 0 ? Int.min : Int.max) : difference
            if let current = best, current.score > score || (current.score == score && current.free >= free) { continue }
            best = (node, score, free)
        }
        guard let chosen = best else { throw ControlError(.internal, "placement found candidates but chose none") }
        audit.append(affinity.isEmpty ? "schedule placed on \(chosen.node.name)" : "schedule placed on \(chosen.node.name) (affinity score \(chosen.score))")
        return Placement(node: chosen.node.name, audit: audit)
    }

    /// The `affinity` metadata as tag → score. Values that are not scores in range are left out:
    /// ``checkPlacementMetadata(_:)`` refuses them on the way in, but metadata stored before that
    /// check existed may still hold them.
    static func affinity(_ metadata: [String: JSONValue]) -> [String: Int] {
        guard case .object(let fields)? = metadata["affinity"] else { return [:] }
        return fields.compactMapValues(affinityScore)
    }

    /// An affinity score as Shaken Fist writes it (a whole JSON number, or a string of decimal
    /// digits) within ``InstanceLimits/affinityScore``; nil for anything else (1e300, 1.5, "NaN").
    static func affinityScore(_ value: JSONValue) -> Int? {
        let score: Int?
        switch value {
        case .number: score = value.integerValue
        case .string(let text): score = Int(text)
        default: score = nil
        }
        guard let score, InstanceLimits.affinityScore.contains(score) else { return nil }
        return score
    }

    /// `count` × `ratio`, rounded down, for an overcommitted capacity: 0 when the product is not a
    /// positive number, Int.max when it is past what an Int holds.
    static func scaled(_ count: Int, by ratio: Double) -> Int {
        let product = (Double(count) * ratio).rounded(.down)
        guard product > 0 else { return 0 }  // NaN included
        return Int(exactly: product) ?? Int.max
    }

    /// Refuses `tags` that are not a list of strings and `affinity` that is not an object of
    /// integers, as Shaken Fist does, and scores outside ``InstanceLimits/affinityScore``, which
    /// Shaken Fist (with Python's unbounded integers) does not need to.
    func checkPlacementMetadata(_ metadata: [String: JSONValue]) throws {
        for key in metadata.keys { try checkMetadataKey(key) }
        if let tags = metadata["tags"] {
            guard let list = tags.arrayValue, list.allSatisfy({ $0.stringValue != nil }) else {
                throw ControlError.invalid("value for \"tags\" key should be a JSON list of strings")
            }
        }
        if let affinity = metadata["affinity"] {
            guard case .object(let fields) = affinity else {
                throw ControlError.invalid("value for \"affinity\" key should be a valid JSON dictionary")
            }
            for (tag, value) in fields.sorted(by: { $0.key < $1.key }) where Self.affinityScore(value) == nil {
                let shown = String(((try? value.jsonText()) ?? "\(value)").prefix(40))
                throw ControlError.invalid(
                    "affinity dictionary values should be integers from \(InstanceLimits.affinityScore.lowerBound) to "
                        + "\(InstanceLimits.affinityScore.upperBound): tag \"\(tag.prefix(64))\" has \(shown)")
            }
        }
    }
}

/// `a + b`, held at Int.min or Int.max instead of overflowing.
func saturatingSum(_ a: Int, _ b: Int) -> Int {
    let (sum, overflow) = a.addingReportingOverflow(b)
    guard overflow else { return sum }
    return b > 0 ? Int.max : Int.min
}
