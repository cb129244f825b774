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
        let now = Date()
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
            guard let seen = node.lastSeen, now.timeIntervalSince(seen) <= Double(timeout) else {
                audit.append("schedule rejected \(node.name): not checked in for \(timeout) s")
                continue
            }
            guard let capacity = node.capacity else {
                audit.append("schedule rejected \(node.name): it has reported no capacity")
                continue
            }
            var load = NodeLoad()
            for instance in live where instance.node == node.name {
                load.cpus += instance.cpus
                load.memoryMiB += instance.memory
                load.diskGiB += instance.diskSpec.reduce(0) { $0 + ($1.size ?? 0) }
            }
            let askedDisk = request.disks.reduce(0) { $0 + ($1.size ?? 0) }
            let cpuLimit = Int(Double(capacity.cpus) * settings.cpuOvercommit)
            let memoryLimit = Int(Double(capacity.memoryMiB) * settings.memoryOvercommit)
            if load.cpus + request.cpus > cpuLimit {
                audit.append("schedule rejected \(node.name): \(load.cpus) of \(cpuLimit) vCPUs in use, \(request.cpus) more do not fit")
            } else if load.memoryMiB + request.memoryMiB > memoryLimit {
                audit.append("schedule rejected \(node.name): \(load.memoryMiB) of \(memoryLimit) MiB in use, \(request.memoryMiB) more do not fit")
            } else if load.diskGiB + askedDisk > capacity.diskGiB {
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
                    for case .string(let tag) in tags?.arrayValue ?? [] { score += affinity[tag] ?? 0 }
                }
            }
            let free = Int(Double(node.capacity?.cpus ?? 0) * settings.cpuOvercommit) - load.cpus
            if let current = best, current.score > score || (current.score == score && current.free >= free) { continue }
            best = (node, score, free)
        }
        guard let chosen = best else { throw ControlError(.internal, "placement found candidates but chose none") }
        audit.append(affinity.isEmpty ? "schedule placed on \(chosen.node.name)" : "schedule placed on \(chosen.node.name) (affinity score \(chosen.score))")
        return Placement(node: chosen.node.name, audit: audit)
    }

    /// The `affinity` metadata as tag → score; already validated by ``checkPlacementMetadata(_:)``.
    static func affinity(_ metadata: [String: JSONValue]) -> [String: Int] {
        guard case .object(let fields)? = metadata["affinity"] else { return [:] }
        return fields.compactMapValues { value in
            if case .number(let number) = value { return Int(number) }
            return value.stringValue.flatMap { Int($0) }
        }
    }

    /// Refuses `tags` that are not a list of strings and `affinity` that is not an object of
    /// integers, as Shaken Fist does.
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
            for value in fields.values {
                let isInteger: Bool
                switch value {
                case .number(let number): isInteger = number == number.rounded()
                case .string(let text): isInteger = Int(text) != nil
                default: isInteger = false
                }
                guard isInteger else { throw ControlError.invalid("affinity dictionary values should be integers") }
            }
        }
    }
}
