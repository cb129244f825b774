import Foundation
import SFStore
import SFSystem
import Testing

@Suite("Store contract: bulk reads")
struct BulkReadContractTests {
    @Test("liveInterfaces is every interface not deleted, of every network, by UUID", arguments: Backend.all)
    func liveInterfaces(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            var networks: [Network] = []
            for index in 0..<3 {
                networks.append(
                    try await store.createNetwork(
                        uuid: UUID(), name: "n\(index)", namespace: "system", netblock: try IPv4Prefix.parse("10.8.\(index).0/24"),
                        provideDHCP: false, provideNAT: false))
            }
            var made: [Interface] = []
            for index in 0..<6 {
                let instance = Instance(name: "vm\(index)", namespace: "system", cpus: 1, memory: 64, diskSpec: [])
                try await store.createInstance(instance)
                for (order, network) in [networks[index % 3], networks[(index + 1) % 3]].enumerated() {
                    made.append(
                        try await store.createInterface(
                            uuid: UUID(), instanceUUID: instance.uuid, networkUUID: network.uuid, order: order, model: "virtio",
                            address: .any, macaddr: nil))
                }
            }
            let deleted = try await store.setInterfaceState(uuid: made[3].uuid, to: .deleted)

            let live = try await store.liveInterfaces()
            #expect(live.count == made.count - 1)
            #expect(!live.contains { $0.uuid == deleted.uuid })
            #expect(live.map(\.uuid.lowercasedString) == live.map(\.uuid.lowercasedString).sorted())
            // The same rows, field for field, as the per-network reads give.
            var perNetwork: [Interface] = []
            for network in networks { perNetwork += try await store.interfaces(networkUUID: network.uuid) }
            #expect(live == perNetwork.sorted { $0.uuid.lowercasedString < $1.uuid.lowercasedString })
        }
    }

    @Test("releaseMemory loses nothing, and reads and writes go on across it", arguments: Backend.all)
    func releaseMemory(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            for index in 0..<20 {
                _ = try await store.createNetwork(
                    uuid: UUID(), name: "n\(index)", namespace: "system", netblock: try IPv4Prefix.parse("10.9.\(index).0/24"),
                    provideDHCP: false, provideNAT: false)
            }
            let before = try await store.networks(namespace: nil)
            // Released while reads of everything and writes are under way, then once more idle.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let count = try await store.networks(namespace: nil).count
                        #expect(count >= 20)
                    }
                }
                group.addTask {
                    _ = try await store.createNetwork(
                        uuid: UUID(), name: "during", namespace: "system", netblock: try IPv4Prefix.parse("10.10.0.0/24"),
                        provideDHCP: false, provideNAT: false)
                }
                group.addTask { await store.releaseMemory() }
                try await group.waitForAll()
            }
            await store.releaseMemory()
            let after = try await store.networks(namespace: nil)
            #expect(after.count == before.count + 1)
            #expect(Set(before.map(\.uuid)).isSubset(of: Set(after.map(\.uuid))))
            #expect(try await store.network(uuid: before[0].uuid) == before[0])
        }
    }
}
