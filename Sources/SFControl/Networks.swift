import Foundation
import SFStore
import SFSystem
import Synchronization

extension Control {
    /// Creates a network and queues its `network.create` for the network node.
    ///
    /// - Parameters:
    ///   - netblock: the network's range, checked as Shaken Fist checks it (see ``checkedNetblock(_:)``).
    ///   - provideDNS: whether the network's dnsmasq answers DNS for its instances' names on the router.
    ///   - spoofFilter: whether guests' taps drop forged frames; only the admin may turn it off, which
    ///     the caller (the API) checks.
    public func createNetwork(
        name: String, netblock: String, provideDHCP: Bool = true, provideNAT: Bool = true, provideDNS: Bool = false,
        spoofFilter: Bool = true, namespace: String? = nil, requestID: String? = nil
    ) async throws -> Network {
        try Names.checkName(name, "network name")
        let namespace = namespace ?? settings.defaultNamespace
        try Names.checkName(namespace, "namespace")
        let prefix = try Self.checkedNetblock(netblock)
        try await checkNetworkQuota(namespace: namespace, provideNAT: provideNAT)
        let uuid = UUID()
        let order = try JobOrder(.networkCreate, .network(uuid), requestID: requestID)
        return try await controlled {
            try await store.createNetwork(
                uuid: uuid, name: name, namespace: namespace, netblock: prefix, provideDHCP: provideDHCP,
                provideNAT: provideNAT, provideDNS: provideDNS, spoofFilter: spoofFilter, jobs: [order.job(for: .networkNode)])
        }
    }

    /// The smallest network Shaken Fist makes: the network, router (index 1) and broadcast addresses
    /// are reserved, which leaves a /29 five addresses for instances.
    public static let smallestNetworkLength = 29
    /// The largest network sfnode makes: a /8 already has 16 million addresses to allocate from.
    public static let largestNetworkLength = 8

    /// `text` as a network's range, refused as Shaken Fist's strict `ipaddress.ip_network` refuses
    /// it (with its messages): host bits set, text that is no network, anything below a /29. IPv6
    /// parses in Shaken Fist but nothing after it works with it; sfnode says so at once. Above
    /// Shaken Fist, sfnode refuses anything larger than a /8.
    public static func checkedNetblock(_ text: String) throws -> IPv4Prefix {
        guard let prefix = IPv4Prefix(text) else {
            if text.contains(":"), IPRange(text) != nil {
                throw ControlError.invalid("cannot parse netblock: \(text) is an IPv6 network; sfnode networks are IPv4 only")
            }
            throw ControlError.invalid("cannot parse netblock: '\(text)' does not appear to be an IPv4 or IPv6 network")
        }
        guard prefix.network == prefix else { throw ControlError.invalid("cannot parse netblock: \(text) has host bits set") }
        guard prefix.length <= smallestNetworkLength else {
            throw ControlError.invalid("network is below minimum size of /\(smallestNetworkLength)")
        }
        guard prefix.length >= largestNetworkLength else {
            throw ControlError.invalid("network \(text) is above the maximum size of /\(largestNetworkLength)")
        }
        return prefix
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

extension Control {
    /// Pings `address` from inside the network's namespace on this node (the network node), as
    /// Shaken Fist's `GET /networks/<ref>/ping/<address>` does, with its checks in its order: the
    /// network (not found), its state, the address, the address within the netblock (the network,
    /// router and broadcast addresses included). A network that cannot become ready (error,
    /// delete-wait, deleted) is a conflict; only one still being made is not ready (406 makes
    /// Shaken Fist's client retry for up to an hour).
    ///
    /// - Parameters:
    ///   - count: echo requests to send, 1 to ``ICMPEcho/maximumCount``; nil for
    ///     ``ControlSettings/pingCount``.
    ///   - interval: the gap between two requests; nil for ``ControlSettings/pingInterval``.
    /// - Returns: iputils' output lines, the statistics included.
    public func ping(
        network reference: String, address: String, namespace: String? = nil, count: Int? = nil, interval: Duration? = nil
    ) async throws -> ICMPEcho.Report {
        let count = count ?? settings.pingCount
        let interval = interval ?? settings.pingInterval
        guard (1...ICMPEcho.maximumCount).contains(count), ICMPEcho.intervalRange.contains(interval) else {
            throw ControlError.invalid(
                "a ping is 1 to \(ICMPEcho.maximumCount) requests \(ICMPEcho.intervalRange.lowerBound) to \(ICMPEcho.intervalRange.upperBound) apart")
        }
        let network = try await createdNetwork(reference, namespace: namespace)
        guard let target = IPAddress(address) else { throw ControlError.invalid("invalid address") }
        guard case .v4(let target4) = target, network.netblock.contains(target4) else {
            throw ControlError.invalid("ping request for address outside network block")
        }
        let namespaceName = settings.networkNamespacePrefix + network.uuid.lowercasedString
        guard NetworkNamespace.exists(named: namespaceName) else {
            throw ControlError.conflict(
                "network \(network.uuid.lowercasedString) has no namespace \(namespaceName) on this node; ping runs on the network node")
        }
        let limit = settings.pingsAtOnce
        guard Self.pingsInFlight.withLock({ running in
            guard running < limit else { return false }
            running += 1
            return true
        }) else {
            throw ControlError(.tooBusy, "\(limit) pings are already running (SFNODE_PINGS_AT_ONCE); try again when one has finished")
        }
        defer { Self.pingsInFlight.withLock { $0 -= 1 } }
        return try await controlled {
            // A thread of its own inside the namespace: the raw socket must be opened there, and
            // the run blocks for count × interval, which must not hold a cooperative thread.
            let thread = try await NamespaceExecutor.start(namespace: namespaceName)
            return try await thread.executor.run { try ICMPEcho.ping(target4, count: count, interval: interval) }
        }
    }

    /// Pings running in this process, against ``ControlSettings/pingsAtOnce``: each holds a thread.
    private static let pingsInFlight = Mutex(0)
}

extension Control {
    /// Adds or replaces one of the network's extra DNS records (Shaken Fist's
    /// `POST /networks/<ref>/dns`): `name` then resolves to `value` on the network's DNS, and a
    /// name without a dot also as `<name>.<namespace>.<zone>`. Unlike Shaken Fist, the value must
    /// be an IPv4 address (dnsmasq's hosts file holds nothing else), and errors are 400, not 406.
    public func setNetworkDNSEntry(
        network reference: String, name: String, value: String, namespace: String? = nil, requestID: String? = nil
    ) async throws {
        let network = try await dnsNetwork(reference, namespace: namespace)
        let name = try Self.checkedDNSName(name)
        guard let address = IPv4Address(value) else { throw ControlError.invalid("invalid DNS value: '\(value)' is not an IPv4 address") }
        let entries = try await controlled { try await store.networkDNSEntries(uuid: network.uuid) }
        if entries[name] == nil, entries.count >= settings.networkDNSEntries {
            throw ControlError.invalid(
                "network \(network.uuid.lowercasedString) already has \(entries.count) DNS entries, the most SFNODE_NETWORK_DNS_ENTRIES allows")
        }
        let order = try JobOrder(.networkRefresh, .network(network.uuid), requestID: requestID)
        try await controlled {
            try await store.setNetworkDNSEntry(
                uuid: network.uuid, name: name, address: address, limit: settings.networkDNSEntries, jobs: [order.job(for: .networkNode)])
        }
    }

    /// Removes one of the network's extra DNS records; removing a name it does not have is not an error.
    public func deleteNetworkDNSEntry(network reference: String, name: String, namespace: String? = nil, requestID: String? = nil) async throws {
        let network = try await dnsNetwork(reference, namespace: namespace)
        let name = try Self.checkedDNSName(name)
        guard try await controlled({ try await store.networkDNSEntries(uuid: network.uuid) })[name] != nil else { return }
        let order = try JobOrder(.networkRefresh, .network(network.uuid), requestID: requestID)
        try await controlled {
            try await store.setNetworkDNSEntry(
                uuid: network.uuid, name: name, address: nil, limit: settings.networkDNSEntries, jobs: [order.job(for: .networkNode)])
        }
    }

    /// The network `reference` names, refused unless it is created: 406 while it is being made (the
    /// client retries), 409 once it never will be.
    private func createdNetwork(_ reference: String, namespace: String?) async throws -> Network {
        let network = try await self.network(reference, namespace: namespace)
        switch network.state {
        case .created: break
        case .initial: throw ControlError.notReady("network \(network.uuid.lowercasedString) is not ready (\(network.state.rawValue))")
        case .deleteWait, .deleted, .error:
            throw ControlError.conflict("network \(network.uuid.lowercasedString) is not ready (\(network.state.rawValue))")
        }
        return network
    }

    /// The network an extra-record call names, which must be created and provide DNS.
    private func dnsNetwork(_ reference: String, namespace: String?) async throws -> Network {
        let network = try await createdNetwork(reference, namespace: namespace)
        guard network.provideDNS else { throw ControlError.invalid("network does not provide DNS") }
        return network
    }

    /// `text` as a host name dnsmasq can hold: labels of letters, digits and '-' (not first or
    /// last), 1 to 63 bytes each, 253 in all; lower-cased.
    static func checkedDNSName(_ text: String) throws -> String {
        let name = text.lowercased()
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...253).contains(name.utf8.count),
            labels.allSatisfy({ label in
                (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                    && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
            })
        else { throw ControlError.invalid("invalid DNS name") }
        return name
    }
}
