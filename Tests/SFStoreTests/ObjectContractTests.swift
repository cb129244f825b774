import Foundation
import SFStore
import SFSystem
import Testing

@Suite("Store contract: objects, state machines, metadata, events")
struct ObjectContractTests {
    @Test("nodes, networks, instances round-trip", arguments: Backend.all)
    func roundTrips(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let seen = Date(timeIntervalSince1970: 1_700_000_000.25)
            let mesh = try #require(IPv4Address("198.51.100.7"))
            try await store.saveNode(Node(name: "sf-1", roles: [.hypervisor, .networkNode], lastSeen: seen))
            try await store.saveNode(Node(name: "sf-2", roles: [.hypervisor]))
            #expect(try await store.node(named: "sf-1") == Node(name: "sf-1", roles: [.hypervisor, .networkNode], lastSeen: seen))
            // A check-in replaces the whole row, mesh address included.
            try await store.saveNode(Node(name: "sf-1", roles: [.hypervisor], lastSeen: seen, meshAddress: mesh))
            #expect(try await store.node(named: "sf-1") == Node(name: "sf-1", roles: [.hypervisor], lastSeen: seen, meshAddress: mesh))
            #expect(try await store.nodes().map(\.name) == ["sf-1", "sf-2"])
            #expect(try await store.node(named: "nope") == nil)

            let netUUID = UUID()
            let network = try await store.createNetwork(
                uuid: netUUID, name: "net", namespace: "system", netblock: try IPv4Prefix.parse("10.0.0.9/24"),
                provideDHCP: true, provideNAT: false)
            #expect(network.netblock.description == "10.0.0.0/24")
            #expect((1...16_777_215).contains(network.vxid))
            #expect(network.state == .initial)
            #expect(try await store.network(uuid: netUUID) == network)
            // The gateway is allocated and recorded together, kept when asked again, and released
            // with the record.
            let floating = try IPv4Prefix.parse("192.168.10.0/28")
            let gateway = try #require(try await store.ensureFloatingGateway(networkUUID: netUUID, range: floating).floatingGateway)
            #expect(gateway.description == "192.168.10.2")
            #expect(try await store.ensureFloatingGateway(networkUUID: netUUID, range: floating).floatingGateway == gateway)
            #expect(try await store.network(uuid: netUUID).floatingGateway == gateway)
            #expect(try await store.releaseFloatingGateway(networkUUID: netUUID).floatingGateway == nil)
            #expect(try await store.releaseFloatingGateway(networkUUID: netUUID).floatingGateway == nil)
            #expect(try await store.allocateFloating(range: floating, requested: gateway, owner: "again") == gateway)
            #expect(try await store.networks(namespace: "system").count == 1)
            #expect(try await store.networks(namespace: "other").isEmpty)
            #expect(await storeError {
                _ = try await store.createNetwork(
                    uuid: netUUID, name: "again", namespace: "system", netblock: try IPv4Prefix.parse("10.1.0.0/24"),
                    provideDHCP: false, provideNAT: false)
            } == .alreadyExists(type: "network", id: netUUID.uuidString.lowercased()))

            // VXLAN ids are unique across networks.
            var vxids: Set<Int> = [network.vxid]
            for index in 0..<20 {
                let other = try await store.createNetwork(
                    uuid: UUID(), name: "n\(index)", namespace: "system", netblock: try IPv4Prefix.parse("10.2.0.0/24"),
                    provideDHCP: false, provideNAT: false)
                vxids.insert(other.vxid)
            }
            #expect(vxids.count == 21)

            let instance = Instance(
                name: "vm", namespace: "system", cpus: 2, memory: 1024,
                diskSpec: [DiskSpec(base: "/srv/images/debian.qcow2", size: 20, bus: "virtio"),
                           DiskSpec(size: 8, type: .disk), DiskSpec(base: "/srv/iso/x.iso", type: .cdrom)],
                node: "sf-1", now: Date(timeIntervalSince1970: 1_700_000_001))
            try await store.createInstance(instance)
            #expect(try await store.instance(uuid: instance.uuid) == instance)
            #expect(try await store.instances(node: "sf-1") == [instance])
            #expect(try await store.instances(node: "sf-2").isEmpty)
            #expect(try await store.setInstanceNode(uuid: instance.uuid, "sf-2").node == "sf-2")
            #expect(await storeError { _ = try await store.instance(uuid: UUID()) }.map { "\($0)" }?.contains("not found") == true)
        }
    }

    @Test("the instance state machine refuses what it forbids (Shaken Fist's lifecycle)", arguments: Backend.all)
    func instanceStates(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let instance = Instance(name: "vm", namespace: "system", cpus: 1, memory: 512, diskSpec: [])
            try await store.createInstance(instance)
            let id = instance.uuid
            let skip = await storeError { try await store.setInstanceState(uuid: id, to: .created) }
            #expect(skip == .invalidTransition(type: "instance", id: id.uuidString.lowercased(), from: "initial", to: "created"))
            #expect(skip?.description.contains("initial -> created") == true)
            try await store.setInstanceState(uuid: id, to: .preflight)
            try await store.setInstanceState(uuid: id, to: .creating)
            try await store.setInstanceState(uuid: id, to: .creating)  // same state: a repeatable no-op
            #expect(await storeError { try await store.setInstanceState(uuid: id, to: .preflightError) } != nil)
            let failed = try await store.setInstanceState(uuid: id, to: .creatingError, errorMessage: "qemu died")
            #expect(failed.errorMessage == "qemu died")
            #expect(await storeError { try await store.setInstanceState(uuid: id, to: .deleted) } != nil)
            try await store.setInstanceState(uuid: id, to: .error)
            try await store.setInstanceState(uuid: id, to: .deleteWait)
            #expect(await storeError { try await store.setInstanceState(uuid: id, to: .created) } != nil)
            try await store.setInstanceState(uuid: id, to: .deleted)
            for next in InstanceState.allCases where next != .deleted {
                #expect(await storeError { try await store.setInstanceState(uuid: id, to: next) } != nil)
            }
            let stored = try await store.instance(uuid: id)
            #expect(stored.state == .deleted)
            #expect(stored.errorMessage == "qemu died")

            // Power state keeps the previous one only on change.
            #expect(try await store.setPowerState(uuid: id, .on).powerStatePrevious == .initial)
            #expect(try await store.setPowerState(uuid: id, .on).powerStatePrevious == .initial)
            let off = try await store.setPowerState(uuid: id, .off)
            #expect(off.powerState == .off && off.powerStatePrevious == .on)

            let net = try await store.createNetwork(
                uuid: UUID(), name: "n", namespace: "system", netblock: try IPv4Prefix.parse("10.0.0.0/24"),
                provideDHCP: false, provideNAT: false)
            try await store.setNetworkState(uuid: net.uuid, to: .created)
            try await store.setNetworkState(uuid: net.uuid, to: .deleted)
            #expect(await storeError { try await store.setNetworkState(uuid: net.uuid, to: .created) }
                == .invalidTransition(type: "network", id: net.uuid.uuidString.lowercased(), from: "deleted", to: "created"))
        }
    }

    @Test("metadata round-trips JSON values", arguments: Backend.all)
    func metadata(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            try await store.setMetadata(objectType: "instance", objectUUID: "u1", key: "tags", value: ["a", 1, true, nil])
            try await store.setMetadata(objectType: "instance", objectUUID: "u1", key: "owner", value: "bob")
            try await store.setMetadata(objectType: "instance", objectUUID: "u1", key: "owner", value: ["name": "carol"])
            try await store.setMetadata(objectType: "network", objectUUID: "u1", key: "x", value: 2.5)
            #expect(try await store.metadata(objectType: "instance", objectUUID: "u1")
                == ["tags": ["a", 1, true, nil], "owner": ["name": "carol"]])
            try await store.deleteMetadata(objectType: "instance", objectUUID: "u1", key: "tags")
            #expect(try await store.metadata(objectType: "instance", objectUUID: "u1").keys.sorted() == ["owner"])
            #expect(try await store.metadata(objectType: "network", objectUUID: "u1") == ["x": 2.5])
        }
    }

    @Test("events come back newest first, capped", arguments: Backend.all)
    func events(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let base = Date(timeIntervalSince1970: 1_700_000_000)
            for index in 0..<1005 {
                try await store.record(
                    Event(
                        objectType: "instance", objectUUID: "e1", type: index.isMultiple(of: 2) ? .audit : .status,
                        timestamp: base.addingTimeInterval(Double(index)), fqdn: "sf-1",
                        duration: index == 1004 ? 1.5 : nil, message: "event \(index)",
                        extra: ["request-id": "req-\(index)"]))
            }
            try await store.record(Event(objectType: "instance", objectUUID: "other", type: .audit, fqdn: "sf-1", message: "x"))
            let latest = try await store.events(objectType: "instance", objectUUID: "e1")
            #expect(latest.count == 100)
            #expect(latest.first?.message == "event 1004")
            #expect(latest.first?.duration == 1.5)
            #expect(latest.first?.requestID == "req-1004")
            #expect(latest.first?.type == .audit)
            #expect(latest.map(\.timestamp) == latest.map(\.timestamp).sorted(by: >))
            #expect(try await store.events(objectType: "instance", objectUUID: "e1", limit: 5000).count == 1000)
            #expect(try await store.events(objectType: "instance", objectUUID: "e1", limit: 3).map(\.message)
                == ["event 1004", "event 1003", "event 1002"])
            // By type in the query itself: the oldest status event is found past the newest 1000 events.
            let statuses = try await store.events(objectType: "instance", objectUUID: "e1", type: .status, limit: 1000)
            #expect(statuses.count == 502)
            #expect(statuses.allSatisfy { $0.type == .status })
            #expect(statuses.last?.message == "event 1")
            #expect(try await store.events(objectType: "instance", objectUUID: "e1", type: .usage, limit: 10).isEmpty)
        }
    }

    @Test("state changes leave mutate events", arguments: Backend.all)
    func mutateEvents(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let instance = Instance(name: "vm", namespace: "system", cpus: 1, memory: 512, diskSpec: [])
            try await store.createInstance(instance)
            try await store.setInstanceState(uuid: instance.uuid, to: .preflight)
            let events = try await store.events(objectType: "instance", objectUUID: instance.uuid.uuidString.lowercased())
            #expect(events.map(\.message) == ["set attribute", "db record created"])
            #expect(events.first?.extra?["value"] == "preflight")
        }
    }

    @Test("opening the same file again applies no migration twice and keeps the data", arguments: Backend.all)
    func reopen(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            try await store.saveNode(Node(name: "sf-1", roles: [.hypervisor]))
            let again = try opened.reopen()
            let third = try opened.reopen()
            #expect(try await again.node(named: "sf-1")?.roles == [.hypervisor])
            #expect(try await third.nodes().count == 1)
        }
    }
}
