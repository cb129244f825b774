import Foundation
import GRDB

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

extension SQLiteStore {
    /// The instance's record in one read (one hop to a reader, cached statements): a busy API's
    /// GET of one instance costs a single round trip to the store.
    public func instanceRecord(uuid: UUID) async throws -> InstanceRecord {
        try await read { db in
            let instance = try Self.decodeInstance(
                try Self.requireRow(
                    Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM instance WHERE uuid = ?"), arguments: [uuid.lowercasedString]),
                    "instance", uuid))
            let interfaces = try Row.fetchAll(
                db.cachedStatement(sql: #"SELECT * FROM interface WHERE instance_uuid = ? ORDER BY "order", uuid"#),
                arguments: [uuid.lowercasedString]
            ).map(Self.decodeInterface)
            var interfaceMetadata: [UUID: [String: JSONValue]] = [:]
            for interface in interfaces {
                interfaceMetadata[interface.uuid] = try Self.metadata(db, "interface", interface.uuid.lowercasedString)
            }
            return InstanceRecord(
                instance: instance, interfaces: interfaces, metadata: try Self.metadata(db, "instance", uuid.lowercasedString),
                interfaceMetadata: interfaceMetadata)
        }
    }

    /// The records of every instance (of `namespace`, when given), oldest first, in one read: a
    /// list of a thousand instances is four queries, not thousands.
    public func instanceRecords(namespace: String?) async throws -> [InstanceRecord] {
        try await read { db in
            let instances = try Row.fetchAll(
                db, sql: "SELECT * FROM instance WHERE ?1 IS NULL OR namespace = ?1 ORDER BY created, uuid", arguments: [namespace]
            ).map(Self.decodeInstance)
            let wanted = Set(instances.map(\.uuid))
            var interfaces: [UUID: [Interface]] = [:]
            for row in try Row.fetchAll(db, sql: #"SELECT * FROM interface ORDER BY "order", uuid"#) {
                let interface = try Self.decodeInterface(row)
                if wanted.contains(interface.instanceUUID) { interfaces[interface.instanceUUID, default: []].append(interface) }
            }
            var metadata: [String: [String: [String: JSONValue]]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT object_type, object_uuid, key, value FROM metadata WHERE object_type IN ('instance', 'interface')") {
                guard let type: String = row["object_type"], let uuid: String = row["object_uuid"], let key: String = row["key"],
                    let value: String = row["value"]
                else { throw StoreError.corrupt("metadata row without type, object, key or value") }
                metadata[type, default: [:]][uuid, default: [:]][key] = try JSONValue.parse(value)
            }
            return instances.map { instance in
                let own = interfaces[instance.uuid] ?? []
                return InstanceRecord(
                    instance: instance, interfaces: own, metadata: metadata["instance"]?[instance.uuid.lowercasedString] ?? [:],
                    interfaceMetadata: Dictionary(uniqueKeysWithValues: own.map { ($0.uuid, metadata["interface"]?[$0.uuid.lowercasedString] ?? [:]) }))
            }
        }
    }

    static func requireRow(_ row: Row?, _ type: String, _ uuid: UUID) throws -> Row {
        guard let row else { throw StoreError.notFound(type: type, id: uuid.lowercasedString) }
        return row
    }

    /// One object's metadata inside the caller's read.
    static func metadata(_ db: Database, _ objectType: String, _ objectUUID: String) throws -> [String: JSONValue] {
        var result: [String: JSONValue] = [:]
        for row in try Row.fetchAll(
            db.cachedStatement(sql: "SELECT key, value FROM metadata WHERE object_type = ? AND object_uuid = ?"),
            arguments: [objectType, objectUUID])
        {
            guard let key: String = row["key"], let value: String = row["value"] else {
                throw StoreError.corrupt("metadata row of \(objectType) \(objectUUID) without key or value")
            }
            result[key] = try JSONValue.parse(value)
        }
        return result
    }
}
