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

    static func jsonValue<T: Decodable & Sendable>(_ type: T.Type, _ text: String, _ what: String) throws -> T {
        do {
            return try DecodedColumns.shared.value(type, text)
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
        guard let instance = try allRows(db, selectInstanceByUUID, [uuid.lowercasedString], decodeInstance).first
        else { throw StoreError.notFound(type: "instance", id: uuid.lowercasedString) }
        return instance
    }

    static func fetchInterface(_ db: Database, _ uuid: UUID) throws -> Interface {
        guard let interface = try allRows(db, selectInterfaces + "WHERE uuid = ?", [uuid.lowercasedString], decodeInterface).first
        else { throw StoreError.notFound(type: "interface", id: uuid.lowercasedString) }
        return interface
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
            capacity: try (row["capacity"] as String?).map { try jsonValue(NodeCapacity.self, $0, "node capacity") },
            deleted: row.date("deleted"))
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
            floatingGateway: try row.optionalParsed("floating_gateway", "network", IPv4Address.init),
            spoofFilter: try row.required("spoof_filter", "network"),
            provideDNS: try row.required("provide_dns", "network"))
    }

    /// The instance table's columns, as ``decodeInstance(_:)`` reads them.
    enum InstanceColumn: Int32, TableColumn {
        case uuid, name, namespace, cpus, memory, diskSpec, video, node, state, stateUpdated
        case powerState, powerStatePrevious, powerStateUpdated, errorMessage, config, consolePort, vdiPort
        static let table = "instance"
        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .name: "name"
            case .namespace: "namespace"
            case .cpus: "cpus"
            case .memory: "memory"
            case .diskSpec: "disk_spec"
            case .video: "video"
            case .node: "node"
            case .state: "state"
            case .stateUpdated: "state_updated"
            case .powerState: "power_state"
            case .powerStatePrevious: "power_state_previous"
            case .powerStateUpdated: "power_state_updated"
            case .errorMessage: "error_message"
            case .config: "config"
            case .consolePort: "console_port"
            case .vdiPort: "vdi_port"
            }
        }
    }

    /// `SELECT <every instance column> FROM instance `, to be followed by the query's clauses.
    static let selectInstances = "SELECT \(InstanceColumn.selectList) FROM instance "
    static let selectInstanceByUUID = selectInstances + "WHERE uuid = ?"

    static func decodeInstance(_ row: RawRow<InstanceColumn>) throws -> Instance {
        var instance = Instance(
            uuid: try row.uuid(.uuid),
            name: try row.requiredText(.name),
            namespace: try row.requiredText(.namespace),
            cpus: try row.requiredInt(.cpus),
            memory: try row.requiredInt(.memory),
            diskSpec: try row.requiredJSON([DiskSpec].self, .diskSpec),
            video: try row.requiredJSON(VideoSpec.self, .video),
            node: try row.text(.node))
        instance.state = try row.parsed(.state, InstanceState.init(rawValue:))
        instance.stateUpdated = try row.requiredDate(.stateUpdated)
        instance.powerState = try row.parsed(.powerState, PowerState.init(rawValue:))
        instance.powerStatePrevious = try row.optionalParsed(.powerStatePrevious, PowerState.init(rawValue:))
        instance.powerStateUpdated = try row.requiredDate(.powerStateUpdated)
        instance.errorMessage = try row.text(.errorMessage)
        if let config = try row.json(InstanceConfig.self, .config) { instance.config = config }
        instance.consolePort = try row.int(.consolePort)
        instance.vdiPort = try row.int(.vdiPort)
        return instance
    }

    /// The interface table's columns, as ``decodeInterface(_:)`` reads them.
    enum InterfaceColumn: Int32, TableColumn {
        case uuid, instanceUUID, networkUUID, macaddr, ipv4, order, model, floating, state
        static let table = "interface"
        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .instanceUUID: "instance_uuid"
            case .networkUUID: "network_uuid"
            case .macaddr: "macaddr"
            case .ipv4: "ipv4"
            case .order: "order"
            case .model: "model"
            case .floating: "floating"
            case .state: "state"
            }
        }
    }

    /// `SELECT <every interface column> FROM interface `, to be followed by the query's clauses.
    static let selectInterfaces = "SELECT \(InterfaceColumn.selectList) FROM interface "
    static let selectInterfacesOfInstance = selectInterfaces + #"WHERE instance_uuid = ? ORDER BY "order", uuid"#

    static func decodeInterface(_ row: RawRow<InterfaceColumn>) throws -> Interface {
        Interface(
            uuid: try row.uuid(.uuid),
            instanceUUID: try row.uuid(.instanceUUID),
            networkUUID: try row.uuid(.networkUUID),
            macaddr: try row.parsed(.macaddr, MACAddress.init),
            ipv4: try row.optionalParsed(.ipv4, IPv4Address.init),
            order: try row.requiredInt(.order),
            model: try row.requiredText(.model),
            floating: try row.optionalParsed(.floating, IPv4Address.init),
            state: try row.parsed(.state, InterfaceState.init(rawValue:)))
    }

    /// The metadata table's columns, as the metadata reads use them.
    enum MetadataColumn: Int32, TableColumn {
        case objectType, objectUUID, key, value
        static let table = "metadata"
        var sqlName: String {
            switch self {
            case .objectType: "object_type"
            case .objectUUID: "object_uuid"
            case .key: "key"
            case .value: "value"
            }
        }
    }

    static let selectMetadata = "SELECT \(MetadataColumn.selectList) FROM metadata "
    static let selectMetadataOfObject = selectMetadata + "WHERE object_type = ? AND object_uuid = ?"

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
            deaths: try row.required("deaths", "job"),
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
        try parsed(column, table, UUID.init(parsing:))
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
