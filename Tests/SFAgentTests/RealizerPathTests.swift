import Foundation
import Logging
import SFAgent
import SFControl
import SFFirewall
import SFLibvirt
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The agent's realizers on the real kernel and libvirtd, with the agent's host namespace set to a test
/// namespace: a network with NAT, a guest on it, a float; reachable from an "outside" namespace hung
/// off the egress bridge; and everything gone after removal. Realizing twice changes nothing.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct RealizerPathTests {
    static let floatingRange = IPv4Prefix("192.0.2.0/24")!
    static let outside = IPv4Prefix("192.0.2.254/24")!

    @Test func networkInstanceAndFloatConvergeAndGoAway() async throws {
        let logger = Logger.testWarnings("sfnode.test.realizer")
        let id = TestNames.unique("")
        let hostNamespace = id + "host"
        let outsideNamespace = id + "out"
        let layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let teardown = Teardown()
        let libvirt = try LibvirtConnection(logger: logger)
        let network = NetworkPlan(
            uuid: UUID(), vxid: 0x4242, netblock: IPv4Prefix("10.88.0.0/24")!, provideNAT: true,
            floatingGateway: IPv4Prefix("192.0.2.2/24")!, egressRouter: Self.floatingRange.host(1))
        let guest = IPv4Address("10.88.0.20")!
        let floating = IPv4Address("192.0.2.30")!
        let mac = try MACAddress(octets: [2, 0, 0, 0x88, 0, 0x20])
        let storage = TestGuest.runDirectory + "/\(id)-instances"
        let instance = InstancePlan(
            uuid: UUID(), cpus: 1, memoryMiB: 256, disks: [.init(source: .overlay(base: TestGuest.baseImage, format: .qcow2, sizeGiB: nil))],
            interfaces: [.init(uuid: UUID(), mac: mac, vxid: network.vxid, address: guest)])

        do {
            try teardown.createNamespaces([hostNamespace, outsideNamespace])
            let host = try NetlinkSession(namespace: hostNamespace, logger: logger)
            let root = try NetlinkSession(namespace: nil, logger: logger)
            let networks = NetworkRealizer(layout: layout, host: host, logger: logger)
            let instances = InstanceRealizer(
                layout: layout, host: host, root: root, libvirt: libvirt, storagePath: storage, virtualization: .qemu,
                logger: logger)
            teardown.add("storage") { try? FileManager.default.removeItem(atPath: storage) }
            teardown.add("network") { try await networks.remove(network) }
            teardown.add("instance") { try await instances.remove(instance) }

            // The outside world: a namespace on the egress bridge.
            try await networks.ensureEgress(floatingRange: Self.floatingRange, uplink: nil)
            try await host.createVethPair(
                name: "sfoutside", peer: "eth0", peerNamespace: outsideNamespace, master: layout.egressBridge, up: true)
            let outside = try NetlinkSession(namespace: outsideNamespace, logger: logger)
            try await outside.addAddress(Self.outside, to: "eth0")
            try await outside.setLinkUp("eth0", true)

            var plan = network
            for _ in 0..<2 {
                try await networks.ensureOnNode(plan, underlay: nil, local: nil)
                try await networks.ensureOnNetworkNode(plan)
            }
            let thread = try await NamespaceExecutor.start(namespace: layout.namespace(of: network.uuid))
            let dhcp = DHCPServer(
                directory: storage + "/dhcp-\(network.uuid)", interface: layout.routerInner(network.vxid), router: network.router,
                thread: thread, logger: logger)
            teardown.add("dhcp") { try await dhcp.stop() }
            #expect(try await dhcp.ensure(hosts: [DHCPHost(mac: mac, address: guest, hostname: "guest")]) == .started)
            #expect(try await dhcp.ensure(hosts: [DHCPHost(mac: mac, address: guest, hostname: "guest")]) == .unchanged)

            try await instances.ensureRunning(instance)
            try await instances.ensureRunning(instance)
            let console = try await TestGuest.waitForSerial(
                path: instances.consoleLog(of: instance.uuid), containing: TestGuest.readyMarker, timeout: .seconds(180))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == guest.description)
            // A plan without a config drive gets none: no image, no disk, and the guest finds no drive.
            #expect(console.contains("\(TestGuest.configDriveMarker) none"), "\(console.suffix(2048))")
            #expect(!FileManager.default.fileExists(atPath: instances.configDrive(of: instance.uuid)))

            plan.floats = [.init(floating: floating, privateAddress: guest)]
            try await networks.ensureOnNetworkNode(plan)
            let body = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)
            // Realizing the same plan again leaves the rules exactly as they are.
            let firewall = Firewall(thread: thread, logger: logger)
            let before = try await firewall.currentState()
            try await networks.ensureOnNetworkNode(plan)
            #expect(try await firewall.currentState() == before)
            #expect(before == plan.firewallState(layout: layout))

            plan.floats = []
            try await networks.ensureOnNetworkNode(plan)
            await #expect(throws: (any Error).self) {
                _ = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating, timeoutSeconds: 3)
            }
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
        #expect(!NetworkNamespace.exists(named: layout.namespace(of: network.uuid)))
        #expect(try await libvirt.lookup(uuid: instance.uuid) == nil)
        #expect(try await NetlinkSession(namespace: nil, logger: logger).links().filter { $0.name.hasPrefix(id) }.isEmpty)
    }

    @Test func blankDisksAreMadeOnceAndGoWithTheInstance() async throws {
        let logger = Logger.testWarnings("sfnode.test.realizer")
        let id = TestNames.unique("")
        let storage = TestGuest.runDirectory + "/\(id)-blank"
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let libvirt = try LibvirtConnection(logger: logger)
        let root = try NetlinkSession(namespace: nil, logger: logger)
        let layout = HostLayout(testID: id, hostNamespace: nil)
        let instances = InstanceRealizer(
            layout: layout, host: root, root: root, libvirt: libvirt, storagePath: storage, virtualization: .qemu, logger: logger)
        // No NIC, so nothing touches the root namespace's network; SeaBIOS just finds no bootable disk.
        let plan = InstancePlan(
            uuid: UUID(), cpus: 1, memoryMiB: 64, disks: [.init(source: .blank(sizeGiB: 1))], interfaces: [])
        do {
            try await instances.ensureRunning(plan)
            try await instances.ensureRunning(plan)
            #expect(try await libvirt.state(of: .uuid(plan.uuid)) == .on)
            let info = try ChildProcess.run(
                ["/usr/bin/qemu-img", "info", "--force-share", "--output=json", instances.directory(of: plan.uuid) + "/disk0.qcow2"])
            #expect(info.stdout.contains("\"virtual-size\": 1073741824"))
            let refused = await #expect(throws: ControlError.self) {
                try await instances.ensureRunning(
                    InstancePlan(uuid: UUID(), cpus: 1, memoryMiB: 64, disks: [.init(source: .blank(sizeGiB: 0))], interfaces: []))
            }
            #expect(refused?.description.contains("at least 1 GiB") == true)
        } catch {
            try? await instances.remove(plan)
            await libvirt.close()
            throw error
        }
        try await instances.remove(plan)
        #expect(try await libvirt.lookup(uuid: plan.uuid) == nil)
        #expect(!FileManager.default.fileExists(atPath: instances.directory(of: plan.uuid)))
        await libvirt.close()
    }
}
