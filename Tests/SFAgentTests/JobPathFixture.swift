import Foundation
import Logging
import SFAgent
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The world of ``JobPathTests``: the agent in this process with its host namespace a test
/// namespace, a job runner for its jobs, a reconciler, an "internet" namespace on the host's uplink
/// and an "outside" one on the egress bridge, and a store holding what the API would store: a network,
/// an instance of the test guest with one interface on it (and a CD-ROM and a blank disk besides the
/// boot disk, as an installer-style instance has), and an instance whose base does not exist.
/// Every name starts with `id`; cleanup is registered in `teardown` as things are made.
///
/// The steps, methods of this type, are in JobPathTests.swift. Those that throw are gates: the later
/// steps need what they make. The others record their failures
/// (``independentStep(_:sourceLocation:_:)``) and the scenario goes on.
final class JobPathFixture {
    static let floatingRange = IPv4Prefix("192.0.2.0/24")!
    static let nodeName = "sft-node"
    /// The uplink's far end, in the internet namespace; the host's end is 203.0.113.1.
    static let uplinkPeer = IPv4Address("203.0.113.2")!

    let id: String
    let teardown: Teardown
    let logger: Logger
    let layout: HostLayout
    let hostNamespace: String
    let outsideNamespace: String
    let internetNamespace: String
    /// `<run directory>/<id>-agent`: the agent's storage path and the CD-ROM image.
    let storage: String
    let store: SQLStore
    let libvirt: LibvirtConnection
    let host: NetlinkSession
    let agent: NodeAgent
    let runner: JobRunner
    let reconciler: Reconciler
    let isoPath: String
    let network: Network
    let instance: Instance
    let interface: Interface
    /// An instance whose only disk's base does not exist, so its creation fails for good.
    let broken: Instance

    init(id: String, teardown: Teardown) async throws {
        let logger = Logger.testWarnings("sfnode.test.jobs")
        (self.id, self.teardown, self.logger) = (id, teardown, logger)
        (hostNamespace, outsideNamespace, internetNamespace) = (id + "host", id + "out", id + "inet")
        layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let storage = TestGuest.runDirectory + "/\(id)-agent"
        let store = try SQLStore.temporary(fqdn: Self.nodeName)
        (self.storage, self.store) = (storage, store)
        teardown.add("store") { store.removeFiles() }
        teardown.add("storage") { try? FileManager.default.removeItem(atPath: storage) }
        libvirt = try LibvirtConnection(logger: logger)
        try teardown.createNamespaces([hostNamespace, outsideNamespace, internetNamespace])
        host = try NetlinkSession(namespace: hostNamespace, logger: logger)
        agent = makeTestAgent(
            nodeName: Self.nodeName, store: store, layout: layout, host: host, root: try NetlinkSession(namespace: nil, logger: logger),
            libvirt: libvirt, storage: storage, floatingRange: Self.floatingRange, logger: logger)
        runner = JobRunner(
            store: store, targets: [.node(Self.nodeName), .networkNode], owner: "test-\(id)", lease: .seconds(10), logger: logger)
        await agent.register(with: runner)
        reconciler = Reconciler(agent: agent, logger: logger)
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        isoPath = storage + "/media.iso"
        #expect(FileManager.default.createFile(atPath: isoPath, contents: Data(count: 2 << 20)))
        let objects = try await GuestObjects.create(
            in: store, netblock: IPv4Prefix("10.99.0.0/24")!, extraDisks: [DiskSpec(base: isoPath, type: .cdrom), DiskSpec(size: 1)])
        (network, instance, interface) = (objects.network, objects.instance, objects.interface)
        broken = Instance(
            name: "broken", namespace: "system", cpus: 1, memory: 64, diskSpec: [DiskSpec(base: "/nonexistent/base.qcow2")])
        try await store.createInstance(broken)
        let (agent, uuids) = (agent, (instance: instance.uuid, network: network.uuid, broken: broken.uuid))
        teardown.add("jobs cleanup") {
            // If the test failed half-way, the deletes still run through the same handlers.
            try? await agent.instanceJobs.delete(uuids.broken)
            try? await agent.instanceJobs.delete(uuids.instance)
            try? await agent.networkJobs.delete(uuids.network)
        }
    }

    // MARK: Helpers

    /// Runs jobs until the queue is empty.
    func runAll() async throws {
        while try await runner.runOne() {}
    }

    /// Queues `kind` about the object `uuid`, its payload `{key: uuid}` and its object key `<object>:<uuid>`,
    /// where `<object>` is `key` up to its `_` (network_uuid: network).
    @discardableResult func enqueue(
        _ kind: String, _ key: String, _ uuid: UUID, on target: JobTarget = .node(JobPathFixture.nodeName), maxAttempts: Int? = nil
    ) async throws -> Job {
        var job = NewJob(kind: kind, payload: jobPayload(key, uuid), target: target, objectKey: "\(key.prefix { $0 != "_" }):\(uuid)")
        if let maxAttempts { job.maxAttempts = maxAttempts }
        return try #require(try await store.enqueue([job]).first)
    }

    /// ``enqueue(_:_:_:on:maxAttempts:)``, then runs every queued job; returns the job as it ended.
    @discardableResult func run(
        _ kind: String, _ key: String, _ uuid: UUID, on target: JobTarget = .node(JobPathFixture.nodeName), maxAttempts: Int? = nil
    ) async throws -> Job {
        let job = try await enqueue(kind, key, uuid, on: target, maxAttempts: maxAttempts)
        try await runAll()
        return try await store.job(id: job.id)
    }

    /// A power operation on the guest (instance.pause, ...), run at once; the job as it ended.
    func power(_ operation: String) async throws -> Job {
        try await run("instance.\(operation)", "instance_uuid", instance.uuid)
    }

    /// The pid in the network's dnsmasq pid file.
    func dnsmasqPID() throws -> Int32 {
        let path = storage + "/dhcp/\(network.uuid.lowercasedString)/pid"
        return try #require(Int32(try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    /// The `-A` lines of the network namespace's nat table.
    func natRules() throws -> [Substring] {
        try runInNamespace(layout.namespace(of: network.uuid), command: ["iptables-legacy-save", "-t", "nat"]).stdout
            .split(separator: "\n").filter { $0.hasPrefix("-A") }
    }

    /// What the guest's web server says at `floating`, from outside (throws when it does not answer).
    func guestBody(at floating: IPv4Address) async throws -> String {
        try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether the messages of `uuid`'s events include one satisfying `predicate`.
    func hasEvent(_ type: String, _ uuid: UUID, where predicate: (Event) -> Bool) async throws -> Bool {
        try await store.events(objectType: type, objectUUID: uuid.lowercasedString).contains(where: predicate)
    }
}
