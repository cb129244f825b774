import Foundation
import Logging
import SFAgent
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// A reconciliation pass reads the store once per kind (``HostPlanner/snapshot()``) and looks each
/// object up there: with many objects it must still do each one's work, and only that.
struct ReconcilePassTests {
    /// 40 networks and 40 instances on this node (each on its network, the first on a second one
    /// too): a third running, a third off as they should be, a third that should run and do not; an
    /// orphan domain; a delete-wait network nothing uses any more.
    @Test func aPassOverManyObjectsDoesEachOnesWorkFromOneRead() async throws {
        let host = try FakeHost()
        let store = host.store
        var networks: [Network] = []
        for index in 0..<40 {
            let network = try await store.createNetwork(
                uuid: UUID(), name: "net\(index)", namespace: "ns", netblock: try IPv4Prefix.parse("10.9.\(index).0/24"),
                provideDHCP: false, provideNAT: false)
            try await host.agent.networkJobs.create(network.uuid)
            networks.append(try await store.network(uuid: network.uuid))
        }
        let leaving = try await store.createNetwork(
            uuid: UUID(), name: "leaving", namespace: "ns", netblock: try IPv4Prefix.parse("10.10.0.0/24"), provideDHCP: false,
            provideNAT: false)
        try await host.agent.networkJobs.create(leaving.uuid)
        _ = try await store.setNetworkState(uuid: leaving.uuid, to: .deleteWait)

        var running: [UUID: [(uuid: UUID, vxid: Int)]] = [:]
        var shouldRun: Set<UUID> = []
        for index in 0..<40 {
            var instance = Instance(name: "vm\(index)", namespace: "ns", cpus: 1, memory: 64, diskSpec: [])
            instance.node = FakeHost.node
            try await store.createInstance(instance)
            var interfaces: [(uuid: UUID, vxid: Int)] = []
            let joined: [Network] = index == 0 ? [networks[0], networks[1]] : [networks[index]]
            for (order, network) in joined.enumerated() {
                let interface = try await store.createInterface(
                    uuid: UUID(), instanceUUID: instance.uuid, networkUUID: network.uuid, order: order, model: "virtio", address: .any,
                    macaddr: nil)
                interfaces.append((interface.uuid, network.vxid))
            }
            for state in [InstanceState.preflight, .creating, .created] { try await store.setInstanceState(uuid: instance.uuid, to: state) }
            switch index % 3 {
            case 0:
                _ = try await store.setPowerState(uuid: instance.uuid, .on)
                host.instances.domains.set(instance.uuid, .on)
                running[instance.uuid] = interfaces
            case 1:
                _ = try await store.setPowerState(uuid: instance.uuid, .off)
                host.instances.domains.set(instance.uuid, .off)
            default:
                _ = try await store.setPowerState(uuid: instance.uuid, .on)
                shouldRun.insert(instance.uuid)
            }
        }
        let orphan = UUID()
        host.instances.domains.set(orphan, .on)

        let reconciler = Reconciler(agent: host.agent, logger: Logger(label: "sfnode.test.pass"))
        let report = try await reconciler.reconcileOnce()
        #expect(report.networksEnsured == 41)
        #expect(report.instancesStarted == shouldRun.count)
        #expect(report.domainsRemoved == 1)
        #expect(try await host.instances.domains.state(of: .uuid(orphan)) == nil)
        #expect(try await store.network(uuid: leaving.uuid).state == .deleted)
        let calls = host.networks.calls.all
        for network in networks { #expect(calls.contains("ensureOnNetworkNode \(network.uuid.lowercasedString)")) }
        let started = host.instances.calls.all.compactMap { $0.hasPrefix("ensureRunning ") ? String($0.dropFirst(14)) : nil }
        #expect(Set(started) == Set(shouldRun.map(\.lowercasedString)))
        // Each running instance's taps, and only theirs, with its interfaces in order on their networks' bridges.
        let plugged = host.instances.plugged.filter { running[$0.uuid] != nil }
        #expect(Set(plugged.map(\.uuid)) == Set(running.keys))
        for plan in plugged {
            #expect(plan.interfaces.map(\.uuid) == running[plan.uuid]?.map(\.uuid))
            #expect(plan.interfaces.map { Int($0.vxid) } == running[plan.uuid]?.map(\.vxid))
        }

        // The host now matches: a second pass starts and removes nothing.
        let again = try await reconciler.reconcileOnce()
        #expect(again == Reconciler.Report(networksEnsured: 40))
    }
}
