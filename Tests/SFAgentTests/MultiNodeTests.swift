import Foundation
import Logging
import SFAgent
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// Two nodes sharing one store, each with its host namespace a test namespace, joined by a mesh veth:
/// node A is the network node, node B only a hypervisor. A guest placed on B gets its address from
/// A's dnsmasq and is reachable through a floating address on A, so every packet crosses the VXLAN
/// between them. Each node floods exactly to the other, never to itself nor to a third node that
/// hosts nothing; B keeps only what its guest needs, and gives it up when the guest goes.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct MultiNodeTests {
    static let floatingRange = IPv4Prefix("192.0.2.0/24")!
    static let meshA = IPv4Address("198.51.100.1")!
    static let meshB = IPv4Address("198.51.100.2")!
    /// A third node that hosts nothing: nobody may flood to it.
    static let meshC = IPv4Address("198.51.100.3")!

    @Test func aGuestOnAHypervisorIsServedByTheNetworkNodeAcrossTheMesh() async throws {
        let logger = Logger.testWarnings("sfnode.test.multinode")
        let id = TestNames.unique("")
        let (namespaceA, namespaceB, outsideNamespace) = (id + "a", id + "b", id + "out")
        let layoutA = HostLayout(testID: id, hostNamespace: namespaceA)
        let layoutB = HostLayout(testID: id, hostNamespace: namespaceB)
        let storage = TestGuest.runDirectory + "/\(id)-multinode"
        let teardown = Teardown()
        let storeA = try SQLStore.temporary(fqdn: "sft-a")
        teardown.add("store") { storeA.removeFiles() }
        // Node B opens the same file, as a second node's agent would open a shared store.
        let storeB = try SQLStore(path: storeA.path, fqdn: "sft-b")
        teardown.add("storage") { try? FileManager.default.removeItem(atPath: storage) }
        let libvirt = try LibvirtConnection(logger: logger)

        do {
            try teardown.createNamespaces([namespaceA, namespaceB, outsideNamespace])
            let hostA = try NetlinkSession(namespace: namespaceA, logger: logger)
            let hostB = try NetlinkSession(namespace: namespaceB, logger: logger)
            let root = try NetlinkSession(namespace: nil, logger: logger)

            // The mesh: one veth between the two hosts' namespaces.
            try await hostA.createVethPair(name: "mesh0", peer: "mesh0", peerNamespace: namespaceB, up: true)
            try await hostB.setLinkUp("mesh0", true)
            try await hostA.addAddress(try IPv4Prefix(address: Self.meshA, length: 24), to: "mesh0")
            try await hostB.addAddress(try IPv4Prefix(address: Self.meshB, length: 24), to: "mesh0")

            func makeAgent(_ name: String, _ store: SQLStore, _ layout: HostLayout, _ host: NetlinkSession, networkNode: Bool, mesh: IPv4Address)
                -> NodeAgent
            {
                makeTestAgent(
                    nodeName: name, store: store, layout: layout, host: host, root: root, libvirt: libvirt,
                    storage: storage + "/\(name)", floatingRange: Self.floatingRange, isNetworkNode: networkNode,
                    mesh: Mesh(address: mesh, interface: "mesh0"), logger: logger)
            }
            let agentA = makeAgent("sft-a", storeA, layoutA, hostA, networkNode: true, mesh: Self.meshA)
            let agentB = makeAgent("sft-b", storeB, layoutB, hostB, networkNode: false, mesh: Self.meshB)
            let runnerA = JobRunner(
                store: storeA, targets: [.node("sft-a"), .networkNode], owner: "a-\(id)", lease: .seconds(10), logger: logger)
            let runnerB = JobRunner(store: storeB, targets: [.node("sft-b")], owner: "b-\(id)", lease: .seconds(10), logger: logger)
            await agentA.register(with: runnerA)
            await agentB.register(with: runnerB)
            try await agentA.checkIn()
            try await agentB.checkIn()
            try await storeA.saveNode(Node(name: "sft-c", roles: [.hypervisor], meshAddress: Self.meshC))
            #expect(try await storeA.node(named: "sft-b")?.meshAddress == Self.meshB)
            #expect(try await storeA.node(named: "sft-b")?.roles == [.hypervisor])

            // The outside world on A's egress bridge.
            try await agentA.networkJobs.ensureEgress()
            try await hostA.createVethPair(
                name: "sfoutside", peer: "eth0", peerNamespace: outsideNamespace, master: layoutA.egressBridge, up: true)
            let outside = try NetlinkSession(namespace: outsideNamespace, logger: logger)
            try await outside.addAddress(IPv4Prefix("192.0.2.254/24")!, to: "eth0")
            try await outside.setLinkUp("eth0", true)

            let objects = try await GuestObjects.create(in: storeA, netblock: IPv4Prefix("10.98.0.0/24")!)
            let (network, instance, interface) = (objects.network, objects.instance, objects.interface)
            let vxid = UInt32(network.vxid)
            teardown.add("objects") {
                try? await agentB.instanceJobs.delete(instance.uuid)
                try? await agentA.networkJobs.delete(network.uuid)
            }
            func runAll() async throws {
                // Until neither node has anything left: B's jobs make work for A and the other way round.
                while true {
                    if try await runnerA.runOne() { continue }
                    if try await runnerB.runOne() { continue }
                    break
                }
                for job in try await storeA.jobs(states: [.failed], limit: 10) {
                    Issue.record("job \(job.kind) failed: \(job.lastError ?? "")")
                }
            }
            func payload(_ key: String, _ uuid: UUID) -> JSONValue { .object([key: .string(uuid.uuidString)]) }
            func flood(_ host: NetlinkSession) async throws -> [IPv4Address] {
                try await host.floodEntries(device: layoutA.vxlan(vxid)).sorted { $0.value < $1.value }
            }

            // network.create is the network node's: B builds nothing yet.
            _ = try await storeA.enqueue(
                kind: "network.create", payload: payload("network_uuid", network.uuid), target: .networkNode,
                objectKey: "network:\(network.uuid)")
            try await runAll()
            #expect(try await storeA.network(uuid: network.uuid).state == .created)
            #expect(try await flood(hostA) == [])
            #expect(try await hostB.link(named: layoutB.bridge(vxid)) == nil)

            // The guest on B: B builds its share and floods to A; A learns of B through network.refresh.
            _ = try await storeB.enqueue(
                kind: "instance.create", payload: payload("instance_uuid", instance.uuid), target: .node("sft-b"),
                objectKey: "instance:\(instance.uuid)")
            _ = try await storeB.enqueue(
                kind: "interface.float", payload: payload("interface_uuid", interface.uuid), target: .networkNode,
                objectKey: "interface:\(interface.uuid)")
            try await runAll()
            #expect(try await storeA.instance(uuid: instance.uuid).node == "sft-b")
            #expect(try await flood(hostA) == [Self.meshB])
            #expect(try await flood(hostB) == [Self.meshA])
            let tap = try #require(try await hostB.link(named: layoutB.tap(of: interface.uuid)))
            #expect(tap.masterIndex == (try await hostB.link(named: layoutB.bridge(vxid)))?.index)
            #expect(try await hostA.link(named: layoutA.tap(of: interface.uuid)) == nil)
            #expect(try await hostB.link(named: layoutB.routerOuter(vxid)) == nil)

            // DHCP from A and HTTP through A's floating address: both cross the VXLAN.
            let floated = try await storeA.interface(uuid: interface.uuid)
            let floating = try #require(floated.floating)
            let console = try await TestGuest.waitForSerial(
                path: agentB.realInstances.consoleLog(of: instance.uuid), containing: TestGuest.readyMarker, timeout: .seconds(180))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == floated.ipv4?.description)
            let body = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)

            // Reconciliation on either node keeps the other's guest and devices, and repairs B's
            // flood list after a hand edit.
            try await hostB.deleteFloodEntry(device: layoutB.vxlan(vxid), remote: Self.meshA)
            let passB = try await Reconciler(agent: agentB, logger: logger).reconcileOnce()
            #expect(passB == Reconciler.Report(networksEnsured: 1))
            #expect(try await flood(hostB) == [Self.meshA])
            let passA = try await Reconciler(agent: agentA, logger: logger).reconcileOnce()
            #expect(passA == Reconciler.Report(networksEnsured: 1))
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .on)

            // B moves to another mesh address: its next check-in tells A, which floods there at once.
            let movedMesh = IPv4Address("198.51.100.12")!
            try await hostB.addAddress(try IPv4Prefix(address: movedMesh, length: 24), to: "mesh0")
            try await makeAgent("sft-b", storeB, layoutB, hostB, networkNode: false, mesh: movedMesh).checkIn()
            try await runAll()
            #expect(try await flood(hostA) == [movedMesh])

            // The guest goes: B gives up its share and A stops flooding to B.
            _ = try await storeB.enqueue(
                kind: "instance.delete", payload: payload("instance_uuid", instance.uuid), target: .node("sft-b"),
                objectKey: "instance:\(instance.uuid)")
            try await runAll()
            #expect(try await libvirt.lookup(uuid: instance.uuid) == nil)
            #expect(try await hostB.links().filter { layoutB.isAgentLink($0.name) }.isEmpty)
            #expect(try await flood(hostA) == [])
            let hosts = try String(contentsOfFile: storage + "/sft-a/dhcp/\(network.uuid.uuidString.lowercased())/hosts", encoding: .utf8)
            #expect(!hosts.contains(interface.macaddr.description))

            _ = try await storeA.enqueue(
                kind: "network.delete", payload: payload("network_uuid", network.uuid), target: .networkNode,
                objectKey: "network:\(network.uuid)")
            try await runAll()
            #expect(try await storeA.network(uuid: network.uuid).state == .deleted)
            #expect(!NetworkNamespace.exists(named: layoutA.namespace(of: network.uuid)))
            #expect(try await hostA.links().filter { layoutA.networkDeviceVXID($0.name) != nil }.isEmpty)
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
        #expect(try await NetlinkSession(namespace: nil, logger: logger).links().filter { $0.name.hasPrefix(id) }.isEmpty)
    }
}
