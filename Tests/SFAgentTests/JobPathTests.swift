import Foundation
import Logging
import SFAgent
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
/// One guest boot serves every step; the world the steps act on is ``JobPathFixture``.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct JobPathTests {
    @Test func jobsFloatAGuestAndCleanUp() async throws {
        let id = TestNames.unique("")
        // `try` marks the gates, whose failure ends the scenario; the other steps report and go on.
        try await withCheckedTeardown(id: id) { teardown in
            let fixture = try await JobPathFixture(id: id, teardown: teardown)
            try await fixture.connectUplinkAndOutside()
            let bad = try await fixture.runCreatesAmongBadJobs()
            await fixture.aCreateThatFailsForGoodSaysWhy(bad.doomed)
            await fixture.badJobsFailWithAMessage(bad)
            let guest = try await fixture.guestIsCreatedAndFloated()
            await fixture.guestBootsWithItsDisksAndAnswers(guest)
            await fixture.guestReachesOutThroughTheUplink(guest)
            await fixture.reconciliationRepairsDrift(guest)
            await fixture.aSecondPassChangesNothing()
            await fixture.aDeletedNamespaceIsRebuilt(guest)
            await fixture.defloatMakesTheGuestUnreachable(guest)
            await fixture.aGuestStoppedOutsideIsRecordedOff()
            await fixture.powerOperationsFollowTheirRules()
            await fixture.networkDeleteWaitsForTheGuest()
            try await fixture.deleteAllTakesTheWaitingNetwork()
        }
        let root = try NetlinkSession(namespace: nil, logger: Logger(label: "sfnode.test.jobs"))
        #expect(try await root.links().filter { $0.name.hasPrefix(id) }.isEmpty)
    }
}

/// The jobs meant to fail: an unknown kind, a payload that is no UUID, and a create that fails for good.
struct BadJobs {
    let unknown: Job
    let malformed: Job
    let doomed: Job
}

// MARK: - Steps

extension JobPathFixture {
    /// The host's uplink, which its default route leaves by (the agent finds it there and masquerades
    /// the floating range out of it), to the internet namespace; the outside one on the egress bridge.
    func connectUplinkAndOutside() async throws {
        try await host.createVethPair(name: "sfuplink", peer: "eth0", peerNamespace: internetNamespace, up: true)
        try await host.addAddress(IPv4Prefix("203.0.113.1/24")!, to: "sfuplink")
        try await host.replaceRoute(.defaultRoute(via: Self.uplinkPeer, device: "sfuplink"))
        let internet = try NetlinkSession(namespace: internetNamespace, logger: logger)
        try await internet.addAddress(IPv4Prefix("203.0.113.2/24")!, to: "eth0")
        try await internet.setLinkUp("eth0", true)
        try await agent.networkJobs.ensureEgress()
        try await host.createVethPair(
            name: "sfoutside", peer: "eth0", peerNamespace: outsideNamespace, master: layout.egressBridge, up: true)
        let outside = try NetlinkSession(namespace: outsideNamespace, logger: logger)
        try await outside.addAddress(IPv4Prefix("192.0.2.254/24")!, to: "eth0")
        try await outside.setLinkUp("eth0", true)
    }

    /// network.create, instance.create and interface.float run among bad jobs; then the broken
    /// instance's create, allowed one attempt.
    func runCreatesAmongBadJobs() async throws -> BadJobs {
        try await enqueue("network.create", "network_uuid", network.uuid, on: .networkNode)
        try await enqueue("instance.create", "instance_uuid", instance.uuid)
        try await enqueue("interface.float", "interface_uuid", interface.uuid, on: .networkNode)
        let unknown = try await store.enqueue(kind: "instance.explode", payload: .object([:]), target: .node(Self.nodeName), objectKey: nil)
        let malformed = try await store.enqueue(
            kind: "instance.create", payload: .object(["instance_uuid": .string("not-a-uuid")]), target: .node(Self.nodeName),
            // A misleading key: the failure must not be pinned on the network it names.
            objectKey: "network:\(network.uuid)")
        try await runAll()
        let doomed = try await run("instance.create", "instance_uuid", broken.uuid, maxAttempts: 1)
        return BadJobs(unknown: unknown, malformed: malformed, doomed: doomed)
    }

    /// A job that fails for good moves its object to its error state and says why in an event.
    func aCreateThatFailsForGoodSaysWhy(_ doomed: Job) async {
        await independentStep("a create that fails for good says why") {
            #expect(try await store.job(id: doomed.id).state == .failed)
            let brokenAfter = try await store.instance(uuid: broken.uuid)
            #expect(brokenAfter.state == .creatingError)
            #expect(brokenAfter.errorMessage?.contains("/nonexistent/base.qcow2") == true)
            #expect(try await hasEvent("instance", broken.uuid) { $0.message.hasPrefix("instance.create failed after 1 attempt(s)") })
        }
    }

    /// Bad jobs fail with a message naming what is wrong, and no other job failed.
    func badJobsFailWithAMessage(_ bad: BadJobs) async {
        await independentStep("bad jobs fail with a message") {
            #expect(try await store.job(id: bad.unknown.id).state == .failed)
            #expect(try await store.job(id: bad.unknown.id).lastError?.contains("unknown job kind 'instance.explode'") == true)
            #expect(try await store.job(id: bad.malformed.id).lastError?.contains("'not-a-uuid', not a UUID") == true)
            let expected = [bad.unknown.id, bad.malformed.id, bad.doomed.id]
            for job in try await store.jobs(states: [.failed], limit: 10) where !expected.contains(job.id) {
                Issue.record("job \(job.kind) failed: \(job.lastError ?? "")")
            }
        }
    }

    /// The good jobs created the network and the instance and floated the interface.
    func guestIsCreatedAndFloated() async throws -> FloatedGuest {
        #expect(try await store.instance(uuid: instance.uuid).state == .created)
        #expect(try await store.network(uuid: network.uuid).state == .created)
        let floated = try await store.interface(uuid: interface.uuid)
        return FloatedGuest(floating: try #require(floated.floating), address: try #require(floated.ipv4))
    }

    /// The guest boots with its fixed address and answers on its floating one; the CD-ROM is the file
    /// itself, read-only on SATA, and the blank disk a fresh qcow2 of 1 GiB.
    func guestBootsWithItsDisksAndAnswers(_ guest: FloatedGuest) async {
        await independentStep("the guest boots with its disks and answers") {
            let console = try await TestGuest.waitForSerial(
                path: agent.realInstances.consoleLog(of: instance.uuid), containing: TestGuest.readyMarker, timeout: .seconds(180))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == guest.address.description)
            let live = try #require(try await libvirt.xmlDescription(of: .uuid(instance.uuid)))
            let cdrom = try #require(live.range(of: "device='cdrom'").map { String(live[$0.lowerBound...].prefix(600)) })
            #expect(cdrom.contains("file='\(isoPath)'"))
            #expect(cdrom.contains("bus='sata'"))
            #expect(cdrom.contains("<readonly/>"))
            let blank = agent.realInstances.directory(of: instance.uuid) + "/disk2.qcow2"
            #expect(live.contains("file='\(blank)'"))
            let info = try ChildProcess.run(["/usr/bin/qemu-img", "info", "--force-share", "--output=json", blank])
            #expect(info.stdout.contains("\"virtual-size\": 1073741824"))
            #expect(try await guestBody(at: guest.floating) == TestGuest.bodyText)
            #expect(try await hasEvent("instance", instance.uuid) { $0.message == "instance creation complete" && $0.duration != nil })
        }
    }

    /// Out through the uplink: the guest's connection leaves the host from the uplink's address.
    func guestReachesOutThroughTheUplink(_ guest: FloatedGuest) async {
        await independentStep("the guest reaches out through the uplink") {
            let listener = try await TestListener.open(in: internetNamespace, address: Self.uplinkPeer, port: 9000)
            async let accepted = listener.acceptOne()
            _ = try await NamespaceSockets.httpGet(
                from: outsideNamespace, host: guest.floating, path: TestGuest.probePath(to: Self.uplinkPeer, port: 9000),
                timeoutSeconds: 15)
            #expect(try await accepted.peer == IPv4Address("203.0.113.1"))
        }
    }

    /// Drift: the bridge deleted, the DNAT rules flushed and dnsmasq killed by hand, and strays of
    /// sfnode's naming that belong to nothing (a bridge and a tap). One pass restores the three and
    /// removes the strays.
    func reconciliationRepairsDrift(_ guest: FloatedGuest) async {
        await independentStep("reconciliation repairs drift") {
            let dnsmasq = try dnsmasqPID()
            try await host.deleteLink(layout.bridge(UInt32(network.vxid)))
            let flush = ["iptables-legacy", "-w", "-t", "nat", "-F", "SFNODE-PREROUTING"]
            #expect(try runInNamespace(layout.namespace(of: network.uuid), command: flush).status == 0)
            kill(dnsmasq, SIGKILL)
            #expect(await eventually { kill(dnsmasq, 0) != 0 || (try? String(contentsOfFile: "/proc/\(dnsmasq)/stat", encoding: .utf8))?.contains(") Z ") == true })
            await #expect(throws: (any Error).self) {
                _ = try await NamespaceSockets.httpGet(from: outsideNamespace, host: guest.floating, timeoutSeconds: 2)
            }
            let (strayBridge, strayTap) = (layout.bridge(0xFFFFFE), layout.tap(of: UUID()))
            try await host.createBridge(name: strayBridge, up: true)
            try await host.createTap(name: strayTap)
            let repair = try await reconciler.reconcileOnce()
            #expect(repair.instancesStarted == 0)
            #expect(repair.linksRemoved == 2)
            #expect(try await host.link(named: strayBridge) == nil)
            #expect(try await host.link(named: strayTap) == nil)
            #expect(try await host.link(named: layout.tap(of: interface.uuid)) != nil)
            #expect(try await host.link(named: layout.bridge(UInt32(network.vxid))) != nil)
            let restoredPID = try dnsmasqPID()
            #expect(restoredPID != dnsmasq)
            #expect(kill(restoredPID, 0) == 0)
            #expect(try await guestBody(at: guest.floating) == TestGuest.bodyText)
        }
    }

    /// A second pass (as an agent restart makes) changes nothing: the rules and dnsmasq stay.
    func aSecondPassChangesNothing() async {
        await independentStep("a second pass changes nothing") {
            let rulesBefore = try natRules()
            let pidBefore = try dnsmasqPID()
            let again = try await reconciler.reconcileOnce()
            #expect(again == Reconciler.Report(networksEnsured: 1, instancesStarted: 0, domainsRemoved: 0, namespacesRemoved: 0))
            #expect(try natRules() == rulesBefore)
            #expect(try dnsmasqPID() == pidBefore)
        }
    }

    /// The network's namespace deleted by hand while dnsmasq still runs in it: the next pass makes
    /// the namespace again (router, rules, a new dnsmasq) instead of working in the old one through a
    /// stale thread, and stops the stray dnsmasq.
    func aDeletedNamespaceIsRebuilt(_ guest: FloatedGuest) async {
        await independentStep("a deleted namespace is rebuilt") {
            let namespace = layout.namespace(of: network.uuid)
            let oldPID = try dnsmasqPID()
            try NetworkNamespace.delete(named: namespace)
            _ = try await reconciler.reconcileOnce()
            #expect(NetworkNamespace.exists(named: namespace))
            let freshPID = try dnsmasqPID()
            #expect(freshPID != oldPID)
            #expect(NetworkNamespace.identity(ofProcess: freshPID) == NetworkNamespace.identity(named: namespace))
            #expect(await eventually { kill(oldPID, 0) != 0 })
            #expect(try await guestBody(at: guest.floating) == TestGuest.bodyText)
        }
    }

    /// interface.defloat takes the floating address away: the guest no longer answers on it.
    func defloatMakesTheGuestUnreachable(_ guest: FloatedGuest) async {
        await independentStep("defloat makes the guest unreachable") {
            try await run("interface.defloat", "interface_uuid", interface.uuid, on: .networkNode)
            #expect(try await store.interface(uuid: interface.uuid).floating == nil)
            await #expect(throws: (any Error).self) {
                _ = try await NamespaceSockets.httpGet(from: outsideNamespace, host: guest.floating, timeoutSeconds: 3)
            }
        }
    }

    /// A guest stopped outside sfnode (here destroyed, as a guest's own shutdown also counts) is
    /// recorded as off by the next pass, not started again behind the operator's back.
    func aGuestStoppedOutsideIsRecordedOff() async {
        await independentStep("a guest stopped outside sfnode is recorded off") {
            try await libvirt.destroy(.uuid(instance.uuid))
            let seen = try await reconciler.reconcileOnce()
            #expect(seen.instancesStarted == 0)
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .off)
            #expect(try await store.instance(uuid: instance.uuid).powerState == .off)
            #expect(try await hasEvent("instance", instance.uuid) { $0.message == "detected poweroff" })
            #expect(try await power("poweron").state == .succeeded)
        }
    }

    /// Pause and unpause; power off, then pausing is refused by name; power on again, the tap back on the bridge.
    func powerOperationsFollowTheirRules() async {
        await independentStep("power operations") {
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
        }
    }

    /// Deleting the network while the guest is still on it: it waits in delete-wait, still serving
    /// the guest (a pass keeps it), and refuses new interfaces.
    func networkDeleteWaitsForTheGuest() async {
        await independentStep("network.delete waits for the guest") {
            let deletion = try await run("network.delete", "network_uuid", network.uuid, on: .networkNode)
            #expect(deletion.state == .succeeded)
            #expect(try await store.network(uuid: network.uuid).state == .deleteWait)
            #expect(try await hasEvent("network", network.uuid) { $0.message == "network deletion waits for 1 interface(s) to be deleted" })
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
        }
    }

    /// Every instance of the namespace at once (the guest, the one whose create failed and the one
    /// with no interface); the last interface going takes the waiting network with it.
    func deleteAllTakesTheWaitingNetwork() async throws {
        _ = try await store.enqueue(
            kind: "instance.delete_all", payload: .object(["namespace": .string("system")]), target: .node(Self.nodeName),
            objectKey: "namespace:system")
        try await runAll()
        #expect(try await store.instance(uuid: instance.uuid).state == .deleted)
        #expect(try await store.instance(uuid: broken.uuid).state == .deleted)
        #expect(try await store.interface(uuid: interface.uuid).state == .deleted)
        #expect(try await store.network(uuid: network.uuid).state == .deleted)
        #expect(try await libvirt.lookup(uuid: instance.uuid) == nil)
        #expect(!NetworkNamespace.exists(named: layout.namespace(of: network.uuid)))
        #expect(try await host.links().filter { $0.name.hasPrefix("sfbr") || $0.name.hasPrefix("sfvx") }.isEmpty)
    }
}
