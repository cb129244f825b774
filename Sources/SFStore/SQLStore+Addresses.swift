import Foundation
import SFSystem

/// Interfaces and address management. Allocation runs inside the caller's write transaction, so
/// "find a free address, insert it" cannot interleave with another allocator (in this process the
/// pool's single writer serialises, across processes `BEGIN IMMEDIATE` does); the primary keys of
/// the allocation tables are a second guard against duplicates.
extension SQLStore {
    /// The usable addresses of `prefix` in ascending order: all but the network address, the
    /// broadcast address and .1 (the router / gateway).
    static func usableHosts(_ prefix: IPv4Prefix) -> ClosedRange<UInt32>? {
        let network = prefix.network.address.value
        let broadcast = prefix.broadcast.value
        // first usable is network + 2 (skipping .0 and .1); last is broadcast - 1.
        guard broadcast >= 3, network <= broadcast - 3 else { return nil }
        return (network + 2)...(broadcast - 1)
    }

    /// Why `address` cannot be given out from `prefix`, or nil when it is in the usable range.
    static func unusableReason(_ address: IPv4Address, in prefix: IPv4Prefix, pool: String) -> String? {
        if !prefix.contains(address) { return "\(address) is outside \(pool) (\(prefix.network))" }
        if address == prefix.network.address { return "\(address) is the network address of \(pool)" }
        if address == prefix.broadcast { return "\(address) is the broadcast address of \(pool)" }
        if address == prefix.host(1) { return "\(address) is the router address of \(pool)" }
        return nil
    }

    static func allocateIPv4(
        _ db: any StoreDatabase, network: Network, requested: IPv4Address?, owner: String
    ) throws -> IPv4Address {
        let pool = "network \(network.uuid.lowercasedString)"
        let id = network.uuid.lowercasedString
        if let requested {
            if let reason = unusableReason(requested, in: network.netblock, pool: pool) {
                throw StoreError.addressUnavailable(reason)
            }
            if let holder = try db.fetchOne(
                String.self, sql: "SELECT owner FROM ipv4_allocation WHERE network_uuid = ? AND address = ?",
                arguments: [id, Int64(requested.value)])
            {
                throw StoreError.addressUnavailable("\(requested) in \(pool) is taken by \(holder)")
            }
            try db.execute(IPv4AllocationTable.insert(networkUUID: network.uuid, address: requested, owner: owner))
            return requested
        }
        guard let range = usableHosts(network.netblock) else { throw StoreError.addressesExhausted(pool: pool) }
        let taken = Set(
            try db.fetchAll(Int64.self, sql: "SELECT address FROM ipv4_allocation WHERE network_uuid = ?", arguments: [id]))
        guard let free = range.first(where: { !taken.contains(Int64($0)) }) else {
            throw StoreError.addressesExhausted(pool: "\(pool) (\(network.netblock))")
        }
        try db.execute(IPv4AllocationTable.insert(networkUUID: network.uuid, address: IPv4Address(free), owner: owner))
        return IPv4Address(free)
    }

    static func allocateFloating(
        _ db: any StoreDatabase, range: IPv4Prefix, requested: IPv4Address?, owner: String
    ) throws -> IPv4Address {
        let pool = "floating range \(range.network)"
        if let requested {
            if let reason = unusableReason(requested, in: range, pool: pool) { throw StoreError.addressUnavailable(reason) }
            if let holder = try db.fetchOne(String.self, sql: "SELECT owner FROM floating_allocation WHERE address = ?", arguments: [Int64(requested.value)])
            {
                throw StoreError.addressUnavailable("floating address \(requested) is taken by \(holder)")
            }
            try db.execute(
                sql: "INSERT INTO floating_allocation (address, range, owner) VALUES (?, ?, ?)",
                arguments: [Int64(requested.value), range.network.description, owner])
            return requested
        }
        guard let hosts = usableHosts(range) else { throw StoreError.addressesExhausted(pool: pool) }
        // Floating addresses are unique across ranges, so look at every allocation inside this range.
        let taken = Set(
            try db.fetchAll(Int64.self, sql: "SELECT address FROM floating_allocation WHERE address BETWEEN ? AND ?",
                arguments: [Int64(hosts.lowerBound), Int64(hosts.upperBound)]))
        guard let free = hosts.first(where: { !taken.contains(Int64($0)) }) else {
            throw StoreError.addressesExhausted(pool: pool)
        }
        try db.execute(
            sql: "INSERT INTO floating_allocation (address, range, owner) VALUES (?, ?, ?)",
            arguments: [Int64(free), range.network.description, owner])
        return IPv4Address(free)
    }

    static func allocateMAC(_ db: any StoreDatabase, requested: MACAddress?, owner: String) throws -> MACAddress {
        if let requested {
            if let holder = try db.fetchOne(String.self, sql: "SELECT owner FROM mac_allocation WHERE macaddr = ?", arguments: [requested.description])
            {
                throw StoreError.addressUnavailable("MAC \(requested) is taken by \(holder)")
            }
            try db.execute(
                sql: "INSERT INTO mac_allocation (macaddr, owner) VALUES (?, ?)", arguments: [requested.description, owner])
            return requested
        }
        // 2^24 candidates: a collision is rare, a run of 64 means the space is nearly full.
        for _ in 0..<64 {
            let random = UInt32.random(in: 0...0xff_ffff)
            let mac = try MACAddress(octets: [0x02, 0, 0, UInt8(random >> 16), UInt8(random >> 8 & 0xff), UInt8(random & 0xff)])
            if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM mac_allocation WHERE macaddr = ?", arguments: [mac.description])
                == nil
            {
                try db.execute(
                    sql: "INSERT INTO mac_allocation (macaddr, owner) VALUES (?, ?)", arguments: [mac.description, owner])
                return mac
            }
        }
        throw StoreError.addressesExhausted(pool: "MAC addresses 02:00:00:xx:xx:xx")
    }

    // MARK: - Public address API

    public func allocateIPv4(networkUUID: UUID, requested: IPv4Address?, owner: String) async throws -> IPv4Address {
        try await write { db in
            try Self.allocateIPv4(db, network: try Self.fetchNetwork(db, networkUUID), requested: requested, owner: owner)
        }
    }

    public func releaseIPv4(networkUUID: UUID, address: IPv4Address) async throws {
        try await write { db in
            try db.execute(
                sql: "DELETE FROM ipv4_allocation WHERE network_uuid = ? AND address = ?",
                arguments: [networkUUID.lowercasedString, Int64(address.value)])
        }
    }

    public func allocatedIPv4(networkUUID: UUID) async throws -> [IPv4Address: String] {
        try await read { db in
            var result: [IPv4Address: String] = [:]
            try db.eachRow(IPv4AllocationTable.self, IPv4AllocationTable.select + "WHERE network_uuid = ?", [networkUUID.lowercasedString]) {
                row in
                let allocation = try IPv4AllocationTable.decode(row)
                result[allocation.address] = allocation.owner
            }
            return result
        }
    }

    public func allocateFloating(range: IPv4Prefix, requested: IPv4Address?, owner: String) async throws -> IPv4Address {
        try await write { db in try Self.allocateFloating(db, range: range, requested: requested, owner: owner) }
    }

    public func releaseFloating(_ address: IPv4Address) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM floating_allocation WHERE address = ?", arguments: [Int64(address.value)])
        }
    }

    public func allocateMAC(requested: MACAddress?, owner: String) async throws -> MACAddress {
        try await write { db in try Self.allocateMAC(db, requested: requested, owner: owner) }
    }

    public func macOwner(_ address: MACAddress) async throws -> String? {
        try await read { db in
            try db.fetchOne(String.self, sql: "SELECT owner FROM mac_allocation WHERE macaddr = ?", arguments: [address.description])
        }
    }

    public func releaseMAC(_ address: MACAddress) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM mac_allocation WHERE macaddr = ?", arguments: [address.description])
        }
    }

    // MARK: - Interfaces

    public func createInterface(
        uuid: UUID, instanceUUID: UUID, networkUUID: UUID, order: Int, model: String, address: AddressRequest,
        macaddr: MACAddress?
    ) async throws -> Interface {
        try await write { db in
            try self.insertInterface(
                db, uuid: uuid, instanceUUID: instanceUUID, networkUUID: networkUUID, order: order, model: model,
                address: address, macaddr: macaddr)
        }
    }

    /// Creates an interface inside the caller's transaction (see ``createInterface(uuid:instanceUUID:networkUUID:order:model:address:macaddr:)``).
    func insertInterface(
        _ db: any StoreDatabase, uuid: UUID, instanceUUID: UUID, networkUUID: UUID, order: Int, model: String,
        address: AddressRequest, macaddr: MACAddress?
    ) throws -> Interface {
        let id = uuid.lowercasedString
        if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM interface WHERE uuid = ?", arguments: [id]) != nil {
            throw StoreError.alreadyExists(type: "interface", id: id)
        }
        _ = try Self.fetchInstance(db, instanceUUID)
        let network = try Self.fetchNetwork(db, networkUUID)
        guard network.state != .deleted, network.state != .deleteWait else {
            throw StoreError.invalidArgument("network \(networkUUID.lowercasedString) is \(network.state.rawValue)")
        }
        let owner = ObjectKey.interface(uuid).text
        var ipv4: IPv4Address?
        switch address {
        case .any: ipv4 = try Self.allocateIPv4(db, network: network, requested: nil, owner: owner)
        case .specific(let requested):
            ipv4 = try Self.allocateIPv4(db, network: network, requested: requested, owner: owner)
        case .none: ipv4 = nil
        }
        let mac = try Self.allocateMAC(db, requested: macaddr, owner: owner)
        let interface = Interface(
            uuid: uuid, instanceUUID: instanceUUID, networkUUID: networkUUID, macaddr: mac, ipv4: ipv4, order: order,
            model: model, floating: nil, state: .initial)
        try db.execute(InterfaceTable.insert(interface))
        try self.insertEvent(
            db, Event(objectType: "interface", objectUUID: id, type: .audit, fqdn: self.fqdn, message: "db record created"))
        return interface
    }

    public func interface(uuid: UUID) async throws -> Interface {
        try await read { db in try Self.fetchInterface(db, uuid) }
    }

    public func interfaces(instanceUUID: UUID) async throws -> [Interface] {
        try await read { db in
            try db.allRows(InterfaceTable.self, InterfaceTable.selectOfInstance, [instanceUUID.lowercasedString])
        }
    }

    public func interfaces(networkUUID: UUID) async throws -> [Interface] {
        try await read { db in
            try db.allRows(InterfaceTable.self, InterfaceTable.select + "WHERE network_uuid = ? AND state != 'deleted' ORDER BY uuid",
                [networkUUID.lowercasedString])
        }
    }

    public func setInterfaceState(uuid: UUID, to state: InterfaceState) async throws -> Interface {
        try await write { db in
            var interface = try Self.fetchInterface(db, uuid)
            if interface.state == state { return interface }
            guard interface.state != .deleted else {
                throw StoreError.invalidTransition(
                    type: "interface", id: uuid.lowercasedString, from: interface.state.rawValue, to: state.rawValue)
            }
            if state == .deleted {
                // Deleting gives every address back in the same transaction: no window where the
                // interface is gone but its addresses are still held (or the reverse).
                try Self.releaseAddresses(db, interface)
                interface.floating = nil
            }
            interface.state = state
            try db.execute(
                sql: "UPDATE interface SET state = ?, floating = ? WHERE uuid = ?",
                arguments: [state.rawValue, interface.floating?.description, uuid.lowercasedString])
            try self.recordMutation(db, type: "interface", uuid: uuid.lowercasedString, attribute: "state", value: state.rawValue)
            return interface
        }
    }

    static func releaseAddresses(_ db: any StoreDatabase, _ interface: Interface) throws {
        let owner = ObjectKey.interface(interface.uuid).text
        try db.execute(
            sql: "DELETE FROM ipv4_allocation WHERE network_uuid = ? AND owner = ?",
            arguments: [interface.networkUUID.lowercasedString, owner])
        try db.execute(sql: "DELETE FROM mac_allocation WHERE owner = ?", arguments: [owner])
        try db.execute(sql: "DELETE FROM floating_allocation WHERE owner = ?", arguments: [owner])
    }

    public func floatInterface(uuid: UUID, range: IPv4Prefix) async throws -> Interface {
        try await write { db in
            var interface = try Self.fetchInterface(db, uuid)
            guard interface.state != .deleted else {
                throw StoreError.invalidArgument("interface \(uuid.lowercasedString) is deleted")
            }
            if let floating = interface.floating {
                throw StoreError.invalidArgument("interface \(uuid.lowercasedString) already floats \(floating)")
            }
            guard interface.ipv4 != nil else {
                throw StoreError.invalidArgument("interface \(uuid.lowercasedString) has no address to float")
            }
            let address = try Self.allocateFloating(
                db, range: range, requested: nil, owner: ObjectKey.interface(uuid).text)
            interface.floating = address
            try db.execute(
                sql: "UPDATE interface SET floating = ? WHERE uuid = ?", arguments: [address.description, uuid.lowercasedString])
            try self.recordMutation(
                db, type: "interface", uuid: uuid.lowercasedString, attribute: "floating", value: address.description)
            return interface
        }
    }

    public func defloatInterface(uuid: UUID) async throws -> Interface {
        try await write { db in
            var interface = try Self.fetchInterface(db, uuid)
            guard let floating = interface.floating else { return interface }
            try db.execute(sql: "DELETE FROM floating_allocation WHERE address = ?", arguments: [Int64(floating.value)])
            try db.execute(sql: "UPDATE interface SET floating = NULL WHERE uuid = ?", arguments: [uuid.lowercasedString])
            try self.recordMutation(db, type: "interface", uuid: uuid.lowercasedString, attribute: "floating", value: nil)
            interface.floating = nil
            return interface
        }
    }
}
