import Foundation
import SFControl
import SFStore
import Testing

/// The use cases against a real (temporary) store: what they refuse, by name, and what they store
/// and queue together.
@Suite struct UseCaseTests {
    @Test func aNetworkIsStoredWithItsJobForTheNetworkNode() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let network = try await fixture.control.createNetwork(name: "net", netblock: "10.0.0.0/24", requestID: "req-1")
        #expect(network.netblock.description == "10.0.0.0/24" && network.state == .initial)
        let jobs = try await fixture.store.jobs(states: [.queued], limit: 10)
        #expect(jobs.map(\.kind) == ["network.create"])
        #expect(jobs.first?.target == .networkNode)
        #expect(jobs.first?.objectKey == "network:\(network.uuid.uuidString.lowercased())")
        #expect(jobs.first?.payload == .object(["network_uuid": .string(network.uuid.uuidString.lowercased()), "request_id": .string("req-1")]))
    }

    @Test func badNetworksAreRefusedByName() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        // Shaken Fist's checks and messages (strict ip_network, /29 smallest); IPv6 refused by sfnode.
        let refusals = [
            ("10.0.0.0/33", "cannot parse netblock: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
            ("foo", "cannot parse netblock: 'foo' does not appear to be an IPv4 or IPv6 network"),
            (" 10.0.0.0/24", "cannot parse netblock: ' 10.0.0.0/24' does not appear to be an IPv4 or IPv6 network"),
            ("10.0.0.1/24", "cannot parse netblock: 10.0.0.1/24 has host bits set"),
            ("192.168.200.1/24", "cannot parse netblock: 192.168.200.1/24 has host bits set"),
            ("10.0.0.0/30", "network is below minimum size of /29"),
            ("10.0.0.0/31", "network is below minimum size of /29"),
            ("10.0.0.0/32", "network is below minimum size of /29"),
            ("10.0.0.9", "network is below minimum size of /29"),
            ("fd00::/64", "cannot parse netblock: fd00::/64 is an IPv6 network; sfnode networks are IPv4 only"),
            ("10.0.0.0/7", "network 10.0.0.0/7 is above the maximum size of /8"),
        ]
        for (netblock, message) in refusals {
            let error = await controlError { _ = try await fixture.control.createNetwork(name: "n", netblock: netblock) }
            #expect(error?.code == .invalidArgument && error?.message == message, "\(netblock): \(String(describing: error))")
        }
        #expect(await controlError { _ = try await fixture.control.createNetwork(name: "", netblock: "10.0.0.0/24") }?.message == "network name is empty")
        #expect(await controlError { _ = try await fixture.control.createNetwork(name: String(repeating: "n", count: 65), netblock: "10.0.0.0/24") }?.code == .invalidArgument)
        #expect(try await fixture.store.jobs(states: [], limit: 10).isEmpty)
    }

    @Test func theSmallestAndLargestNetworksAndDNSAreStored() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let small = try await fixture.control.createNetwork(name: "small", netblock: "10.0.0.8/29", provideDNS: true)
        let large = try await fixture.control.createNetwork(name: "large", netblock: "10.0.0.0/8")
        #expect(small.netblock.description == "10.0.0.8/29" && small.provideDNS)
        #expect(large.netblock.description == "10.0.0.0/8" && !large.provideDNS)
        #expect(try await fixture.store.network(uuid: small.uuid).provideDNS)
        #expect(try await !fixture.store.network(uuid: large.uuid).provideDNS)
    }

    @Test func anInstanceIsPlacedAndStoredWithItsInterfacesAndJobs() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let network = try await fixture.control.createNetwork(name: "net", netblock: "10.1.0.0/24")
        var request = ControlFixture.request()
        request.networks = [NetworkRequest(network: "net", address: "10.1.0.9", float: true)]
        let (instance, interfaces) = try await fixture.control.createInstance(request)
        #expect(instance.node == "hv1" && instance.state == .initial)
        #expect(interfaces.map(\.ipv4?.description) == ["10.1.0.9"] && interfaces.first?.networkUUID == network.uuid)
        let kinds = try await fixture.store.jobs(states: [.queued], limit: 10).map(\.kind).sorted()
        #expect(kinds == ["instance.create", "interface.float", "network.create"])
        let audit = try await fixture.store.events(objectType: "instance", objectUUID: instance.uuid.uuidString.lowercased()).map(\.message)
        #expect(audit.contains("schedule placed on hv1"))
        // The same name can be shown by name, and deleting queues instance.delete for its node.
        #expect(try await fixture.control.instance("web").uuid == instance.uuid)
        _ = try await fixture.control.deleteInstance("web")
        #expect(try await fixture.store.jobs(states: [.queued], limit: 1).first?.target == .node("hv1"))
    }

    @Test func badInstancesAreRefusedBeforeAnythingIsStored() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        _ = try await fixture.control.createNetwork(name: "net", netblock: "10.2.0.0/24")
        func refusal(_ change: (inout InstanceRequest) -> Void) async -> String? {
            var request = ControlFixture.request()
            change(&request)
            return await controlError { _ = try await fixture.control.createInstance(request) }?.message
        }
        #expect(await refusal { $0.name = String(repeating: "a", count: 300) }?.contains("is not usable as a DNS and Linux host name") == true)
        #expect(await refusal { $0.name = "web_1" }?.contains("is not usable as a DNS") == true)
        #expect(await refusal { $0.cpus = 0 } == "cpus is 0; an instance has 1 to 64")
        #expect(await refusal { $0.disks = [] } == "instance must specify at least one disk")
        #expect(await refusal { $0.disks = [DiskSpec()] } == "disk 0: a blank disk needs a size in GiB")
        #expect(await refusal { $0.disks = [DiskSpec(base: "/etc/shadow", size: 1)] }?.contains("is a path on the node, which users may not name") == true)
        #expect(await refusal { $0.disks = [DiskSpec(base: "ftp://x/y", size: 1)] }?.contains("is not a form sfnode knows") == true)
        #expect(await refusal { $0.disks = [DiskSpec(size: 1, bus: "ide2")] }?.contains("invalid disk bus ide2") == true)
        #expect(await refusal { $0.networks = [NetworkRequest(network: "nope")] } == "network nope not found")
        #expect(await refusal { $0.networks = [NetworkRequest(network: "net", address: "10.9.9.9")] }?.contains("is outside the range of network net") == true)
        #expect(await refusal { $0.networks = [NetworkRequest(network: "net", model: "ne2k")] }?.contains("NIC model 'ne2k'") == true)
        #expect(await refusal { $0.metadata = ["affinity": .object(["web": .string("high")])] }?.hasPrefix("affinity dictionary values should be integers") == true)
        #expect(try await fixture.store.instances(node: nil).isEmpty)
        #expect(try await fixture.store.jobs(states: [.queued], limit: 10).map(\.kind) == ["network.create"])
    }

    @Test func placementHonoursCapacityLivenessForceAndAffinity() async throws {
        let stale = ControlFixture.hypervisor("old", seen: Date().addingTimeInterval(-600))
        let small = ControlFixture.hypervisor("small", cpus: 1, memoryMiB: 1024)
        let big = ControlFixture.hypervisor("big", cpus: 8, memoryMiB: 16384)
        var settings = ControlSettings()
        settings.cpuOvercommit = 1
        let fixture = try await ControlFixture(nodes: [stale, small, big], settings: settings)
        defer { fixture.cleanup() }
        // Only big has room for 2 vCPUs without overcommit; old has not checked in for 10 minutes.
        let (first, _) = try await fixture.control.createInstance(ControlFixture.request("a", cpus: 2, network: nil))
        #expect(first.node == "big")
        let reasons = try await fixture.store.events(objectType: "instance", objectUUID: first.uuid.uuidString.lowercased()).map(\.message)
        #expect(reasons.contains("schedule rejected old: not checked in for 120 s"))
        #expect(reasons.contains { $0.hasPrefix("schedule rejected small: 0 of 1 vCPUs in use, 2 more do not fit") })
        // Forced onto a node without room: refused, naming why.
        var forced = ControlFixture.request("b", cpus: 2, network: nil)
        forced.forcePlacement = "small"
        #expect(await controlError { _ = try await fixture.control.createInstance(forced) }?.code == .insufficientResources)
        forced.forcePlacement = "nowhere"
        #expect(await controlError { _ = try await fixture.control.createInstance(forced) }?.code == .notFound)
        // Anti-affinity: an instance that avoids the tag "db" goes where no db runs, even to the smaller node.
        var database = ControlFixture.request("db1", network: nil)
        database.metadata = ["tags": .array([.string("db")])]
        database.forcePlacement = "big"
        _ = try await fixture.control.createInstance(database)
        var avoiding = ControlFixture.request("db2", network: nil)
        avoiding.metadata = ["tags": .array([.string("db")]), "affinity": .object(["db": .number(-10)])]
        #expect(try await fixture.control.createInstance(avoiding).0.node == "small")
        // Nothing fits: insufficient resources, saying why.
        let huge = ControlFixture.request("huge", cpus: 64, network: nil)
        let error = await controlError { _ = try await fixture.control.createInstance(huge) }
        #expect(error?.code == .insufficientResources && error?.message.hasPrefix("no node has room for the instance") == true)
    }

    @Test func jobsAreRefusedAtSubmissionNamingTheField() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        let submit = { (kind: String, payload: JSONValue) in
            await controlError { _ = try await fixture.control.submit(kind: kind, payload: payload, target: .networkNode) }?.message
        }
        #expect(await submit("network.explode", .object([:]))?.hasPrefix("unknown job kind 'network.explode' (known: network.create,") == true)
        #expect(await submit("network.create", .object([:])) == "the payload of a network.create job has no \"network_uuid\"")
        #expect(await submit("network.create", .object(["network_uuid": .string("x")])) == "\"network_uuid\" of a network.create job is 'x', not a UUID")
        #expect(await submit("instance.delete_all", .object(["namespace": .string("a"), "extra": .bool(true)]))?.contains("unknown field(s) \"extra\"") == true)
        #expect(try await fixture.store.jobs(states: [], limit: 10).isEmpty)
        let job = try await fixture.control.submit(kind: "instance.delete_all", payload: .object(["namespace": .string("a")]), target: .networkNode)
        #expect(job.kind == "instance.delete_all" && job.objectKey == nil)
    }

    @Test func imageReferencesResolveAsShakenFistResolvesThem() throws {
        let base = "https://images.example.org"
        #expect(try ImageReference.parse("debian:12", imageDownloadURL: base) == .url("https://images.example.org/debian:12/latest.qcow2"))
        #expect(try ImageReference.parse("label:gold", imageDownloadURL: base) == .label(namespace: nil, name: "gold"))
        #expect(try ImageReference.parse("sf://label/ns/gold", imageDownloadURL: base) == .label(namespace: "ns", name: "gold"))
        let uuid = UUID()
        #expect(try ImageReference.parse("sf://blob/\(uuid.uuidString.lowercased())", imageDownloadURL: base) == .blob(uuid))
        #expect(try ImageReference.parse("sf://upload/\(uuid.uuidString)", imageDownloadURL: base) == .upload(uuid))
        #expect(try ImageReference.parse("HTTP://127.0.0.1:8080/x.qcow2", imageDownloadURL: base) == .url("HTTP://127.0.0.1:8080/x.qcow2"))
        #expect(throws: ControlError.self) { try ImageReference.parse("sf://blob/nope", imageDownloadURL: base) }
        #expect(throws: ControlError.self) { try ImageReference.parse("/var/lib/x.qcow2", imageDownloadURL: base) }
        #expect(try ImageReference.parseStored("/var/lib/x.qcow2", imageDownloadURL: base) == .localPath("/var/lib/x.qcow2"))
    }

    @Test func errorsKeepTheirCodeAndSayWhetherARetryHelps() {
        #expect(ControlError(classifying: StoreError.notFound(type: "instance", id: "x")).code == .notFound)
        #expect(ControlError(classifying: StoreError.addressesExhausted(pool: "n")).code == .insufficientResources)
        #expect(ControlError(classifying: StoreError.backend("locked")).isRetryable)
        #expect(ControlError.notReady("network n is initial").isRetryable)
        #expect(!ControlError.invalid("bad").isRetryable)
        struct Unknown: Error {}
        #expect(ControlError(classifying: Unknown()).code == .internal)
    }
}
