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

/// The floating-address path driven by jobs through the agent's runner, with the agent's host
/// namespace set to a test namespace: network.create, instance.create and interface.float make the
/// guest reachable from outside; interface.defloat makes it unreachable; instance.delete and
/// network.delete leave nothing behind. Bad jobs fail with a clear message and the runner goes on.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct JobPathTests {
    static let floatingRange = IPv4Prefix("192.0.2.0/24")!

    @Test func jobsFloatAGuestAndCleanUp() async throws {
        var logger = Logger(label: "sfnode.test.jobs")
        logger.logLevel = .warning
        let id = TestNames.unique("")
        let hostNamespace = id + "host"
        let outsideNamespace = id + "out"
        let internetNamespace = id + "inet"
        let layout = HostLayout(hostNamespace: hostNamespace, namespacePrefix: id + "-", tapPrefix: id)
        let storage = TestGuest.runDirectory + "/\(id)-agent"
        let teardown = Teardown()
        let store = try SQLiteStore.temporary(fqdn: "sft-node")
        teardown.add("store") { store.removeFiles() }
        teardown.add("storage") { try? FileManager.default.removeItem(atPath: storage) }
        let libvirt = try LibvirtConnection(logger: logger)

        do {
            try teardown.createNamespaces([hostNamespace, outsideNamespace, internetNamespace])
            let host = try NetlinkSession(namespace: hostNamespace, logger: logger)
            let root = try NetlinkSession(namespace: nil, logger: logger)
            let agent = makeTestAgent(
                nodeName: "sft-node", store: store, layout: layout, host: host, root: root, libvirt: libvirt, storage: storage,
                floatingRange: Self.floatingRange, logger: logger)
            let runner = JobRunner(
                store: store, targets: [.node("sft-node"), .networkNode], owner: "test-\(id)", lease: .seconds(10),
                logger: logger)
            await agent.register(with: runner)

            // The host's uplink, which its default route leaves by: the agent finds it there and
            // masquerades the floating range out of it.
            try await host.createVethPair(name: "sfuplink", peer: "eth0", peerNamespace: internetNamespace, up: true)
            try await host.addAddress(IPv4Prefix("203.0.113.1/24")!, to: "sfuplink")
            try await host.replaceRoute(.defaultRoute(via: IPv4Address("203.0.113.2")!, device: "sfuplink"))
            let internet = try NetlinkSession(namespace: internetNamespace, logger: logger)
            try await internet.addAddress(IPv4Prefix("203.0.113.2/24")!, to: "eth0")
            try await internet.setLinkUp("eth0", true)

            // The outside world on the egress bridge.
            try await agent.ensureEgress()
            try await host.createVethPair(
                name: "sfoutside", peer: "eth0", peerNamespace: outsideNamespace, master: layout.egressBridge, up: true)
            let outside = try NetlinkSession(namespace: outsideNamespace, logger: logger)
            try await outside.addAddress(IPv4Prefix("192.0.2.254/24")!, to: "eth0")
            try await outside.setLinkUp("eth0", true)

            // What the API would store: a network, an instance with one interface on it.
            // With a CD-ROM and a blank disk besides the boot disk, as an installer-style instance has.
            try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
            let isoPath = storage + "/media.iso"
            #expect(FileManager.default.createFile(atPath: isoPath, contents: Data(count: 2 << 20)))
            let objects = try await GuestObjects.create(
                in: store, netblock: IPv4Prefix("10.99.0.0/24")!,
                extraDisks: [DiskSpec(base: isoPath, type: .cdrom), DiskSpec(size: 1)])
            let (network, instance, interface) = (objects.network, objects.instance, objects.interface)
            teardown.add("jobs cleanup") {
                // If the test failed half-way, the deletes still run through the same handlers.
                try? await agent.deleteInstance(instance.uuid)
                try? await agent.deleteNetwork(network.uuid)
            }

            func runAll() async throws {
                while try await runner.runOne() {}
            }
            func payload(_ key: String, _ uuid: UUID) -> JSONValue { .object([key: .string(uuid.uuidString)]) }

            _ = try await store.enqueue(
                kind: "network.create", payload: payload("network_uuid", network.uuid), target: .networkNode,
                objectKey: "network:\(network.uuid)")
            _ = try await store.enqueue(
                kind: "instance.create", payload: payload("instance_uuid", instance.uuid), target: .node("sft-node"),
                objectKey: "instance:\(instance.uuid)")
            _ = try await store.enqueue(
                kind: "interface.float", payload: payload("interface_uuid", interface.uuid), target: .networkNode,
                objectKey: "interface:\(interface.uuid)")
            // Bad jobs: they fail with a message naming what is wrong, and the good ones still run.
            let unknown = try await store.enqueue(kind: "instance.explode", payload: .object([:]), target: .node("sft-node"), objectKey: nil)
            let malformed = try await store.enqueue(
                kind: "instance.create", payload: .object(["instance_uuid": .string("not-a-uuid")]), target: .node("sft-node"),
                // A misleading key: the failure must not be pinned on the network it names.
                objectKey: "network:\(network.uuid)")
            try await runAll()

            // A job that fails for good moves its object to its error state and says why in an event.
            let broken = Instance(
                name: "broken", namespace: "system", cpus: 1, memory: 64, diskSpec: [DiskSpec(base: "/nonexistent/base.qcow2")])
            try await store.createInstance(broken)
            let doomed = try await store.enqueue(
                kind: "instance.create", payload: payload("instance_uuid", broken.uuid), target: .node("sft-node"),
                objectKey: "instance:\(broken.uuid)", maxAttempts: 1)
            try await runAll()
            #expect(try await store.job(id: doomed.id).state == .failed)
            let brokenAfter = try await store.instance(uuid: broken.uuid)
            #expect(brokenAfter.state == .creatingError)
            #expect(brokenAfter.errorMessage?.contains("/nonexistent/base.qcow2") == true)
            #expect(try await store.events(objectType: "instance", objectUUID: broken.uuid.uuidString.lowercased())
                .contains { $0.message.hasPrefix("instance.create failed after 1 attempt(s)") })
            teardown.add("broken instance") { try? await agent.deleteInstance(broken.uuid) }

            #expect(try await store.job(id: unknown.id).state == .failed)
            #expect(try await store.job(id: unknown.id).lastError?.contains("unknown job kind 'instance.explode'") == true)
            #expect(try await store.job(id: malformed.id).lastError?.contains("'not-a-uuid', not a UUID") == true)
            for job in try await store.jobs(states: [.failed], limit: 10) where ![unknown.id, malformed.id, doomed.id].contains(job.id) {
                Issue.record("job \(job.kind) failed: \(job.lastError ?? "")")
            }

            #expect(try await store.instance(uuid: instance.uuid).state == .created)
            #expect(try await store.network(uuid: network.uuid).state == .created)
            let floated = try await store.interface(uuid: interface.uuid)
            let floating = try #require(floated.floating)
            let address = try #require(floated.ipv4)
            let console = try await TestGuest.waitForSerial(
                path: agent.instances.consoleLog(of: instance.uuid), containing: TestGuest.readyMarker, timeout: .seconds(180))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == address.description)
            // The CD-ROM is the file itself, read-only on SATA; the blank disk a fresh qcow2 of 1 GiB.
            let live = try #require(try await libvirt.xmlDescription(of: .uuid(instance.uuid)))
            let cdrom = try #require(live.range(of: "device='cdrom'").map { String(live[$0.lowerBound...].prefix(600)) })
            #expect(cdrom.contains("file='\(isoPath)'"))
            #expect(cdrom.contains("bus='sata'"))
            #expect(cdrom.contains("<readonly/>"))
            let blank = agent.instances.directory(of: instance.uuid) + "/disk2.qcow2"
            #expect(live.contains("file='\(blank)'"))
            let info = try ChildProcess.run(["/usr/bin/qemu-img", "info", "--force-share", "--output=json", blank])
            #expect(info.stdout.contains("\"virtual-size\": 1073741824"))
            let body = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)
            #expect(try await store.events(objectType: "instance", objectUUID: instance.uuid.uuidString.lowercased())
                .contains { $0.message == "instance creation complete" && $0.duration != nil })

            // Out through the uplink: the guest's connection leaves the host from the uplink's address.
            let uplinkPeer = IPv4Address("203.0.113.2")!
            let listener = try await TestListener.open(in: internetNamespace, address: uplinkPeer, port: 9000)
            async let accepted = listener.acceptOne()
            _ = try await NamespaceSockets.httpGet(
                from: outsideNamespace, host: floating, path: TestGuest.probePath(to: uplinkPeer, port: 9000), timeoutSeconds: 15)
            #expect(try await accepted.peer == IPv4Address("203.0.113.1"))

            // Drift: the bridge deleted, the DNAT rules flushed and dnsmasq killed by hand. One
            // reconciliation pass restores all three, and a second pass (an agent restart) changes nothing.
            let reconciler = Reconciler(agent: agent, logger: logger)
            let namespace = layout.namespace(of: network.uuid)
            let dhcpPIDFile = storage + "/dhcp/\(network.uuid.uuidString.lowercased())/pid"
            let dnsmasq = try #require(Int32(try String(contentsOfFile: dhcpPIDFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            try await host.deleteLink(layout.bridge(UInt32(network.vxid)))
            #expect(try runInNamespace(namespace, command: ["iptables-legacy", "-w", "-t", "nat", "-F", "SFNODE-PREROUTING"]).status == 0)
            kill(dnsmasq, SIGKILL)
            #expect(await eventually { kill(dnsmasq, 0) != 0 || (try? String(contentsOfFile: "/proc/\(dnsmasq)/stat", encoding: .utf8))?.contains(") Z ") == true })
            await #expect(throws: (any Error).self) {
                _ = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating, timeoutSeconds: 2)
            }
            // Strays of sfnode's naming that belong to nothing: a network device and a tap.
            let strayBridge = layout.bridge(0xFFFFFE)
            let strayTap = layout.tap(of: UUID())
            try await host.createBridge(name: strayBridge, up: true)
            try await host.createTap(name: strayTap)
            let repair = try await reconciler.reconcileOnce()
            #expect(repair.instancesStarted == 0)
            #expect(repair.linksRemoved == 2)
            #expect(try await host.link(named: strayBridge) == nil)
            #expect(try await host.link(named: strayTap) == nil)
            #expect(try await host.link(named: layout.tap(of: interface.uuid)) != nil)
            #expect(try await host.link(named: layout.bridge(UInt32(network.vxid))) != nil)
            let restoredPID = try #require(Int32(try String(contentsOfFile: dhcpPIDFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(restoredPID != dnsmasq)
            #expect(kill(restoredPID, 0) == 0)
            let repaired = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating)
            #expect(repaired.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)
            let rulesBefore = try runInNamespace(namespace, command: ["iptables-legacy-save", "-t", "nat"]).stdout
                .split(separator: "\n").filter { $0.hasPrefix("-A") }
            let again = try await reconciler.reconcileOnce()
            #expect(again == Reconciler.Report(networksEnsured: 1, instancesStarted: 0, domainsRemoved: 0, namespacesRemoved: 0))
            #expect(try runInNamespace(namespace, command: ["iptables-legacy-save", "-t", "nat"]).stdout
                .split(separator: "\n").filter { $0.hasPrefix("-A") } == rulesBefore)
            #expect(try String(contentsOfFile: dhcpPIDFile, encoding: .utf8).contains("\(restoredPID)"))

            // The network's namespace deleted by hand while dnsmasq still runs in it: the next pass
            // makes the namespace again (router, rules, a new dnsmasq) instead of working in the old
            // one through a stale thread, and stops the stray dnsmasq.
            try NetworkNamespace.delete(named: namespace)
            _ = try await reconciler.reconcileOnce()
            #expect(NetworkNamespace.exists(named: namespace))
            let freshPID = try #require(Int32(try String(contentsOfFile: dhcpPIDFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(freshPID != restoredPID)
            #expect(NetworkNamespace.identity(ofProcess: freshPID) == NetworkNamespace.identity(named: namespace))
            #expect(await eventually { kill(restoredPID, 0) != 0 })
            let rebuilt = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating)
            #expect(rebuilt.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)

            _ = try await store.enqueue(
                kind: "interface.defloat", payload: payload("interface_uuid", interface.uuid), target: .networkNode,
                objectKey: "interface:\(interface.uuid)")
            try await runAll()
            #expect(try await store.interface(uuid: interface.uuid).floating == nil)
            await #expect(throws: (any Error).self) {
                _ = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating, timeoutSeconds: 3)
            }

            func power(_ operation: String) async throws -> Job {
                let job = try await store.enqueue(
                    kind: "instance.\(operation)", payload: payload("instance_uuid", instance.uuid), target: .node("sft-node"),
                    objectKey: "instance:\(instance.uuid)")
                try await runAll()
                return try await store.job(id: job.id)
            }
            // A guest stopped outside sfnode (here destroyed, as a guest's own shutdown also counts)
            // is recorded as off by the next pass, not started again behind the operator's back.
            try await libvirt.destroy(.uuid(instance.uuid))
            let seen = try await reconciler.reconcileOnce()
            #expect(seen.instancesStarted == 0)
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .off)
            #expect(try await store.instance(uuid: instance.uuid).powerState == .off)
            #expect(try await store.events(objectType: "instance", objectUUID: instance.uuid.uuidString.lowercased())
                .contains { $0.message == "detected poweroff" })
            #expect(try await power("poweron").state == .succeeded)

            // Power: pause and unpause; power off, then pausing is refused by name; power on again.
            #expect(try await power("pause").state == .succeeded)
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .paused)
            #expect(try await store.instance(uuid: instance.uuid).powerState == .paused)
            #expect(try await power("unpause").state == .succeeded)
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .on)
            #expect(try await power("poweroff").state == .succeeded)
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .off)
            let refused = try await power("pause")
            #expect(refused.state == .failed)
            #expect(refused.lastError?.contains("cannot pause instance \(instance.uuid): it is off, not on") == true)
            #expect(try await power("poweron").state == .succeeded)
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .on)
            let tap = try #require(try await host.link(named: layout.tap(of: interface.uuid)))
            #expect(tap.masterIndex == (try await host.link(named: layout.bridge(UInt32(network.vxid))))?.index)

            // Deleting the network while the guest is still on it: it waits in delete-wait, still
            // serving the guest, and refuses new instances.
            let deletion = try await store.enqueue(
                kind: "network.delete", payload: payload("network_uuid", network.uuid), target: .networkNode,
                objectKey: "network:\(network.uuid)")
            try await runAll()
            #expect(try await store.job(id: deletion.id).state == .succeeded)
            #expect(try await store.network(uuid: network.uuid).state == .deleteWait)
            #expect(try await store.events(objectType: "network", objectUUID: network.uuid.uuidString.lowercased())
                .contains { $0.message == "network deletion waits for 1 interface(s) to be deleted" })
            #expect(NetworkNamespace.exists(named: layout.namespace(of: network.uuid)))
            #expect(try await reconciler.reconcileOnce().networksEnsured == 1)
            #expect(NetworkNamespace.exists(named: layout.namespace(of: network.uuid)))
            let late = Instance(name: "late", namespace: "system", cpus: 1, memory: 64, diskSpec: [])
            try await store.createInstance(late)
            let refusal = await #expect(throws: StoreError.self) {
                _ = try await store.createInterface(
                    uuid: UUID(), instanceUUID: late.uuid, networkUUID: network.uuid, order: 0, model: "virtio", address: .any,
                    macaddr: nil)
            }
            #expect(refusal.map { "\($0)" }?.contains("is delete-wait") == true)

            // Every instance of the namespace at once (the guest, the one whose create failed and the
            // one with no interface); the last interface going takes the waiting network with it.
            _ = try await store.enqueue(
                kind: "instance.delete_all", payload: .object(["namespace": .string("system")]), target: .node("sft-node"),
                objectKey: "namespace:system")
            try await runAll()
            #expect(try await store.instance(uuid: instance.uuid).state == .deleted)
            #expect(try await store.instance(uuid: broken.uuid).state == .deleted)
            #expect(try await store.interface(uuid: interface.uuid).state == .deleted)
            #expect(try await store.network(uuid: network.uuid).state == .deleted)
            #expect(try await libvirt.lookup(uuid: instance.uuid) == nil)
            #expect(!NetworkNamespace.exists(named: layout.namespace(of: network.uuid)))
            #expect(try await host.links().filter { $0.name.hasPrefix("sfbr") || $0.name.hasPrefix("sfvx") }.isEmpty)
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
        #expect(try await NetlinkSession(namespace: nil, logger: logger).links().filter { $0.name.hasPrefix(id) }.isEmpty)
    }
}
