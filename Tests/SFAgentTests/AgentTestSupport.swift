import Foundation
import Logging
import SFAgent
import SFBlobs
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// What the API would store for the agent tests: a network with NAT and DHCP on `netblock`, and an
/// instance booting the test guest with one interface on that network.
struct GuestObjects {
    let network: Network
    let instance: Instance
    let interface: Interface

    /// A network, and an instance of the test guest on it with one interface; `extraDisks` follow the
    /// boot disk.
    static func create(in store: any NodeStore, netblock: IPv4Prefix, extraDisks: [DiskSpec] = []) async throws -> GuestObjects {
        let network = try await store.createNetwork(
            uuid: UUID(), name: "net", namespace: "system", netblock: netblock, provideDHCP: true, provideNAT: true)
        let instance = Instance(
            name: "guest", namespace: "system", cpus: 1, memory: 256, diskSpec: [DiskSpec(base: TestGuest.baseImage)] + extraDisks)
        try await store.createInstance(instance)
        let interface = try await store.createInterface(
            uuid: UUID(), instanceUUID: instance.uuid, networkUUID: network.uuid, order: 0, model: "virtio", address: .any,
            macaddr: nil)
        return GuestObjects(network: network, instance: instance, interface: interface)
    }
}

/// A node agent as the tests build one: its host namespace a test namespace, guests under TCG,
/// instances in `instances` (default `storage`/instances) and dnsmasq files in `storage`/dhcp.
/// Without `images` (see ``makeTestImageResolver(store:storage:nodeName:imageDownloadURL:cacheHighWaterBytes:logger:)``)
/// it only takes disk bases that are files on the node.
func makeTestAgent(
    nodeName: String, store: any NodeStore, layout: HostLayout, host: NetlinkSession, root: NetlinkSession,
    libvirt: LibvirtConnection, storage: String, instances: String? = nil, floatingRange: IPv4Prefix, isNetworkNode: Bool = true,
    mesh: Mesh = Mesh(), images: ImageResolver? = nil, logger: Logger
) -> NodeAgent {
    NodeAgent(
        store: store, networks: NetworkRealizer(layout: layout, host: host, logger: logger),
        instances: InstanceRealizer(
            layout: layout, host: host, root: root, libvirt: libvirt, storagePath: instances ?? storage + "/instances", virtualization: .qemu,
            logger: logger),
        nodeName: nodeName, floatingRange: floatingRange, dhcpDirectory: storage + "/dhcp", isNetworkNode: isNetworkNode, mesh: mesh,
        images: images, logger: logger)
}

/// The only destinations a test's image fetches may reach: loopback (the network safety rule), with
/// the default deny list (link-local, 0/8) still in force, and checked first, as in production.
/// The tests' image servers listen on loopback, which the default rules refuse: opened here
/// explicitly, and everything else closed (tests fetch from loopback only).
let loopbackFetchRules = DestinationRules(
    allow: [IPRange("127.0.0.0/8")].compactMap { $0 }, deny: ["0.0.0.0/0", "::/0"].compactMap { IPRange($0) })

/// The image path as ``buildAgent(settings:logger:)`` assembles it, for a test: blobs in
/// `storage`/blobs and bases in `storage`/image-cache, records in the test's `store`, fetches only
/// from loopback, and short names resolved against `imageDownloadURL` (a ``LoopbackHTTPServer``'s
/// base URL). `cacheHighWaterBytes` 0 makes every release evict whatever no live instance uses.
func makeTestImageResolver(
    store: SQLStore, storage: String, nodeName: String, imageDownloadURL: String, cacheHighWaterBytes: Int64 = 1 << 40,
    recheckInterval: Duration = .seconds(60), logger: Logger
) -> ImageResolver {
    ImageResolver(
        records: store, storagePath: storage, nodeName: nodeName, rules: loopbackFetchRules, cacheHighWaterBytes: cacheHighWaterBytes,
        imageDownloadURL: imageDownloadURL, recheckInterval: recheckInterval, logger: logger)
}

/// A job payload naming one object: `{"<key>": "<UUID>"}`.
func jobPayload(_ key: String, _ uuid: UUID) -> JSONValue { .object([key: .string(uuid.uuidString)]) }

/// What a scenario's gate step leaves for the steps after it: the guest's interface as floated,
/// its floating address and the fixed address behind it.
struct FloatedGuest {
    let floating: IPv4Address
    let address: IPv4Address
}

/// Runs one scenario step whose failure leaves the later steps meaningful: an error it throws is
/// recorded as an issue naming the step and the scenario goes on, so that one early failure does
/// not hide the rest. A failed `#require` was recorded where it failed and is not recorded again.
/// Steps that later ones cannot do without (they make what those use) throw instead.
func independentStep(_ name: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void) async {
    do {
        try await body()
    } catch is ExpectationFailedError {
    } catch {
        Issue.record(error, "step '\(name)' failed", sourceLocation: sourceLocation)
    }
}

/// Runs a scenario whose names all start with `id`: `body` registers its cleanup in the teardown
/// as it makes things, and the teardown runs however `body` ends. After a run that did not throw,
/// `scripts/cleanup-test-leftovers --check --prefix <id>` must find nothing of it on the machine;
/// what it finds is reported, then removed, so one leak does not fail later runs as well.
func withCheckedTeardown(id: String, _ body: (Teardown) async throws -> Void) async throws {
    let teardown = Teardown()
    do {
        try await body(teardown)
    } catch {
        try await teardown.run()
        throw error
    }
    try await teardown.run()
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/cleanup-test-leftovers").path
    let check = try ChildProcess.run(["/bin/bash", script, "--check", "--prefix", id])
    #expect(check.status == 0, "leftovers: \(check.stdout)\(check.stderr)")
    if check.status != 0 { _ = try ChildProcess.run(["/bin/bash", script, "--prefix", id]) }
}

extension NodeAgent {
    /// The real instance realizer of an agent that ``makeTestAgent(nodeName:store:layout:host:root:libvirt:storage:instances:floatingRange:isNetworkNode:mesh:images:logger:)`` built.
    var realInstances: InstanceRealizer { instances as! InstanceRealizer }
}
