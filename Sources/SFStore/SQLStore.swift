import Foundation
import Logging
import SFSystem
import Synchronization

/// The ``NodeStore`` over SQL: every operation is written once, against ``StoreDatabase``, and runs
/// on one of two backends.
///
/// - SQLite (``SQLiteBackend``, the default): one file in WAL mode, shared by every sfnode process
///   on one node (agent, API, operator CLI).
/// - PostgreSQL (``PostgresBackend``): a database server shared by the nodes of a cluster, selected
///   by a `postgres://` URL in `SFNODE_STORE_URL`.
///
/// Every write is one transaction that no other write interleaves with (SQLite's `BEGIN IMMEDIATE`;
/// on PostgreSQL a transaction-scoped advisory lock, except the queue's own statements, which lock
/// only their job rows): "read what is free, then take it" needs no retry loop anywhere.
public final class SQLStore: NodeStore {
    /// Where the data is: the SQLite file, or the PostgreSQL URL without its password.
    public let path: String
    /// The node name written into events the store records itself (state changes).
    public let fqdn: String
    let backend: any StoreBackend
    let logger: Logger

    /// Opens (creating if needed) the SQLite store at `path` and applies pending migrations.
    ///
    /// - Parameters:
    ///   - busyTimeout: how long a write waits for another process's write lock before failing.
    public convenience init(
        path: String, fqdn: String = ProcessInfo.processInfo.hostName, busyTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "sfnode.store")
    ) throws {
        let backend = try SQLiteBackend(path: path, busyTimeout: busyTimeout, logger: logger)
        self.init(backend: backend, path: path, fqdn: fqdn, logger: logger)
    }

    /// Opens the store at `location`: a `postgres://` (or `postgresql://`) URL selects PostgreSQL,
    /// anything else is the path of a SQLite file.
    public static func open(
        location: String, fqdn: String = ProcessInfo.processInfo.hostName, logger: Logger = Logger(label: "sfnode.store")
    ) throws -> SQLStore {
        if let configuration = try PostgresStoreConfiguration(url: location) {
            let backend = try PostgresBackend(configuration: configuration, logger: logger)
            return SQLStore(backend: backend, path: configuration.redactedURL, fqdn: fqdn, logger: logger)
        }
        return try SQLStore(path: location, fqdn: fqdn, logger: logger)
    }

    init(backend: any StoreBackend, path: String, fqdn: String, logger: Logger) {
        self.backend = backend
        self.path = path
        self.fqdn = fqdn
        self.logger = logger
        logger.debug("store open", metadata: ["store.location": "\(path)"])
    }

    /// A SQLite store in a fresh temporary directory (for tests); remove it with ``removeFiles()``.
    /// SQLite's `:memory:` cannot be shared by a pool's connections or by a second store, so tests
    /// use a real file.
    public static func temporary(fqdn: String = "test-node") throws -> SQLStore {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("sfstore-\(UUID().lowercasedString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try SQLStore(path: directory.appendingPathComponent("store.sqlite").path, fqdn: fqdn)
    }

    /// Deletes the directory holding a ``temporary(fqdn:)`` store's files.
    public func removeFiles() {
        guard backend is SQLiteBackend else { return }
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }

    /// Closes the backend's connections (PostgreSQL); later calls fail. SQLite closes with the
    /// store.
    public func close() { backend.close() }

    // MARK: - Transactions

    /// Runs `body` in one write transaction that no other write interleaves with.
    func write<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        try await backend.write(serialised: true, body)
    }

    /// Runs `body` in a write transaction of the queue, which other writes may interleave with:
    /// it must lock the job rows it changes itself (`FOR UPDATE`), as every queue statement does.
    func writeQueue<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        try await backend.write(serialised: false, body)
    }

    /// Runs `body` in one snapshot of committed data.
    func read<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        try await backend.read(body)
    }

    /// As ``read(_:)``, for reads of a few rows by key: a backend may run them on the calling
    /// thread when it can do so without blocking (SQLite's in-place readers).
    func readByKey<T: Sendable>(_ body: @escaping @Sendable (any StoreDatabase) throws -> T) async throws -> T {
        try await backend.readByKey(body)
    }

    public func wakeups() -> AsyncStream<Void> { backend.wakeups() }

    public func changeToken() async throws -> Int64 { try await backend.changeToken() }

    public func clock() async throws -> Date { Date(timeIntervalSince1970: try await backend.clock()) }

    public func releaseMemory() async { await backend.releaseMemory() }

    /// Appends an event inside the caller's transaction.
    func insertEvent(_ db: any StoreDatabase, _ event: Event) throws {
        try db.execute(try EventTable.insert(event))
    }

    /// The "set attribute" mutate event Shaken Fist writes for every attribute change.
    func recordMutation(_ db: any StoreDatabase, type: String, uuid: String, attribute: String, value: String?) throws {
        try insertEvent(
            db,
            Event(
                objectType: type, objectUUID: uuid, type: .mutate, fqdn: fqdn, message: "set attribute",
                extra: ["attribute": .string(attribute), "value": value.map(JSONValue.string) ?? .null]))
    }

    // MARK: - Nodes

    public func saveNode(_ node: Node) async throws {
        let upsert = try NodeTable.upsert(node)
        try await write { db in try db.execute(upsert) }
    }

    public func node(named name: String) async throws -> Node? {
        try await read { db in
            try db.firstRow(NodeTable.self, NodeTable.select + "WHERE name = ?", [name])
        }
    }

    public func nodes() async throws -> [Node] {
        try await read { db in try db.allRows(NodeTable.self, NodeTable.select + "ORDER BY name") }
    }

    // MARK: - Networks

    public func createNetwork(
        uuid: UUID, name: String, namespace: String, netblock: IPv4Prefix, provideDHCP: Bool, provideNAT: Bool,
        provideDNS: Bool, spoofFilter: Bool, jobs: [NewJob]
    ) async throws -> Network {
        let now = Date.storableNow()
        let jobRows = try jobs.map(Self.validatedRow)
        return try await write { db in
            let id = uuid.lowercasedString
            if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM network WHERE uuid = ?", arguments: [id]) != nil {
                throw StoreError.alreadyExists(type: "network", id: id)
            }
            // Random like Shaken Fist, retried on collision; the UNIQUE column is the real guard.
            var vxid = 0
            for _ in 0..<64 {
                let candidate = Int.random(in: 1...16_777_215)
                if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM network WHERE vxid = ?", arguments: [candidate]) == nil {
                    vxid = candidate
                    break
                }
            }
            guard vxid != 0 else { throw StoreError.addressesExhausted(pool: "VXLAN ids") }
            let network = Network(
                uuid: uuid, name: name, namespace: namespace, netblock: netblock.network, provideDHCP: provideDHCP,
                provideNAT: provideNAT, vxid: vxid, state: .initial, stateUpdated: now, floatingGateway: nil,
                spoofFilter: spoofFilter, provideDNS: provideDNS)
            try db.execute(NetworkTable.insert(network, created: now))
            try self.insertEvent(
                db, Event(objectType: "network", objectUUID: id, type: .audit, fqdn: self.fqdn, message: "db record created"))
            for row in jobRows { _ = try Self.insertJob(db, row) }
            return network
        }
    }

    public func network(uuid: UUID) async throws -> Network {
        try await read { db in try Self.fetchNetwork(db, uuid) }
    }

    public func networks(namespace: String?) async throws -> [Network] {
        try await read { db in
            try db.allRows(NetworkTable.self, NetworkTable.select + "WHERE ?1 IS NULL OR namespace = ?1 ORDER BY created, uuid", [namespace])
        }
    }

    public func setNetworkState(uuid: UUID, to state: NetworkState) async throws -> Network {
        try await write { db in
            var network = try Self.fetchNetwork(db, uuid)
            guard network.state.canTransition(to: state) else {
                throw StoreError.invalidTransition(
                    type: "network", id: uuid.lowercasedString, from: network.state.rawValue, to: state.rawValue)
            }
            guard network.state != state else { return network }
            network.state = state
            network.stateUpdated = Date.storableNow()
            try db.execute(NetworkTable.updateStatement([.state: state.rawValue, .stateUpdated: network.stateUpdated], where: .uuid, is: uuid))
            try self.recordMutation(db, type: "network", uuid: uuid.lowercasedString, attribute: "state", value: state.rawValue)
            return network
        }
    }

    public func ensureFloatingGateway(networkUUID: UUID, range: IPv4Prefix) async throws -> Network {
        try await write { db in
            var network = try Self.fetchNetwork(db, networkUUID)
            if network.floatingGateway != nil { return network }
            let address = try Self.allocateFloating(db, range: range, requested: nil, owner: "network:\(networkUUID.lowercasedString)")
            try Self.writeFloatingGateway(db, &network, address, recorder: self)
            return network
        }
    }

    public func releaseFloatingGateway(networkUUID: UUID) async throws -> Network {
        try await write { db in
            var network = try Self.fetchNetwork(db, networkUUID)
            // By owner, as interfaces release theirs: a stale record's address may belong to someone
            // else by now, and an allocation that was never recorded (earlier builds allocated and
            // recorded in two steps, with an upper-case owner) is released too.
            try db.execute(
                sql: "DELETE FROM floating_allocation WHERE owner IN (?, ?)",
                arguments: ["network:\(networkUUID.lowercasedString)", "network:\(networkUUID.uuidString)"])
            if network.floatingGateway != nil { try Self.writeFloatingGateway(db, &network, nil, recorder: self) }
            return network
        }
    }

    private static func writeFloatingGateway(_ db: any StoreDatabase, _ network: inout Network, _ address: IPv4Address?, recorder: SQLStore)
        throws
    {
        network.floatingGateway = address
        try db.execute(
            sql: "UPDATE network SET floating_gateway = ? WHERE uuid = ?", arguments: [address?.description, network.uuid.lowercasedString])
        try recorder.recordMutation(
            db, type: "network", uuid: network.uuid.lowercasedString, attribute: "floating_gateway", value: address?.description)
    }

    // MARK: - Instances

    public func createInstance(_ instance: Instance, interfaces: [NewInterface], jobs: [NewJob]) async throws -> [Interface] {
        guard instance.state == .initial else {
            throw StoreError.invalidArgument("a new instance starts in state initial, not \(instance.state.rawValue)")
        }
        let insert = try InstanceTable.insert(instance, created: Date())
        let jobRows = try jobs.map(Self.validatedRow)
        return try await write { db in
            let id = instance.uuid.lowercasedString
            if try db.fetchOne(Bool.self, sql: "SELECT 1 FROM instance WHERE uuid = ?", arguments: [id]) != nil {
                throw StoreError.alreadyExists(type: "instance", id: id)
            }
            try db.execute(insert)
            try self.insertEvent(
                db, Event(objectType: "instance", objectUUID: id, type: .audit, fqdn: self.fqdn, message: "db record created"))
            let created = try interfaces.enumerated().map { order, interface in
                try self.insertInterface(
                    db, uuid: interface.uuid, instanceUUID: instance.uuid, networkUUID: interface.networkUUID, order: order,
                    model: interface.model, address: interface.address, macaddr: interface.macaddr)
            }
            for row in jobRows { _ = try Self.insertJob(db, row) }
            return created
        }
    }

    public func instance(uuid: UUID) async throws -> Instance {
        try await read { db in try Self.fetchInstance(db, uuid) }
    }

    static let selectInstancesOfNode = InstanceTable.select + "WHERE ?1 IS NULL OR node = ?1 ORDER BY created, uuid"

    public func instances(node: String?) async throws -> [Instance] {
        try await read { db in
            try db.allRows(InstanceTable.self, Self.selectInstancesOfNode, [node])
        }
    }

    public func setInstanceState(uuid: UUID, to state: InstanceState, errorMessage: String?) async throws -> Instance {
        try await write { db in
            var instance = try Self.fetchInstance(db, uuid)
            guard instance.state.canTransition(to: state) else {
                throw StoreError.invalidTransition(
                    type: "instance", id: uuid.lowercasedString, from: instance.state.rawValue, to: state.rawValue)
            }
            if let errorMessage { instance.errorMessage = errorMessage }
            if instance.state != state {
                instance.state = state
                instance.stateUpdated = Date.storableNow()
                try self.recordMutation(db, type: "instance", uuid: uuid.lowercasedString, attribute: "state", value: state.rawValue)
            }
            try db.execute(InstanceTable.updateStatement(
                    [.state: state.rawValue, .stateUpdated: instance.stateUpdated, .errorMessage: instance.errorMessage], where: .uuid, is: uuid))
            return instance
        }
    }

    public func reserveConsolePorts(uuid: UUID, node: String, candidates: [(console: Int, vdi: Int?)]) async throws -> Instance {
        try await write { db in
            var instance = try Self.fetchInstance(db, uuid)
            if instance.consolePort != nil { return instance }
            // In one transaction with the read of what the node's instances hold, so that two
            // instances started at once never get the same port.
            var used = Set<Int>()
            try db.eachRow(InstanceTable.self, InstanceTable.select + "WHERE node = ? AND state != 'deleted' AND uuid != ?", [node, uuid.lowercasedString]
            ) { row in
                if let port = try row.int(.consolePort) { used.insert(port) }
                if let port = try row.int(.vdiPort) { used.insert(port) }
            }
            guard let chosen = candidates.first(where: { !used.contains($0.console) && !($0.vdi.map(used.contains) ?? false) && $0.console != $0.vdi })
            else { throw StoreError.invalidArgument("no free console port among \(candidates.count) candidates on node \(node)") }
            instance.consolePort = chosen.console
            instance.vdiPort = chosen.vdi
            try db.execute(InstanceTable.updateStatement([.consolePort: chosen.console, .vdiPort: chosen.vdi], where: .uuid, is: uuid))
            try self.recordMutation(db, type: "instance", uuid: uuid.lowercasedString, attribute: "console_port", value: "\(chosen.console)")
            return instance
        }
    }

    public func setPowerState(uuid: UUID, _ state: PowerState) async throws -> Instance {
        try await write { db in
            var instance = try Self.fetchInstance(db, uuid)
            // Repeated reports of the same state (the reconciler polls) change nothing, so
            // `previous` keeps meaning "the state before the last change".
            guard instance.powerState != state else { return instance }
            instance.powerStatePrevious = instance.powerState
            instance.powerState = state
            instance.powerStateUpdated = Date.storableNow()
            try db.execute(InstanceTable.updateStatement(
                    [
                        .powerState: state.rawValue, .powerStatePrevious: instance.powerStatePrevious?.rawValue,
                        .powerStateUpdated: instance.powerStateUpdated,
                    ], where: .uuid, is: uuid))
            try self.recordMutation(
                db, type: "instance", uuid: uuid.lowercasedString, attribute: "power_state", value: state.rawValue)
            return instance
        }
    }

    public func setInstanceNode(uuid: UUID, _ node: String?) async throws -> Instance {
        try await write { db in
            var instance = try Self.fetchInstance(db, uuid)
            instance.node = node
            try db.execute(InstanceTable.updateStatement([.node: node], where: .uuid, is: uuid))
            try self.recordMutation(db, type: "instance", uuid: uuid.lowercasedString, attribute: "node", value: node)
            return instance
        }
    }

    // MARK: - Metadata

    public func setMetadata(objectType: String, objectUUID: String, key: String, value: JSONValue) async throws {
        let text = try value.jsonText()
        try await write { db in
            try db.execute(MetadataTable.upsert(objectType: objectType, objectUUID: objectUUID, key: key, valueText: text))
        }
    }

    public func metadata(objectType: String, objectUUID: String) async throws -> [String: JSONValue] {
        try await read { db in
            try Self.metadata(db, objectType, objectUUID)
        }
    }

    public func deleteMetadata(objectType: String, objectUUID: String, key: String) async throws {
        try await write { db in
            try db.execute(
                sql: "DELETE FROM metadata WHERE object_type = ? AND object_uuid = ? AND key = ?",
                arguments: [objectType, objectUUID, key])
        }
    }

    // MARK: - Events

    public func record(_ event: Event) async throws {
        try await write { db in try self.insertEvent(db, event) }
    }

    public func events(objectType: String, objectUUID: String, type: EventType?, limit: Int) async throws -> [Event] {
        let capped = min(max(limit, 0), 1000)
        return try await read { db in
            try db.allRows(EventTable.self,
                EventTable.select + """
                    WHERE object_type = ?1 AND object_uuid = ?2 AND (?3 IS NULL OR type = ?3)
                    ORDER BY timestamp DESC, id DESC LIMIT ?4
                    """,
                [objectType, objectUUID, type?.rawValue, capped])
        }
    }
}
