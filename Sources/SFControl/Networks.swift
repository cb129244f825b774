import Foundation
import SFStore
import SFSystem

extension Control {
    /// Creates a network and queues its `network.create` for the network node.
    ///
    /// - Parameters:
    ///   - netblock: the network's range, such as `10.0.0.0/24` (host bits are cleared); /8 to /30.
    ///   - spoofFilter: whether guests' taps drop forged frames; only the admin may turn it off, which
    ///     the caller (the API) checks.
    public func createNetwork(
        name: String, netblock: String, provideDHCP: Bool = true, provideNAT: Bool = true, spoofFilter: Bool = true,
        namespace: String? = nil, requestID: String? = nil
    ) async throws -> Network {
        try Names.checkName(name, "network name")
        let namespace = namespace ?? settings.defaultNamespace
        try Names.checkName(namespace, "namespace")
        guard let prefix = IPv4Prefix(netblock) else {
            throw ControlError.invalid("netblock '\(netblock)' is not an IPv4 range such as 10.0.0.0/24")
        }
        guard (8...30).contains(prefix.length) else {
            throw ControlError.invalid("netblock \(netblock) is a /\(prefix.length); a network needs a /8 to a /30")
        }
        try await checkNetworkQuota(namespace: namespace, provideNAT: provideNAT)
        let uuid = UUID()
        let order = try JobOrder(.networkCreate, .network(uuid), requestID: requestID)
        return try await controlled {
            try await store.createNetwork(
                uuid: uuid, name: name, namespace: namespace, netblock: prefix, provideDHCP: provideDHCP,
                provideNAT: provideNAT, spoofFilter: spoofFilter, jobs: [order.job(for: .networkNode)])
        }
    }

    /// The networks of a namespace (all when nil), oldest first; deleted ones only when asked.
    public func networks(namespace: String?, includeDeleted: Bool = false) async throws -> [Network] {
        try await controlled {
            try await store.networks(namespace: namespace).filter { includeDeleted || $0.state != .deleted }
        }
    }

    /// The network `reference` names: its UUID, or its name when that is unique among the live
    /// networks of `namespace`. Another namespace's network is not found, never forbidden.
    public func network(_ reference: String, namespace: String? = nil) async throws -> Network {
        try await controlled {
            if let uuid = UUID(uuidString: reference) {
                let network = try await store.network(uuid: uuid)
                guard namespace == nil || network.namespace == namespace else {
                    throw ControlError.notFound("network \(reference) not found")
                }
                return network
            }
            let named = try await store.networks(namespace: namespace).filter { $0.name == reference && $0.state != .deleted }
            guard let network = named.first else { throw ControlError.notFound("network \(reference) not found") }
            guard named.count == 1 else {
                throw ControlError.invalid("\(named.count) networks are named '\(reference)'; name one by UUID: \(named.map { $0.uuid.lowercasedString }.joined(separator: ", "))")
            }
            return network
        }
    }

    /// Queues the network's deletion. A network with interfaces waits (delete-wait) until the last
    /// goes; deleting a deleted network changes nothing.
    public func deleteNetwork(_ reference: String, namespace: String? = nil, requestID: String? = nil) async throws -> Network {
        let network = try await self.network(reference, namespace: namespace)
        if network.state == .deleted { return network }
        let order = try JobOrder(.networkDelete, .network(network.uuid), requestID: requestID)
        return try await controlled {
            _ = try await store.enqueue([order.job(for: .networkNode)])
            return network
        }
    }

    /// The live interfaces on a network.
    public func interfaces(ofNetwork reference: String, namespace: String? = nil) async throws -> [Interface] {
        let network = try await self.network(reference, namespace: namespace)
        return try await controlled { try await store.interfaces(networkUUID: network.uuid) }
    }
}
