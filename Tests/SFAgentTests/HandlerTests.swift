import Foundation
import Logging
import SFAgent
import SFControl
import SFStore
import SFSystem
import SFTestSupport
import Synchronization
import Testing

/// The job handlers against the fake realizers and a real store: state transitions, refusals and
/// failure recording, without root, libvirtd or a kernel to change.
struct FakeHost {
    let store: SQLStore
    let instances = FakeInstanceRealizer()
    let networks = FakeNetworkRealizer()
    let agent: NodeAgent
    let runner: JobRunner
    static let node = "n1"

    init(maxDeaths: Int = Job.defaultMaxDeaths, lease: Duration = .seconds(30)) throws {
        store = try SQLStore.temporary()
        var logger = Logger(label: "sfnode.test.fake-host")
        logger.logLevel = .critical
        agent = NodeAgent(
            store: store, networks: networks, instances: instances, nodeName: Self.node, floatingRange: IPv4Prefix("198.51.100.0/24")!,
            dhcpDirectory: "/nonexistent", logger: logger)
        runner = JobRunner(
            store: store, targets: agent.jobTargets, owner: "runner-1", lease: lease, notReadyDeadline: .zero,
            notReadyDelay: .zero, maxDeaths: maxDeaths, logger: logger)
    }

    /// The agent's handlers and failure recording, registered with ``runner``.
    func registered() async -> FakeHost {
        await agent.register(with: runner)
        return self
    }

    /// A created network without DHCP or NAT (the fake makes no dnsmasq), and an instance with one
    /// interface on it, placed on `node` (nil: not placed yet).
    func networkAndInstance(node: String? = nil) async throws -> (Network, Instance) {
        let network = try await store.createNetwork(
            uuid: UUID(), name: "net", namespace: "ns", netblock: IPv4Prefix("10.0.0.0/24")!, provideDHCP: false, provideNAT: false)
        try await agent.networkJobs.create(network.uuid)
        var instance = Instance(name: "guest", namespace: "ns", cpus: 1, memory: 64, diskSpec: [])
        instance.node = node
        try await store.createInstance(instance)
        _ = try await store.createInterface(
            uuid: UUID(), instanceUUID: instance.uuid, networkUUID: network.uuid, order: 0, model: "virtio", address: .any, macaddr: nil)
        return (try await store.network(uuid: network.uuid), instance)
    }

    /// Queues a job of `kind` about `subject` for this node.
    @discardableResult
    func enqueue(_ kind: JobKind, _ subject: JobOrder.Reference) async throws -> Job {
        let order = try JobOrder(kind, subject)
        return try await store.enqueue([order.job(for: .node(Self.node))])[0]
    }

    /// The messages of the events about an instance.
    func events(of uuid: UUID) async throws -> [String] {
        try await store.events(objectType: "instance", objectUUID: uuid.lowercasedString, type: nil, limit: 100).map(\.message)
    }
}

@Suite struct HandlerTests {
    /// initial → created through the handler, and on to deleted, with the domain made and removed.
    @Test func anInstanceIsCreatedAndDeleted() async throws {
        let host = try FakeHost()
        defer { host.store.removeFiles() }
        let (network, instance) = try await host.networkAndInstance()
        #expect(network.state == .created)
        try await host.agent.instanceJobs.create(instance.uuid)
        let created = try await host.store.instance(uuid: instance.uuid)
        #expect(created.state == .created && created.powerState == .on && created.node == FakeHost.node)
        #expect(try await host.store.interfaces(instanceUUID: instance.uuid).allSatisfy { $0.state == .created })
        #expect(try await host.instances.domains.state(of: .uuid(instance.uuid)) == .on)
        try await host.agent.instanceJobs.delete(instance.uuid)
        #expect(try await host.store.instance(uuid: instance.uuid).state == .deleted)
        #expect(try await host.instances.domains.state(of: .uuid(instance.uuid)) == nil)
        #expect(host.instances.calls.all.last == "remove \(instance.uuid.lowercasedString)")
    }

    /// A job for an instance placed on another node is refused: the job fails with the reason, the
    /// instance stays as it was (no error state), and nothing is built.
    @Test func anInstanceOfAnotherNodeIsRefusedAndLeftAsItWas() async throws {
        let host = try await FakeHost().registered()
        defer { host.store.removeFiles() }
        let (_, instance) = try await host.networkAndInstance(node: "n2")
        let job = try await host.enqueue(.instanceCreate, .instance(instance.uuid))
        #expect(try await host.runner.runOne())
        let failed = try await host.store.job(id: job.id)
        #expect(failed.state == .failed)
        #expect(failed.lastError == "instance \(instance.uuid) is placed on node n2, not on n1")
        #expect(try await host.store.instance(uuid: instance.uuid).state == .initial)
        #expect(try await host.events(of: instance.uuid).contains { $0.contains("placed on node n2") })
        #expect(host.instances.calls.all.isEmpty)
    }

    /// A power operation the domain's state forbids is refused, and the power state is kept.
    @Test func pausingAnInstanceThatIsOffIsRefused() async throws {
        let host = try FakeHost()
        defer { host.store.removeFiles() }
        let (_, instance) = try await host.networkAndInstance()
        try await host.agent.instanceJobs.create(instance.uuid)
        try await host.agent.instanceJobs.power(.poweroff, instance.uuid)
        let refusal = await #expect(throws: JobError.self) { try await host.agent.instanceJobs.power(.pause, instance.uuid) }
        #expect(refusal?.isRefusal == true)
        #expect(refusal?.description.contains("cannot pause instance") == true)
        #expect(try await host.store.instance(uuid: instance.uuid).powerState == .off)
    }

    /// A create that fails for good moves the instance to creating-error with the job's own cause,
    /// and says so in an event.
    @Test func aFailedCreateShowsItsOwnCause() async throws {
        let host = try await FakeHost().registered()
        defer { host.store.removeFiles() }
        let (_, instance) = try await host.networkAndInstance()
        host.instances.failEnsureRunning(with: ControlError.invalid("the domain XML is refused: no such machine type"))
        try await host.enqueue(.instanceCreate, .instance(instance.uuid))
        #expect(try await host.runner.runOne())
        let after = try await host.store.instance(uuid: instance.uuid)
        #expect(after.state == .creatingError)
        #expect(after.errorMessage == "instance.create failed after 1 attempt(s): the domain XML is refused: no such machine type")
        #expect(try await host.events(of: instance.uuid).contains(after.errorMessage ?? "?"))
    }

    /// A network.create sent to a node that is not the network node is refused, the network stays initial.
    @Test func aNetworkCreateOffTheNetworkNodeIsRefused() async throws {
        let store = try SQLStore.temporary()
        defer { store.removeFiles() }
        let agent = NodeAgent(
            store: store, networks: FakeNetworkRealizer(), instances: FakeInstanceRealizer(), nodeName: "hv",
            floatingRange: IPv4Prefix("198.51.100.0/24")!, dhcpDirectory: "/nonexistent", isNetworkNode: false,
            logger: Logger(label: "sfnode.test"))
        let network = try await store.createNetwork(
            uuid: UUID(), name: "net", namespace: "ns", netblock: IPv4Prefix("10.0.0.0/24")!, provideDHCP: false, provideNAT: false)
        let refusal = await #expect(throws: JobError.self) { try await agent.networkJobs.create(network.uuid) }
        #expect(refusal?.isRefusal == true)
        #expect(try await store.network(uuid: network.uuid).state == .initial)
    }
}
