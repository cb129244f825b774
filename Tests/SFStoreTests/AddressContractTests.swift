import Foundation
import SFStore
import SFSystem
import Testing

@Suite("Store contract: address management")
struct AddressContractTests {
    func makeNetwork(_ store: any NodeStore, _ block: String) async throws -> Network {
        try await store.createNetwork(
            uuid: UUID(), name: "n", namespace: "system", netblock: try IPv4Prefix.parse(block), provideDHCP: true,
            provideNAT: true)
    }

    @Test("a /29 gives out .2 to .6, then says it is exhausted; refusals name the reason", arguments: Backend.all)
    func exhaustAndRefuse(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let net = try await makeNetwork(store, "10.9.0.0/29")
            var got: [String] = []
            for index in 0..<5 {
                got.append(try await store.allocateIPv4(networkUUID: net.uuid, requested: nil, owner: "o\(index)").description)
            }
            #expect(got == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"])
            let exhausted = await storeError { _ = try await store.allocateIPv4(networkUUID: net.uuid, requested: nil, owner: "x") }
            #expect(exhausted?.description.contains("no free address") == true)

            let taken = await storeError {
                _ = try await store.allocateIPv4(networkUUID: net.uuid, requested: IPv4Address("10.9.0.4"), owner: "x")
            }
            #expect(taken == .addressUnavailable("10.9.0.4 in network \(net.uuid.uuidString.lowercased()) is taken by o2"))
            for (text, word) in [("10.9.1.4", "outside"), ("10.9.0.1", "router"), ("10.9.0.7", "broadcast"), ("10.9.0.0", "network address")] {
                let error = await storeError {
                    _ = try await store.allocateIPv4(networkUUID: net.uuid, requested: IPv4Address(text), owner: "x")
                }
                #expect(error?.description.contains(word) == true, "\(text): \(String(describing: error))")
            }

            try await store.releaseIPv4(networkUUID: net.uuid, address: try #require(IPv4Address("10.9.0.3")))
            #expect(try await store.allocateIPv4(networkUUID: net.uuid, requested: nil, owner: "again").description == "10.9.0.3")
            #expect(try await store.allocatedIPv4(networkUUID: net.uuid).count == 5)
            #expect(await storeError { _ = try await store.allocateIPv4(networkUUID: UUID(), requested: nil, owner: "x") }?
                .description.contains("not found") == true)
        }
    }

    @Test("20 concurrent allocations get 20 different addresses", arguments: Backend.all)
    func concurrentAllocations(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let net = try await makeNetwork(store, "10.8.0.0/24")
            let second = try opened.reopen()
            let addresses = try await withThrowingTaskGroup(of: IPv4Address.self) { group in
                for index in 0..<20 {
                    // Half through a second store on the same data: two processes allocating.
                    let target = index.isMultiple(of: 2) ? store : second
                    group.addTask { try await target.allocateIPv4(networkUUID: net.uuid, requested: nil, owner: "t\(index)") }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(addresses).count == 20)
            #expect(try await store.allocatedIPv4(networkUUID: net.uuid).count == 20)
        }
    }

    @Test("interfaces allocate address and MAC; float, defloat and delete release them", arguments: Backend.all)
    func interfaces(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let net = try await makeNetwork(store, "10.7.0.0/24")
            let instance = Instance(name: "vm", namespace: "system", cpus: 1, memory: 512, diskSpec: [])
            try await store.createInstance(instance)
            let first = try await store.createInterface(
                uuid: UUID(), instanceUUID: instance.uuid, networkUUID: net.uuid, order: 0, model: "virtio", address: .any,
                macaddr: nil)
            #expect(first.ipv4?.description == "10.7.0.2")
            #expect(first.macaddr.description.hasPrefix("02:00:00:"))
            let mac = try #require(MACAddress("02:00:00:aa:bb:cc"))
            let second = try await store.createInterface(
                uuid: UUID(), instanceUUID: instance.uuid, networkUUID: net.uuid, order: 1, model: "e1000",
                address: .specific(try #require(IPv4Address("10.7.0.50"))), macaddr: mac)
            #expect(second.ipv4?.description == "10.7.0.50" && second.macaddr == mac)
            let third = try await store.createInterface(
                uuid: UUID(), instanceUUID: instance.uuid, networkUUID: net.uuid, order: 2, model: "virtio", address: .none,
                macaddr: nil)
            #expect(third.ipv4 == nil)
            // A refused interface leaves nothing allocated behind (one transaction).
            let clash = await storeError {
                _ = try await store.createInterface(
                    uuid: UUID(), instanceUUID: instance.uuid, networkUUID: net.uuid, order: 3, model: "virtio", address: .any,
                    macaddr: mac)
            }
            #expect(clash?.description.contains("MAC 02:00:00:aa:bb:cc is taken") == true)
            #expect(try await store.allocatedIPv4(networkUUID: net.uuid).count == 2)
            #expect(try await store.interfaces(instanceUUID: instance.uuid).map(\.order) == [0, 1, 2])
            #expect(try await store.interface(uuid: first.uuid) == first)

            let range = try IPv4Prefix.parse("192.168.10.0/30")
            let floated = try await store.floatInterface(uuid: first.uuid, range: range)
            #expect(floated.floating?.description == "192.168.10.2")
            #expect(await storeError { _ = try await store.floatInterface(uuid: second.uuid, range: range) }?
                .description.contains("no free address") == true)
            #expect(await storeError { _ = try await store.floatInterface(uuid: third.uuid, range: range) } != nil)
            #expect(try await store.defloatInterface(uuid: first.uuid).floating == nil)
            #expect(try await store.floatInterface(uuid: second.uuid, range: range).floating?.description == "192.168.10.2")

            try await store.setInterfaceState(uuid: second.uuid, to: .created)
            let deleted = try await store.setInterfaceState(uuid: second.uuid, to: .deleted)
            #expect(deleted.floating == nil)
            #expect(try await store.allocatedIPv4(networkUUID: net.uuid).keys.map(\.description) == ["10.7.0.2"])
            #expect(try await store.allocateMAC(requested: mac, owner: "reuse") == mac)
            #expect(try await store.allocateFloating(range: range, requested: nil, owner: "gw").description == "192.168.10.2")
            #expect(try await store.interfaces(networkUUID: net.uuid).count == 2)
        }
    }

    @Test("floating addresses skip network, broadcast and .1 and are unique across ranges", arguments: Backend.all)
    func floating(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let range = try IPv4Prefix.parse("192.168.20.0/29")
            var got: [String] = []
            for index in 0..<5 { got.append(try await store.allocateFloating(range: range, requested: nil, owner: "f\(index)").description) }
            #expect(got == ["192.168.20.2", "192.168.20.3", "192.168.20.4", "192.168.20.5", "192.168.20.6"])
            #expect(await storeError { _ = try await store.allocateFloating(range: range, requested: nil, owner: "x") } != nil)
            let overlapping = try IPv4Prefix.parse("192.168.20.0/28")
            #expect(try await store.allocateFloating(range: overlapping, requested: nil, owner: "y").description == "192.168.20.7")
            #expect(await storeError {
                _ = try await store.allocateFloating(range: range, requested: IPv4Address("192.168.20.1"), owner: "x")
            }?.description.contains("router") == true)
            try await store.releaseFloating(try #require(IPv4Address("192.168.20.4")))
            #expect(try await store.allocateFloating(range: range, requested: IPv4Address("192.168.20.4"), owner: "z").description
                == "192.168.20.4")
        }
    }
}
