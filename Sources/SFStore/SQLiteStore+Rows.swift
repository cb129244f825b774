import Foundation
import GRDB
import SFSystem

/// Row ↔ value conversions. Every column read is checked: a NULL or unparsable value is reported
/// as ``StoreError/corrupt(_:)`` naming the table and column, never trapped on.
extension SQLiteStore {
    static func jsonText<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func jsonValue<T: Decodable>(_ type: T.Type, _ text: String, _ what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(text.utf8))
        } catch {
            throw StoreError.corrupt("\(what): \(error)")
        }
    }

    static func fetchNetwork(_ db: Database, _ uuid: UUID) throws -> Network {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM network WHERE uuid = ?", arguments: [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "network", id: uuid.lowercasedString) }
        return try decodeNetwork(row)
    }

    static func fetchInstance(_ db: Database, _ uuid: UUID) throws -> Instance {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM instance WHERE uuid = ?", arguments: [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "instance", id: uuid.lowercasedString) }
        return try decodeInstance(row)
    }

    static func fetchInterface(_ db: Database, _ uuid: UUID) throws -> Interface {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM interface WHERE uuid = ?", arguments: [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "interface", id: uuid.lowercasedString) }
        return try decodeInterface(row)
    }

    static func fetchJob(_ db: Database, _ id: Int64) throws -> Job {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [id])
        else { throw StoreError.notFound(type: "job", id: String(id)) }
        return try decodeJob(row)
    }

    static func decodeNode(_ row: Row) throws -> Node {
        let roleNames = try jsonValue([String].self, try row.required("roles", "node"), "node roles")
        return Node(
            name: try row.required("name", "node"),
            roles: Set(roleNames.compactMap(NodeRole.init(rawValue:))),
            lastSeen: row.date("last_seen"),
            meshAddress: try row.optionalParsed("mesh_address", "node", IPv4Address.init),
            capacity: try (row["capacity"] as String?).map { try jsonValue(NodeCapacity.self, $0, "node capacity") })
    }

    static func decodeNetwork(_ row: Row) throws -> Network {
        Network(
            uuid: try row.uuid("uuid", "network"),
            name: try row.required("name", "network"),
            namespace: try row.required("namespace", "network"),
            netblock: try row.parsed("netblock", "network", IPv4Prefix.init),
            provideDHCP: try row.required("provide_dhcp", "network"),
            provideNAT: try row.required("provide_nat", "network"),
            vxid: try row.required("vxid", "network"),
            state: try row.parsed("state", "network", NetworkState.init(rawValue:)),
            stateUpdated: try row.requiredDate("state_updated", "network"),
            floatingGateway: try row.optionalParsed("floating_gateway", "network", IPv4Address.init))
    }

    static func decodeInstance(_ row: Row) throws -> Instance {
        var instance = Instance(
            uuid: try row.uuid("uuid", "instance"),
            name: try row.required("name", "instance"),
            namespace: try row.required("namespace", "instance"),
            cpus: try row.required("cpus", "instance"),
            memory: try row.required("memory", "instance"),
            diskSpec: try jsonValue([DiskSpec].self, try row.required("disk_spec", "instance"), "instance disk_spec"),
            video: try jsonValue(VideoSpec.self, try row.required("video", "instance"), "instance video"),
            node: row["node"])
        instance.state = try row.parsed("state", "instance", InstanceState.init(rawValue:))
        instance.stateUpdated = try row.requiredDate("state_updated", "instance")
        instance.powerState = try row.parsed("power_state", "instance", PowerState.init(rawValue:))
        instance.powerStatePrevious = try row.optionalParsed("power_state_previous", "instance", PowerState.init(rawValue:))
        instance.powerStateUpdated = try row.requiredDate("power_state_updated", "instance")
        instance.errorMessage = row["error_message"]
        if let config: String = row["config"] {
            instance.config = try jsonValue(InstanceConfig.self, config, "instance config")
        }
        return instance
    }

    static func decodeInterface(_ row: Row) throws -> Interface {
        Interface(
            uuid: try row.uuid("uuid", "interface"),
            instanceUUID: try row.uuid("instance_uuid", "interface"),
            networkUUID: try row.uuid("network_uuid", "interface"),
            macaddr: try row.parsed("macaddr", "interface", MACAddress.init),
            ipv4: try row.optionalParsed("ipv4", "interface", IPv4Address.init),
            order: try row.required("order", "interface"),
            model: try row.required("model", "interface"),
            floating: try row.optionalParsed("floating", "interface", IPv4Address.init),
            state: try row.parsed("state", "interface", InterfaceState.init(rawValue:)))
    }

    static func decodeEvent(_ row: Row) throws -> Event {
        let extraText: String? = row["extra"]
        var extra: [String: JSONValue]?
        if let extraText {
            guard case .object(let object) = try JSONValue.parse(extraText) else {
                throw StoreError.corrupt("event extra is not a JSON object")
            }
            extra = object
        }
        return Event(
            objectType: try row.required("object_type", "event"),
            objectUUID: try row.required("object_uuid", "event"),
            type: try row.parsed("type", "event", EventType.init(rawValue:)),
            timestamp: try row.requiredDate("timestamp", "event"),
            fqdn: try row.required("fqdn", "event"),
            duration: row["duration"],
            message: try row.required("message", "event"),
            extra: extra)
    }

    static func decodeJob(_ row: Row) throws -> Job {
        Job(
            id: try row.required("id", "job"),
            kind: try row.required("kind", "job"),
            payload: try JSONValue.parse(try row.required("payload", "job")),
            target: try JobTarget.parse(try row.required("target", "job")),
            objectKey: row["object_key"],
            state: try row.parsed("state", "job", JobState.init(rawValue:)),
            attempts: try row.required("attempts", "job"),
            maxAttempts: try row.required("max_attempts", "job"),
            notBefore: try row.requiredDate("not_before", "job"),
            leaseOwner: row["lease_owner"],
            leaseExpiry: row.date("lease_expiry"),
            lastError: row["last_error"],
            created: try row.requiredDate("created", "job"),
            updated: try row.requiredDate("updated", "job"))
    }
}

extension Row {
    func required<T: DatabaseValueConvertible>(_ column: String, _ table: String) throws -> T {
        guard let value: T = self[column] else { throw StoreError.corrupt("\(table).\(column) is NULL or of the wrong type") }
        return value
    }

    func requiredDate(_ column: String, _ table: String) throws -> Date {
        Date(timeIntervalSince1970: try required(column, table) as Double)
    }

    func date(_ column: String) -> Date? {
        (self[column] as Double?).map(Date.init(timeIntervalSince1970:))
    }

    func uuid(_ column: String, _ table: String) throws -> UUID {
        try parsed(column, table, UUID.init(uuidString:))
    }

    func parsed<T>(_ column: String, _ table: String, _ parse: (String) -> T?) throws -> T {
        let text: String = try required(column, table)
        guard let value = parse(text) else { throw StoreError.corrupt("\(table).\(column) '\(text)' does not parse") }
        return value
    }

    func optionalParsed<T>(_ column: String, _ table: String, _ parse: (String) -> T?) throws -> T? {
        guard let text: String = self[column] else { return nil }
        guard let value = parse(text) else { throw StoreError.corrupt("\(table).\(column) '\(text)' does not parse") }
        return value
    }
}
