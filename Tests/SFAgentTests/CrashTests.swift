import Foundation
import SFAgent
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
/// lapses), so the jobs go forward one crash at a time and every half-done state is re-run. The
/// world the steps act on is ``CrashScenario``.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct CrashTests {
    /// The points the test must cover however the list changes.
    static let requiredPoints = ["network.create.after-namespace", "instance.create.after-define", "interface.float.after-allocate"]

    @Test func killedAgentConvergesWithNothingDuplicated() async throws {
        try #require(
            Set(Self.requiredPoints).isSubset(of: Set(CrashScenario.crashPoints)), "a crash point the agent no longer has: \(CrashPoint.all)")
        let id = TestNames.unique("")
        // `try` marks the gates, whose failure ends the scenario; the other steps report and go on.
        try await withCheckedTeardown(id: id) { teardown in
            let scenario = try await CrashScenario(id: id, teardown: teardown)
            try await scenario.crashAtEveryPoint()
            let guest = try await scenario.plainRunConverges()
            await scenario.exactlyOneOfEverything(guest)
            try await scenario.connectOutside()
            await scenario.guestAnswersOnItsFloatingAddress(guest)
            // Here dnsmasq is an orphan: the agent that started it was killed, later ones adopted it.
            await scenario.restartChangesNothing("restart with an adopted dnsmasq", guest)
            await scenario.makeDnsmasqTheAgentsOwnChild()
            await scenario.restartChangesNothing("restart with the agent's own dnsmasq", guest)
            await scenario.operatorSeesNoDrift()
            try await scenario.deletingLeavesNothing()
        }
    }
}

// MARK: - Steps

extension CrashScenario {
    /// One agent run per crash point: each dies by SIGKILL at its point, half-way through a job.
    func crashAtEveryPoint() async throws {
        for point in Self.crashPoints { try await crash(at: point) }
    }

    /// An agent run armed with `point` dies there, leaving the jobs before the point's job done, the
    /// point's job running (its lease lapses) and the step before the point done but not the one after.
    private func crash(at point: String) async throws {
        let index = try #require(Self.jobKinds.firstIndex { point.hasPrefix($0 + ".") })
        let agent = try startAgent(crashAt: point)
        let status = await agent.waitForExit(timeout: .seconds(120))
        #expect(status == 137, "the agent armed with \(point) ended with \(status.map(String.init) ?? "no exit"): \(agent.logTail())")
        try #require(status != nil, "the agent armed with \(point) never reached it")
        for (position, job) in jobs.enumerated() {
            let state = try await store.job(id: job.id).state
            let expected: JobState = position < index ? .succeeded : position == index ? .running : .queued
            #expect(state == expected, "after the crash at \(point), \(job.kind) is \(state.rawValue), not \(expected.rawValue)")
        }
        await independentStep("half-way at \(point)") { try await expectHalfWay(at: point) }
        // Past the lease: the next run takes the killed job again first, in queue order.
        try await Task.sleep(for: .seconds(Self.leaseSeconds + 1))
    }

    /// The crash really was half-way: what the step before `point` does is there, what the step after it does is not.
    private func expectHalfWay(at point: String) async throws {
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
            #expect(FileManager.default.fileExists(atPath: storage + "/\(instance.uuid.lowercasedString)/disk0.qcow2"))
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
    }

    /// Started again without a crash point, the agent converges every job; the interface is floated.
    func plainRunConverges() async throws -> FloatedGuest {
        let agent = try startAgent()
        try await agent.waitForJobs(jobs.map(\.id), in: store, timeout: .seconds(180))
        #expect(try await store.instance(uuid: instance.uuid).state == .created)
        #expect(try await store.network(uuid: network.uuid).state == .created)
        let floated = try await store.interface(uuid: interface.uuid)
        #expect(floated.state == .created)
        return FloatedGuest(floating: try #require(floated.floating, "the interface was not floated"), address: try #require(floated.ipv4))
    }

    /// Exactly one domain, dnsmasq, tap, bridge, VXLAN, namespace and rule of each kind.
    func exactlyOneOfEverything(_ guest: FloatedGuest) async {
        await independentStep("exactly one of everything") {
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
            #expect(rules.filter { $0.contains("-d \(guest.floating)/32") && $0.contains("DNAT") }.count == 1, "DNAT rules: \(rules)")
            #expect(rules.filter { $0.contains("-s \(guest.address)/32") && $0.contains("SNAT") }.count == 1, "SNAT rules: \(rules)")
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
        }
    }

    /// The outside namespace joins the egress bridge the network's creation made, as 192.0.2.254.
    func connectOutside() async throws {
        try await host.createVethPair(
            name: "sfoutside", peer: "eth0", peerNamespace: outsideNamespace, master: layout.egressBridge, up: true)
        let outside = try NetlinkSession(namespace: outsideNamespace, logger: logger)
        try await outside.addAddress(IPv4Prefix("192.0.2.254/24")!, to: "eth0")
        try await outside.setLinkUp("eth0", true)
    }

    /// The guest took its fixed address and answers on its floating one, from outside on the egress bridge.
    func guestAnswersOnItsFloatingAddress(_ guest: FloatedGuest) async {
        await independentStep("the guest answers on its floating address") {
            let console = try await TestGuest.waitForSerial(
                path: storage + "/\(instance.uuid.lowercasedString)/console.log", containing: TestGuest.readyMarker,
                timeout: .seconds(240))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == guest.address.description)
            let body = try await NamespaceSockets.httpGet(from: outsideNamespace, host: guest.floating)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)
        }
    }

    /// A plain restart (SIGTERM, start again) leaves the domain, the rules and dnsmasq alone.
    func restartChangesNothing(_ round: String, _ guest: FloatedGuest) async {
        await independentStep(round) {
            let idBefore = try domainID()
            let natBefore = try natTable()
            let dnsmasqBefore = dnsmasqs()
            #expect(!idBefore.isEmpty && idBefore != "-")
            #expect(dnsmasqBefore.count == 1, "\(round): dnsmasq processes before the restart: \(dnsmasqBefore)")
            await stopAgent(round)
            let survivors = dnsmasqs()
            let agent = try startAgent()
            try await Task.sleep(for: .seconds(3))
            #expect(agent.isRunning, "\(round): the restarted agent exited: \(agent.logTail())")
            #expect(try domainID() == idBefore, "\(round): the domain was restarted")
            #expect(try natTable() == natBefore, "\(round): the nat table changed on restart")
            let dnsmasqAfter = dnsmasqs()
            #expect(dnsmasqAfter.count == 1, "\(round): dnsmasq processes after the restart: \(dnsmasqAfter)")
            #expect(survivors == dnsmasqBefore, "\(round): stopping the agent with SIGTERM ended dnsmasq \(dnsmasqBefore)")
            #expect(dnsmasqAfter == dnsmasqBefore, "\(round): dnsmasq changed on restart: \(dnsmasqBefore) → \(dnsmasqAfter)")
            let again = try await NamespaceSockets.httpGet(from: outsideNamespace, host: guest.floating)
            #expect(again.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)
        }
    }

    /// Makes dnsmasq the running agent's own child (the usual case: the agent that built the network
    /// is the one restarted): stop the agent, stop dnsmasq, and let the next agent's start-up
    /// reconciliation start it again.
    func makeDnsmasqTheAgentsOwnChild() async {
        await independentStep("dnsmasq made the agent's own child") {
            await stopAgent()
            for pid in dnsmasqs() { Glibc.kill(pid, SIGTERM) }
            #expect(await eventually(timeout: .seconds(10)) { dnsmasqs().isEmpty }, "dnsmasq ignored SIGTERM")
            let agent = try startAgent()
            let owner = agent.process.processIdentifier
            #expect(
                await eventually(timeout: .seconds(20)) {
                    let running = dnsmasqs()
                    return running.map(parentPID) == [owner] && running.first == dhcpPIDFile()
                },
                "the restarted agent \(owner) did not start dnsmasq itself: \(dnsmasqs()) \(agent.logTail())")
        }
    }

    /// The operator's view (`sfnode state`) agrees: the node checked in, and nothing has drifted.
    /// The agent is stopped afterwards whatever the view said.
    func operatorSeesNoDrift() async {
        await independentStep("sfnode state") {
            let state = try ChildProcess.run(
                AgentProcess.command(executable, ["state"], environment: environment))
            #expect(state.status == 0, "sfnode state failed: \(state.stderr)")
            #expect(state.stdout.contains("node \(nodeName) roles=hypervisor,network_node mesh=none"), "\(state.stdout)")
            #expect(
                state.stdout.contains(
                    "network \(network.uuid.lowercasedString) created bridge=true vxlan=true flood=[] namespace=true"),
                "\(state.stdout)")
            #expect(state.stdout.contains("instance \(instance.uuid.lowercasedString) created power=on domain=on"), "\(state.stdout)")
            #expect(!state.stdout.contains("drift"), "\(state.stdout)")
        }
        await stopAgent()
    }

    /// instance.delete and network.delete through a fresh agent run leave nothing behind.
    func deletingLeavesNothing() async throws {
        let deletes = [
            try await store.enqueue(
                kind: "instance.delete", payload: jobPayload("instance_uuid", instance.uuid), target: .node(nodeName),
                objectKey: "instance:\(instance.uuid)"),
            try await store.enqueue(
                kind: "network.delete", payload: jobPayload("network_uuid", network.uuid), target: .networkNode,
                objectKey: "network:\(network.uuid)"),
        ]
        let agent = try startAgent()
        try await agent.waitForJobs(deletes.map(\.id), in: store, timeout: .seconds(120))
        await stopAgent()
        #expect(try await store.instance(uuid: instance.uuid).state == .deleted)
        #expect(try await store.interface(uuid: interface.uuid).state == .deleted)
        #expect(try await store.network(uuid: network.uuid).state == .deleted)
        #expect(try await libvirt.lookup(uuid: instance.uuid) == nil)
        #expect(!NetworkNamespace.exists(named: namespace))
        #expect(await eventually { dnsmasqs().isEmpty }, "dnsmasq outlived network.delete: \(dnsmasqs())")
        let remaining = try await host.links().map(\.name)
        #expect(remaining.filter { $0.hasPrefix("sfbr") || $0.hasPrefix("sfvx") || $0.hasPrefix(layout.tapPrefix) }.isEmpty, "\(remaining)")
    }
}
