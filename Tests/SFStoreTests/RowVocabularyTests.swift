import Foundation
import SFSystem
import Testing

@testable import SFStore

/// A row as a backend other than SQLite hands it over: values by position, booleans as booleans
/// (PostgreSQL's BOOLEAN), numbers never read from text. Pure logic, so a fake is the real thing.
private struct ArrayRow: PositionalRow {
    let values: [ColumnValue]

    func int64(at index: Int) throws(ColumnTypeMismatch) -> Int64? {
        switch values[index] {
        case .null: return nil
        case .integer(let value): return value
        default: throw ColumnTypeMismatch(problem: "is not an integer")
        }
    }

    func string(at index: Int) throws(ColumnTypeMismatch) -> String? {
        switch values[index] {
        case .null: return nil
        case .text(let value): return value
        default: throw ColumnTypeMismatch(problem: "is not text")
        }
    }

    func double(at index: Int) throws(ColumnTypeMismatch) -> Double? {
        switch values[index] {
        case .null: return nil
        case .real(let value): return value
        case .integer(let value): return Double(value)
        default: throw ColumnTypeMismatch(problem: "is not a number")
        }
    }

    func bytes(at index: Int) throws(ColumnTypeMismatch) -> [UInt8]? {
        switch values[index] {
        case .null: return nil
        case .bytes(let value): return value
        default: throw ColumnTypeMismatch(problem: "is not bytes")
        }
    }

    func bool(at index: Int) throws(ColumnTypeMismatch) -> Bool? {
        switch values[index] {
        case .null: return nil
        case .bool(let value): return value
        default: throw ColumnTypeMismatch(problem: "is not a boolean")
        }
    }
}

/// The row `statement` would write, laid out in `Table`'s select-list order; a column the
/// statement leaves out reads as `missing[column]`, else NULL.
private func row<Table: StoreTable>(
    _ table: Table.Type, _ statement: TableStatement, _ missing: [Table.Column: ColumnValue] = [:]
) -> TableRow<Table, ArrayRow> {
    let written = Dictionary(uniqueKeysWithValues: zip(statement.columns, statement.values))
    return TableRow(ArrayRow(values: Table.Column.allCases.map { written[$0.sqlName] ?? missing[$0] ?? .null }))
}

private func corruptMessage(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch StoreError.corrupt(let message) {
        return message
    } catch {
        return "not a corrupt error: \(error)"
    }
}

@Suite("Row vocabulary: one file per table, read by position")
struct RowVocabularyTests {
    /// A migration that adds a column and a table file that does not list it (or lists one the
    /// table lacks) is caught here, not by a NULL in production.
    @Test("every table file lists exactly its table's columns", arguments: Backend.all)
    func tableFilesMatchTheSchema(backend: Backend) async throws {
        try await withStore(backend) { store, _ in try await Self.checkTableFiles(store as! SQLStore) }
    }

    /// PostgreSQL's schema starts where SQLite's migrations had got to (PostgresSchema.swift); a
    /// migration appended to one list and not the other is caught here.
    @Test("both backends end with the same tables and columns, in the same order")
    func backendsAgree() async throws {
        guard Backend.all.count > 1 else { return }
        var schemas: [[String: [String]]] = []
        for backend in Backend.all {
            schemas.append(
                try await withStore(backend) { opened, _ in
                    let store = opened as! SQLStore
                    var schema: [String: [String]] = [:]
                    for table in try await store.schemaTables() { schema[table] = try await store.schemaColumns(of: table) }
                    return schema
                })
        }
        #expect(schemas[0].count >= 18)
        #expect(schemas[0] == schemas[1])
    }

    private static func checkTableFiles(_ store: SQLStore) async throws {
        func check<Table: StoreTable>(_ table: Table.Type, notRead: Set<String> = []) async throws {
            let schema = try await store.schemaColumns(of: Table.name)
            #expect(!schema.isEmpty, "no table \(Table.name)")
            #expect(Set(Table.Column.allCases.map(\.sqlName)) == Set(schema).subtracting(notRead), "table \(Table.name)")
        }
        try await check(NodeTable.self)
        try await check(NetworkTable.self, notRead: ["dns_entries"])
        try await check(InstanceTable.self)
        try await check(InterfaceTable.self)
        try await check(MetadataTable.self)
        try await check(EventTable.self)
        try await check(JobTable.self)
        try await check(BlobTable.self)
        try await check(BlobReferenceTable.self)
        try await check(ArtifactTable.self)
        try await check(ArtifactVersionTable.self)
        try await check(UploadTable.self)
        try await check(NamespaceTable.self)
        try await check(NamespaceKeyTable.self)
        try await check(IPv4AllocationTable.self)
    }

    @Test("what a table's insert list writes, its decoder reads back from a non-SQLite row")
    func insertListsAndDecodersAgree() throws {
        let when = Date(timeIntervalSince1970: 1_700_000_000.25)
        var instance = Instance(
            name: "web", namespace: "ops", cpus: 2, memory: 2048, diskSpec: [DiskSpec(base: "debian", size: 8)], node: "sf-1", now: when)
        instance.errorMessage = "kept"
        #expect(try InstanceTable.decode(row(InstanceTable.self, try InstanceTable.insert(instance, created: when))) == instance)

        let netblock = try #require(IPv4Prefix("10.1.0.0/24"))
        let network = Network(
            uuid: UUID(), name: "net", namespace: "ops", netblock: netblock, provideDHCP: true, provideNAT: false, vxid: 42,
            state: .created, stateUpdated: when, floatingGateway: IPv4Address("192.0.2.9"), spoofFilter: false, provideDNS: true)
        #expect(try NetworkTable.decode(row(NetworkTable.self, NetworkTable.insert(network, created: when))) == network)

        let node = Node(name: "sf-1", roles: [.hypervisor, .networkNode], lastSeen: when, meshAddress: IPv4Address("198.51.100.7"))
        #expect(try NodeTable.decode(row(NodeTable.self, try NodeTable.upsert(node))) == node)

        let interface = Interface(
            uuid: UUID(), instanceUUID: instance.uuid, networkUUID: network.uuid, macaddr: try #require(MACAddress("02:00:00:00:00:01")),
            ipv4: IPv4Address("10.1.0.5"), order: 1, model: "virtio", floating: nil, state: .created)
        #expect(try InterfaceTable.decode(row(InterfaceTable.self, InterfaceTable.insert(interface))) == interface)

        let artifact = Artifact(type: .image, name: "debian", namespace: "system", created: when, shared: true)
        #expect(try ArtifactTable.decode(row(ArtifactTable.self, ArtifactTable.insert(artifact))) == artifact)

        let blob = Blob(size: 4096, state: .created, modified: when, locations: ["sf-1"], info: ["mime": .string("x")], created: when)
        #expect(try BlobTable.decode(row(BlobTable.self, try BlobTable.insert(blob, sha512: nil))) == blob)

        let event = Event(objectType: "instance", objectUUID: "u", type: .audit, timestamp: when, fqdn: "sf-1", duration: 0.5, message: "m")
        #expect(try EventTable.decode(row(EventTable.self, try EventTable.insert(event))) == event)

        // The database numbers jobs; a new one has never died.
        let insert = JobTable.insert(
            kind: "instance.create", payloadText: #"{"a":1}"#, target: .node("sf-1"), objectKey: "instance:u", maxAttempts: 3, now: when)
        let job = try JobTable.decode(row(JobTable.self, insert, [.id: .integer(7), .deaths: .integer(0)]))
        #expect(job.id == 7 && job.kind == "instance.create" && job.state == .queued && job.attempts == 0 && job.maxAttempts == 3)
        #expect(job.target == .node("sf-1") && job.objectKey == "instance:u" && job.notBefore == when && job.leaseOwner == nil)
    }

    @Test("a NULL, a wrong type or an unparsable text is a corrupt error naming the table and column")
    func badValuesNameTheirColumn() throws {
        let when = Date(timeIntervalSince1970: 1_700_000_000)
        let instance = Instance(name: "web", namespace: "ops", cpus: 2, memory: 2048, diskSpec: [], now: when)
        let good = try InstanceTable.insert(instance, created: when)
        func with(_ column: InstanceTable.Column, _ value: ColumnValue) -> TableStatement {
            guard let index = good.columns.firstIndex(of: column.sqlName) else { return good }
            var values = good.values
            values[index] = value
            return TableStatement(sql: good.sql, columns: good.columns, values: values)
        }
        #expect(corruptMessage { _ = try InstanceTable.decode(row(InstanceTable.self, with(.cpus, .text("two")))) } == "instance.cpus is not an integer")
        #expect(corruptMessage { _ = try InstanceTable.decode(row(InstanceTable.self, with(.name, .null))) } == "instance.name is NULL")
        #expect(corruptMessage { _ = try InstanceTable.decode(row(InstanceTable.self, with(.state, .text("melted")))) } == "instance.state 'melted' does not parse")
        let allocation = IPv4AllocationTable.insert(networkUUID: UUID(), address: IPv4Address(1), owner: "o")
        let tooBig = TableStatement(sql: allocation.sql, columns: allocation.columns, values: [allocation.values[0], .integer(1 << 32), .text("o")])
        #expect(corruptMessage { _ = try IPv4AllocationTable.decode(row(IPv4AllocationTable.self, tooBig)) } == "ipv4_allocation.address 4294967296 is not an IPv4 address")
    }
}
