import Foundation
import Logging
import SFAgent
import SFControl
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// A network with DNS on an agent whose host namespace is a test namespace, and a "guest" (a veth
/// into a test namespace, on the network's bridge, with an interface's address): the guest resolves
/// its instance's names through the network's dnsmasq on the router address, a name outside the
/// zone gets no answer (no upstream: nothing leaves the namespaces), and the network's ping, run
/// from inside the network's namespace, answers for the router and the guest and reports a loss
/// for an address nobody has.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root and libvirtd"))
struct NetworkDNSTests {
    static let floatingRange = IPv4Prefix("192.0.2.0/24")!

    @Test func aGuestResolvesItsInstancesAndTheNetworkPingsFromItsNamespace() async throws {
        let logger = Logger.testWarnings("sfnode.test.dns")
        let id = TestNames.unique("")
        let (hostNamespace, guestNamespace) = (id + "host", id + "gst")
        let layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let storage = TestGuest.runDirectory + "/\(id)-dns"
        let teardown = Teardown()
        let store = try SQLStore.temporary(fqdn: "sft-dns")
        teardown.add("store") { store.removeFiles() }
        teardown.add("storage") { try? FileManager.default.removeItem(atPath: storage) }
        do {
            try teardown.createNamespaces([hostNamespace, guestNamespace])
            let host = try NetlinkSession(namespace: hostNamespace, logger: logger)
            let agent = NodeAgent(
                store: store, networks: NetworkRealizer(layout: layout, host: host, logger: logger),
                instances: InstanceRealizer(
                    layout: layout, host: host, root: try NetlinkSession(namespace: nil, logger: logger),
                    libvirt: try LibvirtConnection(logger: logger), storagePath: storage + "/instances", virtualization: .qemu,
                    logger: logger),
                nodeName: "sft-dns", floatingRange: Self.floatingRange, dhcpDirectory: storage + "/dhcp",
                dns: DNSSettings(zone: "shakenfist", upstream: nil), logger: logger)
            let network = try await store.createNetwork(
                uuid: UUID(), name: "dnsnet", namespace: "ci", netblock: IPv4Prefix("10.93.0.0/24")!, provideDHCP: true,
                provideNAT: false, provideDNS: true, spoofFilter: true, jobs: [])
            teardown.add("network") {
                for interface in try await store.interfaces(networkUUID: network.uuid) {
                    _ = try await store.setInterfaceState(uuid: interface.uuid, to: .deleted)
                }
                try await agent.networkJobs.delete(network.uuid)
            }
            try await agent.networkJobs.create(network.uuid)
            let dnsmasq = dnsmasqProcesses(mentioning: network.uuid.lowercasedString)
            #expect(dnsmasq.count == 1, "dnsmasq processes: \(dnsmasq)")
            let arguments = commandLine(of: dnsmasq.first ?? 0)
            #expect(arguments.contains("--local=/ci.shakenfist/") && !arguments.contains("--port=0"), "\(arguments)")
            #expect(!arguments.contains { $0.hasPrefix("--server=") }, "an upstream in a test: \(arguments)")
            // DHCP hands out the router as the guests' DNS server.
            #expect(arguments.contains("--dhcp-option=6,10.93.0.1") && arguments.contains("--listen-address=10.93.0.1"), "\(arguments)")

            // A network without DNS keeps dnsmasq to DHCP: no port 53, no names file.
            let plain = try await store.createNetwork(
                uuid: UUID(), name: "plain", namespace: "ci", netblock: IPv4Prefix("10.92.0.0/24")!, provideDHCP: true,
                provideNAT: false, provideDNS: false, spoofFilter: true, jobs: [])
            teardown.add("plain network") { try await agent.networkJobs.delete(plain.uuid) }
            try await agent.networkJobs.create(plain.uuid)
            let plainArguments = commandLine(of: dnsmasqProcesses(mentioning: plain.uuid.lowercasedString).first ?? 0)
            #expect(plainArguments.contains("--port=0") && !plainArguments.contains { $0.hasPrefix("--addn-hosts") || $0.hasPrefix("--dhcp-option=6") },
                "\(plainArguments)")

            // An instance joins after the network was made: the names file is rewritten and re-read.
            let instance = Instance(name: "web1", namespace: "ci", cpus: 1, memory: 64, diskSpec: [])
            try await store.createInstance(instance)
            let interface = try await store.createInterface(
                uuid: UUID(), instanceUUID: instance.uuid, networkUUID: network.uuid, order: 0, model: "virtio", address: .any,
                macaddr: nil)
            let address = try #require(interface.ipv4)
            try await agent.networkJobs.converge(network.uuid)

            // The guest: a veth on the network's bridge, holding the interface's address.
            let bridge = layout.bridge(UInt32(network.vxid))
            try await host.createVethPair(name: id + "g", peer: "eth0", peerNamespace: guestNamespace, master: bridge, up: true)
            let guest = try NetlinkSession(namespace: guestNamespace, logger: logger)
            try await guest.addAddress(try IPv4Prefix(address: address, length: 24), to: "eth0")
            try await guest.setLinkUp("eth0", true)
            let router = network.netblock.host(1)

            var answers: [String: DNSQuery.Answer] = [:]
            let resolved = await eventually(timeout: .seconds(10)) {
                for name in ["web1", "web1.ci.shakenfist"] {
                    answers[name] = try? await DNSQuery.lookup(name, server: router, from: guestNamespace, timeoutSeconds: 1)
                }
                return answers.values.count == 2 && answers.values.allSatisfy { $0.addresses == [address] }
            }
            #expect(resolved, "answers: \(answers)")
            let outside = try await DNSQuery.lookup("nothing.example.com", server: router, from: guestNamespace)
            #expect(outside.addresses.isEmpty && outside.responseCode != 0, "a name outside the zone: \(outside)")
            let otherZone = try await DNSQuery.lookup("web1.other.shakenfist", server: router, from: guestNamespace)
            #expect(otherZone.addresses.isEmpty, "another namespace's zone: \(otherZone)")

            var settings = ControlSettings()
            settings.networkNamespacePrefix = layout.namespacePrefix
            (settings.pingCount, settings.pingInterval) = (3, .milliseconds(200))
            let control = Control(store: store, settings: settings, logger: logger)

            // Extra records: a bare name also answers in the zone; a deleted one stops answering.
            try await control.setNetworkDNSEntry(network: "dnsnet", name: "db", value: "10.93.0.50", namespace: "ci")
            try await control.setNetworkDNSEntry(network: "dnsnet", name: "www.example.test", value: "10.93.0.51", namespace: "ci")
            try await agent.networkJobs.converge(network.uuid)
            let extra = await eventually(timeout: .seconds(10)) {
                let found = await [("db", "10.93.0.50"), ("db.ci.shakenfist", "10.93.0.50"), ("www.example.test", "10.93.0.51")].asyncAllSatisfy { name, value in
                    (try? await DNSQuery.lookup(name, server: router, from: guestNamespace, timeoutSeconds: 1))?.addresses == [IPv4Address(value)!]
                }
                return found
            }
            #expect(extra, "the extra records do not resolve")
            try await control.deleteNetworkDNSEntry(network: "dnsnet", name: "db", namespace: "ci")
            try await agent.networkJobs.converge(network.uuid)
            let gone = await eventually(timeout: .seconds(10)) {
                (try? await DNSQuery.lookup("db", server: router, from: guestNamespace, timeoutSeconds: 1))?.addresses == []
            }
            #expect(gone, "a deleted record still resolves")

            // Ping through the use case, 3 requests 0.2 s apart, from inside the network's namespace.
            for target in [router, address] {
                let report = try await control.ping(network: network.uuid.lowercasedString, address: target.description)
                #expect(report.received == 3, "\(target): \(report.lines)")
                #expect(report.lines.first == "PING \(target) (\(target)) 56(84) bytes of data.")
                #expect(report.lines.filter { $0.hasPrefix("64 bytes from \(target): icmp_seq=") }.count == 3, "\(report.lines)")
                #expect(report.lines.contains("3 packets transmitted, 3 received, 0% packet loss") == false)
                #expect(report.lines.contains { $0.hasPrefix("3 packets transmitted, 3 received, 0% packet loss, time ") }, "\(report.lines)")
                #expect(report.lines.last?.hasPrefix("rtt min/avg/max/mdev = ") == true)
            }
            let nobody = network.netblock.host(200)
            let unanswered = try await control.ping(network: "dnsnet", address: nobody.description, namespace: "ci")
            #expect(unanswered.received == 0, "\(unanswered.lines)")
            #expect(unanswered.lines.contains { $0.hasPrefix("3 packets transmitted, 0 received") && $0.contains("100% packet loss") }, "\(unanswered.lines)")
            #expect(!unanswered.lines.contains { $0.hasPrefix("64 bytes") })
            // The broadcast address is in the block too: sent (as ping -b), answered by nobody here.
            let broadcast = try await control.ping(network: "dnsnet", address: "10.93.0.255", namespace: "ci")
            #expect(broadcast.transmitted == 3 && broadcast.received == 0, "\(broadcast.lines)")
            #expect(await controlError { _ = try await control.ping(network: "dnsnet", address: "10.94.0.1") }?.message
                == "ping request for address outside network block")
            #expect(await controlError { _ = try await control.ping(network: "dnsnet", address: "fd00::1") }?.message
                == "ping request for address outside network block")
            #expect(await controlError { _ = try await control.ping(network: "dnsnet", address: "10.93.0.300") }?.message == "invalid address")
            #expect(await controlError { _ = try await control.ping(network: "dnsnet", address: "10.93.0.1", namespace: "other") }?.code == .notFound)
            #expect(await controlError { _ = try await control.ping(network: "dnsnet", address: "10.93.0.1", count: 0) }?.code == .invalidArgument)
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
    }

    /// A ping waits for nothing but its own namespace: one still being made is not ready (406, the
    /// client retries), one that cannot become ready is a conflict (409, no hour of retries), one
    /// whose namespace is not on this node says where ping runs. Pings that may run at once are
    /// limited (SFNODE_PINGS_AT_ONCE): one more is refused as busy rather than given a thread.
    @Test func pingsWaitForTheNetworkAndAreLimited() async throws {
        let logger = Logger.testWarnings("sfnode.test.ping")
        let store = try SQLStore.temporary(fqdn: "sft-ping")
        defer { store.removeFiles() }
        let prefix = TestNames.unique("-")
        var settings = ControlSettings()
        (settings.networkNamespacePrefix, settings.pingsAtOnce) = (prefix, 1)
        (settings.pingCount, settings.pingInterval) = (8, .milliseconds(200))
        let control = Control(store: store, settings: settings, logger: logger)
        // A loopback netblock: its namespace (made here, as the agent would) answers on its own lo.
        let network = try await store.createNetwork(
            uuid: UUID(), name: "n", namespace: "system", netblock: IPv4Prefix("127.0.0.0/24")!, provideDHCP: false,
            provideNAT: false)
        let uuid = network.uuid.lowercasedString
        #expect(await controlError { _ = try await control.ping(network: uuid, address: "127.0.0.1") }
            == ControlError(.notReady, "network \(uuid) is not ready (initial)"))
        _ = try await store.setNetworkState(uuid: network.uuid, to: .created)
        let missing = await controlError { _ = try await control.ping(network: uuid, address: "127.0.0.1") }
        #expect(missing?.code == .conflict && missing?.message.contains("ping runs on the network node") == true, "\(String(describing: missing))")

        let namespace = prefix + uuid
        try NetworkNamespace.create(named: namespace)
        defer { try? NetworkNamespace.delete(named: namespace) }
        let inside = try NetlinkSession(namespace: namespace, logger: logger)
        try await inside.setLinkUp("lo", true)
        // Two at once, each about 1.4 s long (time enough for both to start on a busy machine): one
        // runs, the other is refused at once.
        async let one = controlError { _ = try await control.ping(network: uuid, address: "127.0.0.1") }
        async let two = controlError { _ = try await control.ping(network: uuid, address: "127.0.0.2") }
        let outcomes = await [one, two]
        #expect(outcomes.filter { $0 == nil }.count == 1 && outcomes.contains { $0?.code == .tooBusy }, "\(outcomes)")
        let answered = try await control.ping(network: uuid, address: "127.0.0.1")
        #expect(answered.received == 8, "\(answered.lines)")

        _ = try await store.setNetworkState(uuid: network.uuid, to: .error)
        #expect(await controlError { _ = try await control.ping(network: uuid, address: "127.0.0.1") }
            == ControlError(.conflict, "network \(uuid) is not ready (error)"))
    }

    private func commandLine(of pid: Int32) -> [String] {
        guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
        return raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }
}

func controlError(_ body: () async throws -> Void) async -> ControlError? {
    do {
        try await body()
        return nil
    } catch let error as ControlError {
        return error
    } catch {
        return ControlError(classifying: error)
    }
}

extension Array {
    /// Whether `predicate` holds of every element, awaited one after another.
    func asyncAllSatisfy(_ predicate: (Element) async -> Bool) async -> Bool {
        for element in self where !(await predicate(element)) { return false }
        return true
    }
}
