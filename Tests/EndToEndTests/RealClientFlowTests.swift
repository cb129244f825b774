import Foundation
import SFSystem
import SFTestSupport
import Testing

/// The real Shaken Fist client, unmodified from PyPI, drives `sfnode serve` (the README's first
/// command) end to end: sf-client and the Python API together take one guest from nothing to
/// answering on its floating address, through metadata, power operations, floating and deletion,
/// with blobs and artifacts on the side; afterwards nothing is left.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct RealClientFlowTests {
    @Test func theRealClientDrivesSfnodeServe() async throws {
        let flow = try await CommandLineFlow.start(serving: true)
        try await flow.finishing {
            let client = try RealClient(flow: flow)
            // sf-client --json wraps the list: {"instances": [...]}.
            #expect((try client.sfClient(["instance", "list"]) as? [String: Any])?["instances"] as? [Any] != nil)
            let network = try #require(try client.sfClient(["network", "create", "net", "10.96.0.0/24"]) as? [String: Any])
            #expect(network["netblock"] as? String == "10.96.0.0/24")
            let url = flow.server.url("/images/guest.qcow2")
            let created = try #require(try client.sfClient(["instance", "create", "web", "1", "256", "-d", "1@\(url)", "-f", "net"]) as? [String: Any])
            let uuid = try #require(created["uuid"] as? String)
            let running = try await client.waitForInstance(uuid) { $0["state"] as? String == "created" && firstInterface($0)?["floating"] is String }
            let interface = try #require(firstInterface(running))
            let interfaceUUID = try #require(interface["uuid"] as? String)
            try await flow.connectOutside()
            try await expectGuestAnswers(flow, at: try #require(interface["floating"] as? String))

            // Its serial console (telnet) and display listen on loopback, sfnode's default console address.
            let consolePort = try #require(running["console_port"] as? Int, "\(running)")
            let vdiPort = try #require(running["vdi_port"] as? Int, "\(running)")
            let loopback = try #require(IPv4Address("127.0.0.1"))
            #expect(!TCPPorts.isFree(consolePort, on: loopback) && !TCPPorts.isFree(vdiPort, on: loopback))
            // sfnode's own --json is the API's view of the instance.
            let viaCLI = try JSONSerialization.jsonObject(with: Data(try flow.run(["instance", "show", "web", "--json"]).stdout.utf8)) as? NSDictionary
            let viaAPI = try client.python(["show-instance", uuid]) as? NSDictionary
            #expect(viaCLI != nil && viaCLI == viaAPI, "sfnode instance show --json: \(String(describing: viaCLI))\nGET /instances: \(String(describing: viaAPI))")
            let viewer = try #require(try client.python(["call", "get_vdi_console_helper", uuid]) as? String)
            #expect(viewer.contains("[virt-viewer]") && viewer.contains("port=\(vdiPort)"), "\(viewer)")

            let events = try #require(try client.sfClient(["instance", "events", "web"]) as? [[String: Any]])
            #expect(events.contains { ($0["message"] as? String)?.contains("instance creation complete") == true }, "\(events)")
            _ = try client.sfClient(["instance", "set-metadata", "web", "owner", "ops"])
            #expect(try client.python(["get-metadata", uuid]) as? [String: String] == ["owner": "ops"])

            _ = try client.python(["defloat", interfaceUUID])
            _ = try await client.waitForInstance(uuid) { firstInterface($0)?["floating"] is NSNull }
            _ = try client.sfClient(["interface", "float", interfaceUUID])
            let refloated = try await client.waitForInstance(uuid) { firstInterface($0)?["floating"] is String }
            let floating = try #require(firstInterface(refloated)?["floating"] as? String)
            try await expectGuestAnswers(flow, at: floating)
            try await powerCycle(client, flow, uuid)
            try await expectGuestAnswers(flow, at: floating)
            let console = try #require(try client.python(["console", uuid, "--length", "-1"]) as? [String: Any])
            #expect((console["text"] as? String)?.contains(TestGuest.readyMarker) == true)

            try blobsAndArtifacts(client, flow)
            _ = try client.sfClient(["instance", "delete", "web"])
            _ = try await client.waitForInstance(uuid) { $0["state"] as? String == "deleted" }
            _ = try client.sfClient(["network", "delete", "net"])
            #expect(await eventually(timeout: .seconds(60)) { flow.networksLeft() == 0 }, "the network was not deleted")
        }
    }

    /// The guest's web server answers on `floating` from the test's outside namespace.
    func expectGuestAnswers(_ flow: CommandLineFlow, at floating: String) async throws {
        let address = try #require(IPv4Address(floating))
        var body = ""
        let answered = await eventually(timeout: .seconds(240)) {
            body = (try? await NamespaceSockets.httpGet(from: flow.outsideNamespace, host: address)) ?? ""
            return body.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText
        }
        let instances = (try? String(contentsOfFile: flow.directory + "/agent.log", encoding: .utf8))?.split(separator: "\n")
            .filter { $0.contains("link") || $0.contains("domain") || $0.contains("job done") }.suffix(40).joined(separator: "\n") ?? ""
        let consoles = (try? FileManager.default.subpathsOfDirectory(atPath: flow.storage))?.filter { $0.hasSuffix("console.log") } ?? []
        let console = consoles.first.flatMap { try? String(contentsOfFile: flow.storage + "/" + $0, encoding: .utf8) }.map { String($0.suffix(3000)) } ?? "no console log"
        #expect(answered, "the guest did not answer on \(floating): '\(body)'\n--- console ---\n\(console)\n--- agent ---\n\(instances)")
    }

    /// Hard reboot with a request id (followed into the events and the agent's log), power off with
    /// the Python API, power on with sf-client.
    func powerCycle(_ client: RealClient, _ flow: CommandLineFlow, _ uuid: String) async throws {
        let requestID = "accept-\(flow.id)"
        let status = try await APIRequest.post(flow.apiURL + "/instances/\(uuid)/reboothard", client: client, requestID: requestID)
        #expect(status == 200)
        #expect(await eventually(timeout: .seconds(60)) {
            ((try? client.python(["instance-events", uuid, "--limit", "50"])) as? [[String: Any]] ?? []).contains {
                ($0["extra"] as? [String: Any])?["request-id"] as? String == requestID
            }
        }, "no event of the reboot carries its request id")
        let log = (try? String(contentsOfFile: flow.directory + "/agent.log", encoding: .utf8)) ?? ""
        #expect(log.contains("request.id=\(requestID)"), "the agent's log lines of the job lack request.id")
        _ = try client.python(["power-off", uuid])
        _ = try await client.waitForInstance(uuid) { $0["power_state"] as? String == "off" }
        _ = try client.sfClient(["instance", "poweron", "web"])
        _ = try await client.waitForInstance(uuid) { $0["power_state"] as? String == "on" }
    }

    /// An artifact uploaded with the client's own helper, found again by sha512, and a blob whose
    /// size is exactly the client's 512 MiB read chunk read to its end.
    func blobsAndArtifacts(_ client: RealClient, _ flow: CommandLineFlow) throws {
        let small = flow.directory + "/small.img"
        try Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }).write(to: URL(fileURLWithPath: small))
        let artifact = try #require(try client.python(["upload-artifact", "small", small]) as? [String: Any])
        let blobUUID = try #require(artifact["blob_uuid"] as? String)
        let hex = try ChildProcess.run(["/usr/bin/sha512sum", small]).stdout.prefix(128)
        let found = try #require(try client.python(["blob-by-sha512", String(hex)]) as? [String: Any])
        #expect(found["uuid"] as? String == blobUUID)

        let big = flow.directory + "/big.img"
        #expect(FileManager.default.createFile(atPath: big, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: big))
        try handle.truncate(atOffset: 512 << 20)
        try handle.close()
        let bigArtifact = try #require(try client.python(["upload-artifact", "big", big]) as? [String: Any])
        let bigBlob = try #require(bigArtifact["blob_uuid"] as? String)
        let read = try #require(try client.python(["blob-data", bigBlob, flow.directory + "/big.out"]) as? [String: Any])
        #expect(read["bytes"] as? Int == 512 << 20, "\(read)")
        #expect(read["requests"] as? Int == 2, "the client's 512 MiB loop should end after one short read: \(read)")
    }
}

/// A raw request to the API with an `X-Request-ID`, as a caller tracing a request sends it.
enum APIRequest {
    static func post(_ url: String, client: RealClient, requestID: String) async throws -> Int {
        let script = """
            import json, os, sys, requests
            base = os.environ['SHAKENFIST_API_URL']
            token = requests.post(base + '/auth', json={'namespace': os.environ['SHAKENFIST_NAMESPACE'], 'key': os.environ['SHAKENFIST_KEY']}).json()['access_token']
            r = requests.post(sys.argv[1], headers={'Authorization': 'Bearer ' + token, 'X-Request-ID': sys.argv[2]})
            print(json.dumps(r.status_code if r.headers.get('X-Request-ID') == sys.argv[2] else -r.status_code))
            """
        let output = try ChildProcess.run(client.command([client.venv + "/bin/python", "-c", script, url, requestID]))
        guard output.status == 0, let status = Int(output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw AgentProcessError("the traced request failed: \(output.stdout)\(output.stderr)")
        }
        return status
    }
}
