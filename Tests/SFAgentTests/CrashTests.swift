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

/// The real agent (the `sfnode` executable) killed with SIGKILL at every crash point of
/// network.create, instance.create and interface.float, then started again: everything converges,
/// with exactly one of each domain, dnsmasq, tap, bridge and NAT rule, the guest answers on its
/// floating address, and a plain restart afterwards changes nothing. Deleting then leaves nothing.
///
/// The agent runs as a child process configured only through its environment, with its host
/// namespace a test namespace and its namespace, domain and tap names prefixed with the test's
/// unique name (`SFNODE_NAME_PREFIX`, `SFNODE_TAP_PREFIX`). One guest boot serves every crash point:
/// each agent run dies at the next point (its job is taken again by the next run once the 2 s lease
/// lapses), so the jobs go forward one crash at a time and every half-done state is re-run.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct CrashTests {
    static let floatingRange = IPv4Prefix("192.0.2.0/24")!
    /// How long a killed agent's job stays leased (SFNODE_JOB_LEASE_SECONDS).
    static let leaseSeconds = 2
    /// The jobs the test runs, in queue order.
    static let jobKinds = ["network.create", "instance.create", "interface.float"]
    /// Every crash point of those jobs, in the order they pass them: each agent run dies at the next one.
    static let crashPoints = CrashPoint.all.filter { point in jobKinds.contains { point.hasPrefix($0 + ".") } }
    /// The points the test must cover however the list changes.
    static let requiredPoints = ["network.create.after-namespace", "instance.create.after-define", "interface.float.after-allocate"]

    @Test func killedAgentConvergesWithNothingDuplicated() async throws {
        try #require(Set(Self.requiredPoints).isSubset(of: Set(Self.crashPoints)), "a crash point the agent no longer has: \(CrashPoint.all)")
        let logger = {
            var logger = Logger(label: "sfnode.test.crash")
            logger.logLevel = .warning
            return logger
        }()
        let executable = try AgentProcess.executable()
        let id = TestNames.unique("")
        let hostNamespace = id + "host"
        let outsideNamespace = id + "out"
        let layout = HostLayout(hostNamespace: hostNamespace, namespacePrefix: id + "-", tapPrefix: id)
        let directory = TestGuest.runDirectory + "/\(id)-agent"
        let storage = directory + "/instances"
        let nodeName = id + "-node"
        let teardown = Teardown()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        teardown.add("agent directory") { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteStore(path: directory + "/store.sqlite", fqdn: nodeName, logger: logger)
        let libvirt = try LibvirtConnection(logger: logger)
        // Closed before the test returns: a connection left to its deinit may close while the
        // process exits, which has ended the test process with a double free in libvirt.
        teardown.add("libvirt connection") { await libvirt.close() }
        let environment = [
            "SFNODE_STORE_PATH": directory + "/store.sqlite", "SFNODE_HOST_NAMESPACE": hostNamespace,
            "SFNODE_STORAGE_PATH": storage, "SFNODE_NODE_NAME": nodeName, "SFNODE_VIRTUALIZATION_TYPE": "qemu",
            "SFNODE_FLOATING_RANGE": Self.floatingRange.description, "SFNODE_IS_NETWORK_NODE": "true",
            "SFNODE_LOG_LEVEL": "debug", "SFNODE_JOB_LEASE_SECONDS": "\(Self.leaseSeconds)",
            "SFNODE_NAME_PREFIX": layout.namespacePrefix, "SFNODE_TAP_PREFIX": layout.tapPrefix,
        ]
        var runs = 0
        func startAgent(crashAt point: String? = nil) throws -> AgentProcess {
            runs += 1
            var variables = environment
            if let point { variables["SFNODE_CRASH_AT"] = point }
            let agent = try AgentProcess.start(
                executable: executable, environment: variables, log: directory + "/agent-\(runs).log")
            teardown.add("agent run \(runs)") { await agent.kill() }
            return agent
        }

        do {
            try teardown.createNamespaces([hostNamespace, outsideNamespace])
            let host = try NetlinkSession(namespace: hostNamespace, logger: logger)
            let root = try NetlinkSession(namespace: nil, logger: logger)

            // What the API would store: a network with NAT and DHCP, an instance with one interface.
            let objects = try await GuestObjects.create(in: store, netblock: IPv4Prefix("10.98.0.0/24")!)
            let (network, instance, interface) = (objects.network, objects.instance, objects.interface)
            teardown.add("in-process cleanup") {
                // Only matters when the test failed half-way: the same handlers, run in this process.
                let agent = makeTestAgent(
                    nodeName: nodeName, store: store, layout: layout, host: host, root: root, libvirt: libvirt, storage: storage,
                    instances: storage, floatingRange: Self.floatingRange, logger: logger)
                try? await agent.deleteInstance(instance.uuid)
                try? await agent.deleteNetwork(network.uuid)
                for pid in dnsmasqProcesses(mentioning: storage) { Glibc.kill(pid, SIGTERM) }
            }

            func payload(_ key: String, _ uuid: UUID) -> JSONValue { .object([key: .string(uuid.uuidString)]) }
            let jobs = [
                try await store.enqueue(
                    kind: "network.create", payload: payload("network_uuid", network.uuid), target: .networkNode,
                    objectKey: "network:\(network.uuid)"),
                try await store.enqueue(
                    kind: "instance.create", payload: payload("instance_uuid", instance.uuid), target: .node(nodeName),
                    objectKey: "instance:\(instance.uuid)"),
                try await store.enqueue(
                    kind: "interface.float", payload: payload("interface_uuid", interface.uuid), target: .networkNode,
                    objectKey: "interface:\(interface.uuid)"),
            ]

            let namespace = layout.namespace(of: network.uuid)
            let domainName = layout.namespacePrefix + instance.uuid.uuidString.lowercased()
            let tap = layout.tap(of: interface.uuid)
            let bridge = layout.bridge(UInt32(network.vxid))
            let dhcpDirectory = storage + "/dhcp/" + network.uuid.uuidString.lowercased()
            func natRules() throws -> [String] {
                try runInNamespace(namespace, command: ["iptables-legacy-save", "-t", "nat"]).stdout
                    .split(separator: "\n").map(String.init).filter { $0.hasPrefix("-A") }
            }
            func dnsmasqs() -> [Int32] { dnsmasqProcesses(mentioning: "--dhcp-hostsfile=\(dhcpDirectory)/hosts") }

            // One agent run per crash point: each dies by SIGKILL at its point, half-way through a job.
            for point in Self.crashPoints {
                let index = try #require(Self.jobKinds.firstIndex { point.hasPrefix($0 + ".") })
                let agent = try startAgent(crashAt: point)
                let status = await agent.waitForExit(timeout: .seconds(120))
                #expect(status == 137, "the agent armed with \(point) ended with \(status.map(String.init) ?? "no exit"): \(agent.logTail())")
                try #require(status != nil, "the agent armed with \(point) never reached it")
                // The jobs before the point's job finished; the point's job was left running (its lease lapses).
                for (position, job) in jobs.enumerated() {
                    let state = try await store.job(id: job.id).state
                    let expected: JobState = position < index ? .succeeded : position == index ? .running : .queued
                    #expect(state == expected, "after the crash at \(point), \(job.kind) is \(state.rawValue), not \(expected.rawValue)")
                }
                // The crash really was half-way: what the step before the point does is there, what
                // the step after it does is not.
                switch point {
                case "network.create.after-egress":
                    #expect(try await host.link(named: layout.egressBridge) != nil, "no egress bridge at \(point)")
                    #expect(!NetworkNamespace.exists(named: namespace), "the namespace exists at \(point)")
                case "network.create.after-namespace":
                    #expect(NetworkNamespace.exists(named: namespace), "no namespace at \(point)")
                    #expect(dnsmasqs().isEmpty, "dnsmasq started before \(point)")
                case "network.create.after-dhcp":
                    #expect(dnsmasqs().count == 1, "dnsmasq at \(point): \(dnsmasqs())")
                    #expect(try await store.network(uuid: network.uuid).state == .initial, "the network is created at \(point)")
                case "instance.create.after-disks":
                    #expect(FileManager.default.fileExists(atPath: storage + "/\(instance.uuid.uuidString.lowercased())/disk0.qcow2"))
                    #expect(try await libvirt.lookup(uuid: instance.uuid) == nil, "a domain is defined at \(point)")
                case "instance.create.after-define":
                    #expect(try await libvirt.lookup(uuid: instance.uuid) != nil, "no domain defined at \(point)")
                    #expect(try await libvirt.state(of: .uuid(instance.uuid)) != .on, "the domain runs already at \(point)")
                case "instance.create.after-start":
                    #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .on, "the domain does not run at \(point)")
                    #expect(try await root.link(named: tap) != nil, "the tap was plugged before \(point)")
                case "interface.float.after-allocate":
                    let floating = try #require(try await store.interface(uuid: interface.uuid).floating)
                    #expect(!(try natRules()).contains { $0.contains("\(floating)/32") }, "float rules present at \(point)")
                case "interface.float.after-rules":
                    let floating = try #require(try await store.interface(uuid: interface.uuid).floating)
                    #expect(try natRules().contains { $0.contains("-d \(floating)/32") && $0.contains("DNAT") }, "no DNAT at \(point)")
                default: break
                }
                // Past the lease: the next run takes the killed job again first, in queue order.
                try await Task.sleep(for: .seconds(Self.leaseSeconds + 1))
            }

            // Started again without a crash point: every job converges.
            var agent = try startAgent()
            try await agent.waitForJobs(jobs.map(\.id), in: store, timeout: .seconds(180))
            #expect(try await store.instance(uuid: instance.uuid).state == .created)
            #expect(try await store.network(uuid: network.uuid).state == .created)
            let floated = try await store.interface(uuid: interface.uuid)
            #expect(floated.state == .created)
            let floating = try #require(floated.floating, "the interface was not floated")
            let address = try #require(floated.ipv4)

            // Exactly one of everything.
            let domains = try ChildProcess.run(["/usr/bin/virsh", "-r", "-q", "-c", "qemu:///system", "list", "--all", "--name"])
                .stdout.split(whereSeparator: \.isNewline).map(String.init).filter { $0.hasPrefix(id) }
            #expect(domains == [domainName], "domains of this test: \(domains)")
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .on)
            let dnsmasq = dnsmasqs()
            #expect(dnsmasq.count == 1, "dnsmasq processes for the network: \(dnsmasq)")
            let pidFile = try String(contentsOfFile: dhcpDirectory + "/pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(dnsmasq.map(String.init) == [pidFile], "dnsmasq \(dnsmasq) is not the pid file's \(pidFile)")
            let rules = try natRules()
            #expect(Set(rules).count == rules.count, "duplicated nat rules: \(rules)")
            #expect(rules.filter { $0.contains("-d \(floating)/32") && $0.contains("DNAT") }.count == 1, "DNAT rules: \(rules)")
            #expect(rules.filter { $0.contains("-s \(address)/32") && $0.contains("SNAT") }.count == 1, "SNAT rules: \(rules)")
            #expect(rules.filter { $0.contains("MASQUERADE") }.count == 1, "MASQUERADE rules: \(rules)")
            let hostLinks = try await host.links().map(\.name)
            #expect(hostLinks.filter { $0.hasPrefix(layout.tapPrefix) } == [tap], "taps in the host namespace: \(hostLinks)")
            #expect(try await root.links().filter { $0.name.hasPrefix(id) }.isEmpty, "taps left in the root namespace")
            #expect(hostLinks.filter { $0.hasPrefix("sfbr") } == [bridge], "bridges: \(hostLinks)")
            #expect(hostLinks.filter { $0.hasPrefix("sfvx") }.count == 1, "VXLANs: \(hostLinks)")
            #expect(NetworkNamespace.list().filter { $0.hasPrefix(layout.namespacePrefix) } == [namespace])
            let bridgeIndex = try await host.link(named: bridge)?.index
            let tapMaster = try await host.link(named: tap)?.masterIndex
            #expect(bridgeIndex != nil && tapMaster == bridgeIndex, "the tap is not on the bridge")

            // The guest answers on its floating address, from outside on the egress bridge.
            try await host.createVethPair(
                name: "sfoutside", peer: "eth0", peerNamespace: outsideNamespace, master: layout.egressBridge, up: true)
            let outside = try NetlinkSession(namespace: outsideNamespace, logger: logger)
            try await outside.addAddress(IPv4Prefix("192.0.2.254/24")!, to: "eth0")
            try await outside.setLinkUp("eth0", true)
            let console = try await TestGuest.waitForSerial(
                path: storage + "/\(instance.uuid.uuidString.lowercased())/console.log", containing: TestGuest.readyMarker,
                timeout: .seconds(240))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == address.description)
            let body = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)

            // Restart idempotence: a plain restart leaves the domain, the rules and dnsmasq alone.
            func domainID() throws -> String {
                try ChildProcess.run(["/usr/bin/virsh", "-r", "-c", "qemu:///system", "domid", domainName]).stdout
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            func natTable() throws -> String {
                // Without the dated comments and the packet counters, which traffic moves.
                try runInNamespace(namespace, command: ["iptables-legacy-save", "-t", "nat"]).stdout
                    .split(separator: "\n").filter { !$0.hasPrefix("#") }
                    .map { $0.replacingOccurrences(of: #"\[\d+:\d+\]"#, with: "[]", options: .regularExpression) }
                    .joined(separator: "\n")
            }
            func dhcpPIDFile() -> Int32? {
                (try? String(contentsOfFile: dhcpDirectory + "/pid", encoding: .utf8))
                    .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            func restartChangesNothing(_ round: String) async throws {
                let idBefore = try domainID()
                let natBefore = try natTable()
                let dnsmasqBefore = dnsmasqs()
                #expect(!idBefore.isEmpty && idBefore != "-")
                #expect(dnsmasqBefore.count == 1, "\(round): dnsmasq processes before the restart: \(dnsmasqBefore)")
                #expect(await agent.stop(timeout: .seconds(20)) == 0, "\(round): SIGTERM did not stop the agent with status 0: \(agent.logTail())")
                let survivors = dnsmasqs()
                agent = try startAgent()
                try await Task.sleep(for: .seconds(3))
                #expect(agent.isRunning, "\(round): the restarted agent exited: \(agent.logTail())")
                #expect(try domainID() == idBefore, "\(round): the domain was restarted")
                #expect(try natTable() == natBefore, "\(round): the nat table changed on restart")
                let dnsmasqAfter = dnsmasqs()
                #expect(dnsmasqAfter.count == 1, "\(round): dnsmasq processes after the restart: \(dnsmasqAfter)")
                #expect(survivors == dnsmasqBefore, "\(round): stopping the agent with SIGTERM ended dnsmasq \(dnsmasqBefore)")
                #expect(dnsmasqAfter == dnsmasqBefore, "\(round): dnsmasq changed on restart: \(dnsmasqBefore) → \(dnsmasqAfter)")
                let again = try await NamespaceSockets.httpGet(from: outsideNamespace, host: floating)
                #expect(again.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)
            }
            // Here dnsmasq is an orphan: the agent that started it was killed, later ones adopted it.
            try await restartChangesNothing("restart with an adopted dnsmasq")
            // Now make dnsmasq the running agent's own child (the usual case: the agent that built
            // the network is the one restarted): stop the agent, stop dnsmasq, and let the next
            // agent's start-up reconciliation start it again.
            #expect(await agent.stop(timeout: .seconds(20)) == 0, "SIGTERM did not stop the agent with status 0: \(agent.logTail())")
            for pid in dnsmasqs() { Glibc.kill(pid, SIGTERM) }
            #expect(await eventually(timeout: .seconds(10)) { dnsmasqs().isEmpty }, "dnsmasq ignored SIGTERM")
            agent = try startAgent()
            let owner = agent.process.processIdentifier
            #expect(
                await eventually(timeout: .seconds(20)) {
                    let running = dnsmasqs()
                    return running.map(parentPID) == [owner] && running.first == dhcpPIDFile()
                },
                "the restarted agent \(owner) did not start dnsmasq itself: \(dnsmasqs()) \(agent.logTail())")
            try await restartChangesNothing("restart with the agent's own dnsmasq")

            // The operator's view agrees: the node checked in, and nothing has drifted.
            let state = try ChildProcess.run(
                ["/usr/bin/env", "-i"] + environment.map { "\($0.key)=\($0.value)" } + [executable, "state"])
            #expect(state.status == 0, "sfnode state failed: \(state.stderr)")
            #expect(state.stdout.contains("node \(nodeName) roles=hypervisor,network_node mesh=none"), "\(state.stdout)")
            #expect(state.stdout.contains("network \(network.uuid.uuidString.lowercased()) created bridge=true vxlan=true flood=[] namespace=true"), "\(state.stdout)")
            #expect(state.stdout.contains("instance \(instance.uuid.uuidString.lowercased()) created power=on domain=on"), "\(state.stdout)")
            #expect(!state.stdout.contains("drift"), "\(state.stdout)")
            #expect(await agent.stop(timeout: .seconds(20)) == 0, "SIGTERM did not stop the agent with status 0: \(agent.logTail())")

            // Deleting through the real agent leaves nothing behind.
            let deletes = [
                try await store.enqueue(
                    kind: "instance.delete", payload: payload("instance_uuid", instance.uuid), target: .node(nodeName),
                    objectKey: "instance:\(instance.uuid)"),
                try await store.enqueue(
                    kind: "network.delete", payload: payload("network_uuid", network.uuid), target: .networkNode,
                    objectKey: "network:\(network.uuid)"),
            ]
            agent = try startAgent()
            try await agent.waitForJobs(deletes.map(\.id), in: store, timeout: .seconds(120))
            #expect(await agent.stop(timeout: .seconds(20)) == 0, "SIGTERM did not stop the agent with status 0: \(agent.logTail())")
            #expect(try await store.instance(uuid: instance.uuid).state == .deleted)
            #expect(try await store.interface(uuid: interface.uuid).state == .deleted)
            #expect(try await store.network(uuid: network.uuid).state == .deleted)
            #expect(try await libvirt.lookup(uuid: instance.uuid) == nil)
            #expect(!NetworkNamespace.exists(named: namespace))
            #expect(await eventually { dnsmasqs().isEmpty }, "dnsmasq outlived network.delete: \(dnsmasqs())")
            let remaining = try await host.links().map(\.name)
            #expect(remaining.filter { $0.hasPrefix("sfbr") || $0.hasPrefix("sfvx") || $0.hasPrefix(layout.tapPrefix) }.isEmpty, "\(remaining)")
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
        // Nothing of this test is left anywhere on the machine.
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/cleanup-test-leftovers").path
        let check = try ChildProcess.run(["/bin/bash", script, "--check", "--prefix", id])
        #expect(check.status == 0, "leftovers: \(check.stdout)\(check.stderr)")
        if check.status != 0 { _ = try ChildProcess.run(["/bin/bash", script, "--prefix", id]) }
    }
}

/// The parent of process `pid`, from /proc (0 when it cannot be read).
func parentPID(_ pid: Int32) -> Int32 {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.range(of: ")", options: .backwards)
    else { return 0 }
    // After "pid (comm)": the state, then the parent's pid.
    let fields = stat[close.upperBound...].split(separator: " ")
    return fields.count > 1 ? Int32(fields[1]) ?? 0 : 0
}
