import Foundation

/// An instance with its interfaces and the metadata of both: everything an API view of an
/// instance shows, read in one snapshot.
public struct InstanceRecord: Sendable, Equatable {
    public var instance: Instance
    /// By order.
    public var interfaces: [Interface]
    public var metadata: [String: JSONValue]
    public var interfaceMetadata: [UUID: [String: JSONValue]]

    public init(instance: Instance, interfaces: [Interface], metadata: [String: JSONValue], interfaceMetadata: [UUID: [String: JSONValue]]) {
        self.instance = instance
        self.interfaces = interfaces
        self.metadata = metadata
        self.interfaceMetadata = interfaceMetadata
    }
}

extension SQLStore {
    /// The instance's record in one read by key, on the calling thread when a connection is idle
    /// (``readByKey(_:)``), decoded by column position: a busy API's GET of one instance costs a
    /// few index lookups.
    public func instanceRecord(uuid: UUID) async throws -> InstanceRecord {
        try await readByKey { db in
            let key = uuid.lowercasedString
            let instance = try Self.fetchInstance(db, uuid)
            let interfaces = try db.allRows(InterfaceTable.self, InterfaceTable.selectOfInstance, [key])
            var interfaceMetadata: [UUID: [String: JSONValue]] = [:]
            for interface in interfaces {
                interfaceMetadata[interface.uuid] = try Self.metadata(db, "interface", interface.uuid.lowercasedString)
            }
            return InstanceRecord(
                instance: instance, interfaces: interfaces, metadata: try Self.metadata(db, "instance", key), interfaceMetadata: interfaceMetadata)
        }
    }

    /// The records of every instance (of `namespace`, when given), oldest first, in one read: a
    /// list of a thousand instances is four queries, not thousands.
    public func instanceRecords(namespace: String?) async throws -> [InstanceRecord] {
        try await read { db in
            let instances = try db.allRows(InstanceTable.self, Self.selectInstancesOfNamespace, [namespace])
            let wanted = Set(instances.map(\.uuid))
            var interfaces: [UUID: [Interface]] = [:]
            try db.eachRow(InterfaceTable.self, Self.selectAllInterfaces) { row in
                let interface = try InterfaceTable.decode(row)
                if wanted.contains(interface.instanceUUID) { interfaces[interface.instanceUUID, default: []].append(interface) }
            }
            var metadata: [String: [String: [String: JSONValue]]] = [:]
            try db.eachRow(MetadataTable.self, Self.selectInstanceAndInterfaceMetadata) { row in
                let item = try MetadataTable.decode(row)
                metadata[item.objectType, default: [:]][item.objectUUID, default: [:]][item.key] = item.value
            }
            return instances.map { instance in
                let own = interfaces[instance.uuid] ?? []
                return InstanceRecord(
                    instance: instance, interfaces: own, metadata: metadata["instance"]?[instance.uuid.lowercasedString] ?? [:],
                    interfaceMetadata: Dictionary(uniqueKeysWithValues: own.map { ($0.uuid, metadata["interface"]?[$0.uuid.lowercasedString] ?? [:]) }))
            }
        }
    }

    /// One object's metadata inside the caller's read.
    static func metadata(_ db: any StoreDatabase, _ objectType: String, _ objectUUID: String) throws -> [String: JSONValue] {
        var result: [String: JSONValue] = [:]
        // Key and value only: the object is the one asked for (two strings fewer per key on a GET).
        try db.eachRow(MetadataTable.self, MetadataTable.selectOfObject, [objectType, objectUUID]) { row in
            result[try row.requiredText(.key)] = try row.requiredJSON(JSONValue.self, .value)
        }
        return result
    }

    static let selectInstancesOfNamespace = InstanceTable.select + "WHERE ?1 IS NULL OR namespace = ?1 ORDER BY created, uuid"
    static let selectAllInterfaces = InterfaceTable.select + #"ORDER BY "order", uuid"#
    static let selectInstanceAndInterfaceMetadata = MetadataTable.select + "WHERE object_type IN ('instance', 'interface')"
}
