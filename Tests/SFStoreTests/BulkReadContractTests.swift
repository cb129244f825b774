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
}
