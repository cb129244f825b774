import Foundation
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

/// A user's whole flow with the `sfnode` command line alone, against the real agent (the `sfnode`
/// executable, as `scripts/setup-host && swift run -c release sfnode` starts it): network create,
/// instance create from a URL (served on loopback), float by MAC, the guest answering on its
/// floating address from a test namespace, its config drive and console log, events, defloat,
/// delete, and nothing left.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct CommandLineFlowTests {
    @Test func aUserRunsAGuestFromAURLWithTheCommandLineAlone() async throws {
        let flow = try await CommandLineFlow.start()
        try await flow.finishing {
            let network = try flow.json(["network", "create", "net", "10.97.0.0/24"])
            #expect(network["state"] as? String == "initial")
            let guestURL = flow.server.url("/images/guest.qcow2")
            // As sf-client takes it: NAME CPUS MEMORY -d SIZE@BASE -n NET; it waits until the guest runs.
            // -I and -U give the guest an ssh key and user data through its config drive.
            let instance = try flow.json([
                "instance", "create", "web", "1", "256", "-d", "1@\(guestURL)", "-n", "net", "-I", Self.sshKey,
                "-U", Data(Self.userData.utf8).base64EncodedString(),
            ])
            #expect(instance["state"] as? String == "created", "\(instance)")
            let uuid = try #require(instance["uuid"] as? String)
            let interfaces = try #require(instance["interfaces"] as? [[String: Any]])
            let mac = try #require(interfaces.first?["macaddr"] as? String)
            let address = try #require(interfaces.first?["ipv4"] as? String)
            #expect(flow.server.requestCount("/images/guest.qcow2", method: "GET") == 1)

            // An interface is named by its MAC as well as its UUID.
            let floated = try flow.json(["interface", "float", mac])
            let floating = try #require((floated["floating"] as? String).flatMap(IPv4Address.init))
            try await flow.connectOutside()
            let console = try await TestGuest.waitForSerial(
                path: flow.storage + "/\(uuid)/console.log", containing: TestGuest.readyMarker, timeout: .seconds(240))
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] == address)
            let body = try await NamespaceSockets.httpGet(from: flow.outsideNamespace, host: floating)
            #expect(body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText)

            // The agent's own /metrics: its running guest under libvirt-exporter's names, the job
            // that made it, the download, and the host it keeps. (No interface counters here:
            // libvirtd reads them in its own namespace, and this agent's taps are in a test's.)
            let scrape = try await NamespaceSockets.loopbackGet(port: flow.metricsPort, path: "/metrics")
            #expect(scrape.status.hasSuffix("200 OK"), "\(scrape.status)")
            let domain = "domain=\"\(flow.id)-\(uuid)\""
            for line in [
                "libvirt_up 1", "libvirt_domain_state_code{\(domain)} 1", "libvirt_domain_info_virtual_cpus{\(domain)} 1",
                #"sfnode_queue_run_seconds_count{kind="instance.create",outcome="succeeded"} 1"#,
                #"sfnode_image_cache_requests_total{result="miss"} 1"#,
            ] {
                #expect(scrape.body.contains("\n" + line + "\n"), "\(line) is not in: \(scrape.body)")
            }
            for family in ["libvirt_domain_info_cpu_time_seconds_total{\(domain)}", "libvirt_domain_block_stats_read_bytes_total{\(domain)",
"sfnode_fetch_bytes_total ", "sfnode_reconcile_pass_seconds_count ",
                "sfnode_queue_pickup_seconds_bucket{kind=\"network.create\"", "process_resident_memory_bytes ", "sfnode_firewall_commits_total{", "sfnode_host_taps "] {
                #expect(scrape.body.contains("\n" + family), "\(family) is not in the scrape")
            }

            // The guest found its config drive (after its boot disk, vda) and serves the drive's
            // meta_data.json, which names it.
            #expect(console.contains("\(TestGuest.configDriveMarker) /dev/vdb"), "\(console.suffix(2048))")
            let served = try await NamespaceSockets.httpGet(from: flow.outsideNamespace, host: floating, path: TestGuest.metaDataPath)
            let metaData = try #require(try JSONSerialization.jsonObject(with: Data(served.utf8)) as? [String: Any], "\(served)")
            #expect(metaData["uuid"] as? String == uuid)
            #expect(metaData["hostname"] as? String == "web.local")
            #expect(metaData["public_keys"] as? [String: String] == ["mykey": Self.sshKey])
            let drive = try flow.configDrive(of: uuid)
            #expect(drive.userData == Data(Self.userData.utf8))
            #expect(drive.seed == metaData["random_seed"] as? String)

            // The console log, as sf-client's consoledata and consoledelete read and clear it.
            let tail = try flow.run(["instance", "consoledata", "web"]).stdout
            #expect(tail.contains(TestGuest.readyMarker), "\(tail)")
            #expect(try flow.run(["instance", "consoledata", "web", "30"]).stdout.utf8.count == 30)
            let whole = try flow.run(["instance", "consoledata", "web", "--length", "-1"]).stdout
            #expect(whole.contains(TestGuest.configDriveMarker) && whole.contains(TestGuest.readyMarker))
            try flow.run(["instance", "consoledelete", "web"])
            let cleared = try flow.run(["instance", "consoledata", "web", "--", "-1"]).stdout
            // The guest may print again (a DHCP renewal), but what was there is gone.
            #expect(!cleared.contains(TestGuest.readyMarker) && cleared.utf8.count < whole.utf8.count, "\(cleared)")

            // Powering on builds the config drive again, with a new random seed.
            try flow.run(["instance", "poweroff", "web"])
            #expect(await eventually(timeout: .seconds(60)) { flow.powerState("web") == "off" }, "web did not power off")
            try flow.run(["instance", "poweron", "web"])
            #expect(await eventually(timeout: .seconds(60)) { flow.powerState("web") == "on" }, "web did not power on")
            let rebuilt = try flow.configDrive(of: uuid)
            #expect(rebuilt.seed != drive.seed && rebuilt.seed != nil)
            #expect(rebuilt.userData == drive.userData)

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
        }
    }

    static let sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNsaUZsb3dUZXN0S2V5Rm9yU2Zub2RlR3Vlc3Q test@sfnode"
    static let userData = "#!/bin/sh\necho user data for the command-line flow\n"

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

extension CommandLineFlow {
    /// The instance's power state as `instance show` reports it; nil when it cannot be read.
    func powerState(_ instance: String) -> String? {
        (try? json(["instance", "show", instance]))?["power_state"] as? String
    }

    /// What the agent's config drive of the instance holds: meta_data.json's random seed and the
    /// user data, read back from the image with xorriso.
    func configDrive(of uuid: String) throws -> (seed: String?, userData: Data?) {
        let tree = directory + "/drive-\(UUID().lowercasedString)"
        defer { try? FileManager.default.removeItem(atPath: tree) }
        let extract = try ChildProcess.run([
            "/usr/bin/xorriso", "-osirrox", "on", "-indev", storage + "/\(uuid)/config-drive.iso", "-extract", "/", tree,
        ])
        guard extract.status == 0 else { throw AgentProcessError("xorriso could not read the config drive: \(extract.stderr)") }
        let meta = FileManager.default.contents(atPath: tree + "/openstack/latest/meta_data.json")
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        return (meta?["random_seed"] as? String, FileManager.default.contents(atPath: tree + "/openstack/latest/user_data"))
    }
}
