import Foundation
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

/// A user's whole flow with the `sfnode` command line alone, against the real agent (the `sfnode`
/// executable, as `scripts/setup-host && swift run -c release sfnode` starts it): network create,
/// instance create from a URL (served on loopback), float by MAC, the guest answering on its
/// floating address from a test namespace, events, defloat, delete, and nothing left.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct CommandLineFlowTests {
    @Test func aUserRunsAGuestFromAURLWithTheCommandLineAlone() async throws {
        let flow = try await CommandLineFlow.start()
        do {
            let network = try flow.json(["network", "create", "net", "10.97.0.0/24"])
            #expect(network["state"] as? String == "initial")
            let guestURL = flow.server.url("/images/guest.qcow2")
            // As sf-client takes it: NAME CPUS MEMORY -d SIZE@BASE -n NET; it waits until the guest runs.
            let instance = try flow.json(["instance", "create", "web", "1", "256", "-d", "1@\(guestURL)", "-n", "net"])
            #expect(instance["state"] as? String == "created", "\(instance)")
            let interfaces = try #require(instance["interfaces"] as? [[String: Any]])
            let mac = try #require(interfaces.first?["macaddr"] as? String)
            let address = try #require(interfaces.first?["ipv4"] as? String)
            #expect(flow.server.requestCount("/images/guest.qcow2", method: "GET") == 1)

            // An interface is named by its MAC as well as its UUID.
            let floated = try flow.json(["interface", "float", mac])
            let floating = try #require((floated["floating"] as? String).flatMap(IPv4Address.init))
            try await flow.connectOutside()
            let console = try await TestGuest.waitForSerial(
                path: flow.storage + "/\(try #require(instance["uuid"] as? String))/console.log", containing: TestGuest.readyMarker,
                timeout: .seconds(240))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == address)
            let body = try await NamespaceSockets.httpGet(from: flow.outsideNamespace, host: floating)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)

            let events = try flow.run(["instance", "events", "web"]).stdout
            #expect(events.contains("schedule placed on \(flow.nodeName)"), "\(events)")
            #expect(events.contains("fetching image \(guestURL), 100 %"), "\(events)")
            #expect(events.contains("instance creation complete"), "\(events)")

            let defloated = try flow.json(["interface", "defloat", mac])
            #expect(defloated["floating"] is NSNull)
            let deleted = try flow.run(["instance", "delete", "web"])
            #expect(deleted.stdout.contains("is deleted"), "\(deleted.stdout)\(deleted.stderr)")
            _ = try flow.run(["network", "delete", "net"])
            #expect(await eventually(timeout: .seconds(60)) { flow.networksLeft() == 0 }, "the network was not deleted")
        } catch {
            try await flow.finish()
            throw error
        }
        try await flow.finish()
        #expect(flow.leftovers().isEmpty, "leftovers: \(flow.leftovers())")
    }

    /// Bad input is refused by the command line with a message that names what is wrong.
    @Test func badInputIsRefusedByName() async throws {
        let flow = try await CommandLineFlow.start(withAgent: false)
        // An operator command makes the store, as the agent would.
        try flow.run(["job", "list"])
        let long = try flow.run(["instance", "create", String(repeating: "a", count: 300), "1", "256", "-d", "1"], allowFailure: true)
        #expect(long.status != 0 && long.stderr.contains("is not usable as a DNS and Linux host name"), "\(long.stderr)")
        let submitted = try flow.run(["job", "submit", #"{"kind": "instance.create", "target": "role:network-node", "payload": {"instance_uuid": "x"}}"#], allowFailure: true)
        #expect(submitted.status != 0 && submitted.stderr.contains("\"instance_uuid\" of a instance.create job is 'x', not a UUID"), "\(submitted.stderr)")
        let metadata = try flow.run(["instance", "create", "web", "1", "256", "-d", "1@169.254.169.254/x"], allowFailure: true)
        #expect(metadata.status != 0 && metadata.stderr.contains("is not a form sfnode knows"), "\(metadata.stderr)")
        // Unknown is not gone: with libvirt unreadable, `sfnode state` says so and fails, rather
        // than reporting every domain absent.
        let state = try flow.run(["state"], environment: ["SFNODE_LIBVIRT_URI": "qemu+unix:///system?socket=/nonexistent/\(flow.id)"], allowFailure: true)
        #expect(state.status == 2, "\(state.stdout)\(state.stderr)")
        #expect(state.stdout.contains("unreadable") && state.stdout.contains("state is incomplete"), "\(state.stdout)")
        try await flow.finish()
    }
}
