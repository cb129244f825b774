import Foundation
import GRDB
import Logging
import SFSystem
import Synchronization

/// The embedded ``NodeStore``: one SQLite file in WAL mode, shared by every sfnode process on the
/// node (agent, operator CLI).
///
/// Concurrency: within a process, GRDB's `DatabasePool` serialises writes on one connection and
/// reads run on a pool of readers that see committed snapshots. Across processes, every write is a
/// `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock up front (a deferred transaction
/// that upgrades from read to write can fail with SQLITE_BUSY without waiting), and `busy_timeout`
/// makes a second writer wait for the lock instead of failing.
public final class SQLiteStore: NodeStore {
    /// The database file.
    public let path: String
    /// The node name written into events the store records itself (state changes).
    public let fqdn: String

    private let pool: DatabasePool
    /// A connection of its own, used only for `PRAGMA data_version`: that value changes for a
    /// connection when *another* connection commits, and the pool's writer would not see its
    /// own commits nor would pooled readers give a stable sequence.
    private let monitor: DatabaseQueue
    /// For short reads by key, without a thread switch (``readByKey(_:)``).
    private let inPlaceReaders: InPlaceReaders
    private let logger: Logger
    /// This store's wake-ups (SQLiteStore+Wakeups.swift).
    let wakeupHub: WakeupHub

    /// Opens (creating if needed) the store at `path` and applies pending migrations.
    ///
    /// - Parameters:
    ///   - busyTimeout: how long a write waits for another process's write lock before failing.
    public init(
        path: String, fqdn: String = ProcessInfo.processInfo.hostName, busyTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "sfnode.store")
    ) throws {
        self.path = path
        self.fqdn = fqdn
        self.logger = logger
        wakeupHub = WakeupHub(storePath: path, logger: logger)
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout.seconds)
        config.label = "sfnode.store"
        do {
            // Two processes starting together would both see a migration as unapplied (GRDB reads
            // the applied list outside the migration's transaction) and the second would fail on
            // CREATE TABLE; an flock beside the file serialises opening + migrating.
            let lock = try FileLock.acquire(path: path + ".lock")
            defer { lock.release() }
            // Only root reads the store: it holds key hashes and the API's token-signing secret.
            // SQLite gives the -wal and -shm files the database's mode; a store made before this
            // rule is brought into line too.
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            if fd >= 0 { close(fd) }
            for file in [path, path + "-wal", path + "-shm"] { chmod(file, 0o600) }
            pool = try DatabasePool(path: path, configuration: config)
            try Self.migrator.migrate(pool)
            var monitorConfig = Configuration()
            monitorConfig.busyMode = .timeout(busyTimeout.seconds)
            monitorConfig.label = "sfnode.store.monitor"
            monitor = try DatabaseQueue(path: path, configuration: monitorConfig)
            config.label = "sfnode.store.in-place"
            inPlaceReaders = try InPlaceReaders(path: path, configuration: config)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError.backend("opening \(path): \(error)")
        }
        logger.debug("store open", metadata: ["path": "\(path)"])
    }

    /// A store in a fresh temporary directory (for tests); remove it with ``removeFiles()``.
    /// SQLite's `:memory:` cannot be shared by a pool's connections or by a second store, so tests
    /// use a real file.
    public static func temporary(fqdn: String = "test-node") throws -> SQLiteStore {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("sfstore-\(UUID().lowercasedString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try SQLiteStore(path: directory.appendingPathComponent("store.sqlite").path, fqdn: fqdn)
    }

    /// Deletes the directory holding a ``temporary(fqdn:)`` store's files.
    public func removeFiles() {
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }

    // MARK: - Schema

    /// Versioned migrations; append new ones, never edit an applied one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE node (
                        name TEXT PRIMARY KEY NOT NULL,
                        roles TEXT NOT NULL,
                        last_seen REAL);
                    CREATE TABLE network (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        namespace TEXT NOT NULL,
                        netblock TEXT NOT NULL,
                        provide_dhcp INTEGER NOT NULL,
                        provide_nat INTEGER NOT NULL,
                        vxid INTEGER NOT NULL UNIQUE CHECK (vxid BETWEEN 1 AND 16777215),
                        state TEXT NOT NULL,
                        state_updated REAL NOT NULL,
                        floating_gateway TEXT,
                        created REAL NOT NULL);
                    CREATE TABLE instance (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        namespace TEXT NOT NULL,
                        cpus INTEGER NOT NULL,
                        memory INTEGER NOT NULL,
                        disk_spec TEXT NOT NULL,
                        video TEXT NOT NULL,
                        node TEXT,
                        state TEXT NOT NULL,
                        state_updated REAL NOT NULL,
                        power_state TEXT NOT NULL,
                        power_state_previous TEXT,
                        power_state_updated REAL NOT NULL,
                        error_message TEXT,
                        created REAL NOT NULL);
                    CREATE INDEX instance_node ON instance(node);
                    CREATE TABLE interface (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        instance_uuid TEXT NOT NULL,
                        network_uuid TEXT NOT NULL,
                        macaddr TEXT NOT NULL,
                        ipv4 TEXT,
                        "order" INTEGER NOT NULL,
                        model TEXT NOT NULL,
                        floating TEXT,
                        state TEXT NOT NULL);
                    CREATE INDEX interface_instance ON interface(instance_uuid);
                    CREATE INDEX interface_network ON interface(network_uuid);
                    CREATE TABLE ipv4_allocation (
                        network_uuid TEXT NOT NULL,
                        address INTEGER NOT NULL,
                        owner TEXT NOT NULL,
                        PRIMARY KEY (network_uuid, address)) WITHOUT ROWID;
                    CREATE TABLE floating_allocation (
                        address INTEGER PRIMARY KEY NOT NULL,
                        range TEXT NOT NULL,
                        owner TEXT NOT NULL);
                    CREATE TABLE mac_allocation (
                        macaddr TEXT PRIMARY KEY NOT NULL,
                        owner TEXT NOT NULL) WITHOUT ROWID;
                    CREATE TABLE metadata (
                        object_type TEXT NOT NULL,
                        object_uuid TEXT NOT NULL,
                        key TEXT NOT NULL,
                        value TEXT NOT NULL,
                        PRIMARY KEY (object_type, object_uuid, key)) WITHOUT ROWID;
                    CREATE TABLE event (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        object_type TEXT NOT NULL,
                        object_uuid TEXT NOT NULL,
                        type TEXT NOT NULL,
                        timestamp REAL NOT NULL,
                        fqdn TEXT NOT NULL,
                        duration REAL,
                        message TEXT NOT NULL,
                        extra TEXT);
                    CREATE INDEX event_object ON event(object_type, object_uuid, timestamp);
                    CREATE TABLE job (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        kind TEXT NOT NULL,
                        payload TEXT NOT NULL,
                        target TEXT NOT NULL,
                        object_key TEXT,
                        state TEXT NOT NULL,
                        attempts INTEGER NOT NULL,
                        max_attempts INTEGER NOT NULL,
                        not_before REAL NOT NULL,
                        lease_owner TEXT,
                        lease_expiry REAL,
                        last_error TEXT,
                        created REAL NOT NULL,
                        updated REAL NOT NULL);
                    CREATE INDEX job_claim ON job(state, target, id);
                    CREATE INDEX job_unfinished_object ON job(object_key, id) WHERE state IN ('queued', 'running');
                    """)
        }
        migrator.registerMigration("v2: node mesh address") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN mesh_address TEXT")
        }
        migrator.registerMigration("v3: node capacity") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN capacity TEXT")
        }
        // v4 (blobs, references, artifacts, uploads) is registered by SQLiteStore+Blobs.swift.
        registerBlobMigrations(&migrator)
        // v5 (instance config, namespaces, keys, settings) by SQLiteStore+Namespaces.swift.
        registerNamespaceMigrations(&migrator)
        // v6-job-deaths (how often a job's agent died under it) by SQLiteStore+Queue.swift.
        registerQueueMigrations(&migrator)
        // Existing networks keep the anti-spoofing filter on, as new ones get it.
        migrator.registerMigration("v7-network-spoof-filter") { db in
            try db.execute(sql: "ALTER TABLE network ADD COLUMN spoof_filter INTEGER NOT NULL DEFAULT 1")
        }
        // v8 (retention's indexes) by SQLiteStore+Retention.swift.
        registerRetentionMigrations(&migrator)
        // Existing networks never offered DNS.
        migrator.registerMigration("v9-network-provide-dns") { db in
            try db.execute(sql: "ALTER TABLE network ADD COLUMN provide_dns INTEGER NOT NULL DEFAULT 0")
            // Extra DNS records, {name: address} (SQLiteStore+NetworkDNS.swift).
            try db.execute(sql: "ALTER TABLE network ADD COLUMN dns_entries TEXT NOT NULL DEFAULT '{}'")
        }
        registerTrustMigrations(&migrator)
        // The console and display ports a node gave its instances (issue 14).
        migrator.registerMigration("v11-instance-ports") { db in
            try db.execute(sql: "ALTER TABLE instance ADD COLUMN console_port INTEGER")
            try db.execute(sql: "ALTER TABLE instance ADD COLUMN vdi_port INTEGER")
        }
        // Nodes an operator deleted (issue 14): check-ins update the row but never this column.
        migrator.registerMigration("v12-node-deleted") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN deleted REAL")
        }
        return migrator
    }

    // MARK: - Transactions

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction, mapping foreign errors to ``StoreError``.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                guard let result else { throw StoreError.backend("transaction ended without a result") }
                return result
            }
        } catch {
            throw StoreError(backendFailure: error)
        }
    }

    /// Runs `body` on a reader (a committed snapshot).
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw StoreError(backendFailure: error)
        }
    }

    /// Runs `body` in one snapshot on the calling thread when a connection for that is idle, on a
    /// pool reader otherwise (``InPlaceReaders``). Only for reads of a few rows by key: anything
    /// that may scan uses ``read(_:)``.
    func readByKey<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let inPlace: T?
        do {
            inPlace = try inPlaceReaders.read(body)
        } catch {
            throw StoreError(backendFailure: error)
        }
        if let inPlace { return inPlace }
        return try await read(body)
    }

    /// Appends an event inside the caller's transaction.
    func insertEvent(_ db: Database, _ event: Event) throws {
        try Self.execute(db, try EventTable.insert(event))
    }

    /// The "set attribute" mutate event Shaken Fist writes for every attribute change (§4).
    func recordMutation(_ db: Database, type: String, uuid: String, attribute: String, value: String?) throws {
        try insertEvent(
            db,
            Event(
                objectType: type, objectUUID: uuid, type: .mutate, fqdn: fqdn, message: "set attribute",
                extra: ["attribute": .string(attribute), "value": value.map(JSONValue.string) ?? .null]))
    }

    // MARK: - Nodes

    public func saveNode(_ node: Node) async throws {
        let upsert = try NodeTable.upsert(node)
        try await write { db in try Self.execute(db, upsert) }
    }

    public func node(named name: String) async throws -> Node? {
        try await read { db in
            try Self.firstRow(db, NodeTable.self, NodeTable.select + "WHERE name = ?", [name])
        }
    }

    public func nodes() async throws -> [Node] {
        try await read { db in try Self.allRows(db, NodeTable.self, NodeTable.select + "ORDER BY name") }
    }

    // MARK: - Networks

    public func createNetwork(
        uuid: UUID, name: String, namespace: String, netblock: IPv4Prefix, provideDHCP: Bool, provideNAT: Bool,
        provideDNS: Bool, spoofFilter: Bool, jobs: [NewJob]
    ) async throws -> Network {
        let now = Date.storableNow()
        let jobRows = try jobs.map(Self.validatedRow)
        defer { if !jobRows.isEmpty { signal() } }
        return try await write { db in
            let id = uuid.lowercasedString
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM network WHERE uuid = ?", arguments: [id]) != nil {
                throw StoreError.alreadyExists(type: "network", id: id)
            }
            // Random like Shaken Fist, retried on collision; the UNIQUE column is the real guard.
            var vxid = 0
            for _ in 0..<64 {
                let candidate = Int.random(in: 1...16_777_215)
                if try Bool.fetchOne(db, sql: "SELECT 1 FROM network WHERE vxid = ?", arguments: [candidate]) == nil {
                    vxid = candidate
                    break
                }
            }
            guard vxid != 0 else { throw StoreError.addressesExhausted(pool: "VXLAN ids") }
            let network = Network(
                uuid: uuid, name: name, namespace: namespace, netblock: netblock.network, provideDHCP: provideDHCP,
                provideNAT: provideNAT, vxid: vxid, state: .initial, stateUpdated: now, floatingGateway: nil,
                spoofFilter: spoofFilter, provideDNS: provideDNS)
            try Self.execute(db, NetworkTable.insert(network, created: now))
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
            try Self.allRows(db, NetworkTable.self, NetworkTable.select + "WHERE ?1 IS NULL OR namespace = ?1 ORDER BY created, uuid", [namespace])
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
            try Self.execute(db, NetworkTable.updateStatement([.state: state.rawValue, .stateUpdated: network.stateUpdated], where: .uuid, is: uuid))
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

    private static func writeFloatingGateway(_ db: Database, _ network: inout Network, _ address: IPv4Address?, recorder: SQLiteStore)
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
        defer { if !jobRows.isEmpty { signal() } }
        return try await write { db in
            let id = instance.uuid.lowercasedString
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM instance WHERE uuid = ?", arguments: [id]) != nil {
                throw StoreError.alreadyExists(type: "instance", id: id)
            }
            try Self.execute(db, insert)
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
            try Self.allRows(db, InstanceTable.self, Self.selectInstancesOfNode, [node])
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
            try Self.execute(
                db,
                InstanceTable.updateStatement(
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
            try Self.eachRow(
                db, InstanceTable.self, InstanceTable.select + "WHERE node = ? AND state != 'deleted' AND uuid != ?", [node, uuid.lowercasedString]
            ) { row in
                if let port = try row.int(.consolePort) { used.insert(port) }
                if let port = try row.int(.vdiPort) { used.insert(port) }
            }
            guard let chosen = candidates.first(where: { !used.contains($0.console) && !($0.vdi.map(used.contains) ?? false) && $0.console != $0.vdi })
            else { throw StoreError.invalidArgument("no free console port among \(candidates.count) candidates on node \(node)") }
            instance.consolePort = chosen.console
            instance.vdiPort = chosen.vdi
            try Self.execute(db, InstanceTable.updateStatement([.consolePort: chosen.console, .vdiPort: chosen.vdi], where: .uuid, is: uuid))
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
            try Self.execute(
                db,
                InstanceTable.updateStatement(
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
            try Self.execute(db, InstanceTable.updateStatement([.node: node], where: .uuid, is: uuid))
            try self.recordMutation(db, type: "instance", uuid: uuid.lowercasedString, attribute: "node", value: node)
            return instance
        }
    }

    // MARK: - Metadata

    public func setMetadata(objectType: String, objectUUID: String, key: String, value: JSONValue) async throws {
        let text = try value.jsonText()
        try await write { db in
            try Self.execute(db, MetadataTable.upsert(objectType: objectType, objectUUID: objectUUID, key: key, valueText: text))
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
            try Self.allRows(
                db, EventTable.self,
                EventTable.select + """
                    WHERE object_type = ?1 AND object_uuid = ?2 AND (?3 IS NULL OR type = ?3)
                    ORDER BY timestamp DESC, id DESC LIMIT ?4
                    """,
                [objectType, objectUUID, type?.rawValue, capped])
        }
    }

    // MARK: - Change signals

    public func changeToken() async throws -> Int64 {
        do {
            return try await monitor.read { db in try Int64.fetchOne(db, sql: "PRAGMA data_version") ?? 0 }
        } catch {
            throw StoreError.backend("\(error)")
        }
    }

}
