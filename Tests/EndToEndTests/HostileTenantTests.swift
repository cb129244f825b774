import Foundation
import SFSystem
import SFTestSupport
import Testing

/// Every way one tenant could hurt a node, each tried once against a live `sfnode serve` (the API and
/// the agent in one process, its host side a test namespace): the request is refused with a clear
/// answer that names what is wrong, and the process is still up afterwards. The suite shares one
/// server (see ``HostileServe``); each test makes its own tenants.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"), HostileServe())
struct HostileTenantTests {
    var flow: CommandLineFlow { HostileServe.flow! }

    @Test func anAffinityScoreOutOfRangeIsRefusedNotATrap() async throws {
        let tenant = try await HostileServe.admin().makeTenant(TestNames.unique("aff"))
        for score in ["1e300", "-1e300", "9223372036854775808", "1.5"] {
            let answer = try tenant.send(
                "POST", "/instances",
                raw: #"{"name":"a","cpus":1,"memory":64,"disk":[{"size":1}],"metadata":{"affinity":{"x":\#(score)}}}"#)
            #expect(answer.status == 400, "affinity \(score): \(answer)")
            #expect(answer.text.contains("affinity"), "affinity \(score): \(answer)")
        }
        #expect(tenant.isUp())
    }

    @Test func aVMDKHeaderNamingADescriptorPastAnyFileIsRefusedByURL() async throws {
        let tenant = try await HostileServe.admin().makeTenant(TestNames.unique("vmdk"))
        flow.server.register("/hostile.vmdk", data: hostileVMDK())
        let answer = try tenant.send("POST", "/artifacts", json: ["url": flow.server.url("/hostile.vmdk")])
        #expect(answer.status == 200, "\(answer)")
        let uuid = try #require(answer.object["uuid"] as? String)
        let refused = await eventually(timeout: .seconds(60)) {
            let events = (try? tenant.send("GET", "/artifacts/\(uuid)/events"))?.json as? [[String: Any]] ?? []
            return events.contains { ($0["message"] as? String)?.contains("descriptor") == true }
        }
        #expect(refused, "no event names the VMDK descriptor: \((try? tenant.send("GET", "/artifacts/\(uuid)/events"))?.text ?? "")")
        #expect(tenant.isUp())
    }

    @Test func aVMDKHeaderUploadedThenBootedFailsTheInstanceOnly() async throws {
        let tenant = try await HostileServe.admin().makeTenant(TestNames.unique("vmdkup"))
        let upload = try tenant.send("POST", "/upload", json: [:])
        let uploadUUID = try #require(upload.object["uuid"] as? String, "\(upload)")
        let file = flow.directory + "/hostile.vmdk"
        try hostileVMDK().write(to: URL(fileURLWithPath: file))
        #expect(try tenant.send("POST", "/upload/\(uploadUUID)", file: file).status == 200)
        let artifact = try tenant.send("POST", "/artifacts/upload/hostile", json: ["upload_uuid": uploadUUID])
        #expect(artifact.status == 200, "\(artifact)")
        let created = try tenant.send(
            "POST", "/instances",
            json: ["name": "vm", "cpus": 1, "memory": 64, "disk": [["size": 1, "base": "sf://upload/\(tenant.namespace)/hostile"]]])
        #expect(created.status == 200, "\(created)")
        let uuid = try #require(created.object["uuid"] as? String)
        var last = TenantClient.Answer(status: 0, text: "")
        let failed = await eventually(timeout: .seconds(120)) {
            last = (try? tenant.send("GET", "/instances/\(uuid)")) ?? last
            return (last.object["state"] as? String)?.hasSuffix("error") == true
        }
        #expect(failed, "the instance did not fail: \(last)")
        #expect((last.object["error_message"] as? String)?.contains("descriptor") == true, "\(last)")
        #expect(tenant.isUp())
        _ = try tenant.send("DELETE", "/instances/\(uuid)")
    }

    @Test func anotherNamespacesUploadCannotBeBooted() async throws {
        let admin = try await HostileServe.admin()
        let victim = try await admin.makeTenant(TestNames.unique("victim"))
        let thief = try await admin.makeTenant(TestNames.unique("thief"))
        let upload = try victim.send("POST", "/upload", json: [:])
        let uploadUUID = try #require(upload.object["uuid"] as? String, "\(upload)")
        let file = flow.directory + "/private.img"
        try Data(repeating: 0x42, count: 1 << 20).write(to: URL(fileURLWithPath: file))
        #expect(try victim.send("POST", "/upload/\(uploadUUID)", file: file).status == 200)
        #expect(try victim.send("POST", "/artifacts/upload/private", json: ["upload_uuid": uploadUUID]).status == 200)
        for base in ["sf://upload/\(victim.namespace)/private", "sf://label/\(victim.namespace)/private", "label:private"] {
            let answer = try thief.send(
                "POST", "/instances", json: ["name": "steal", "cpus": 1, "memory": 64, "disk": [["size": 1, "base": base]]])
            #expect(answer.status == 404, "\(base): \(answer)")
        }
        #expect(thief.isUp())
    }

    @Test func aTenantsURLCacheIsItsOwnAndInsideAddressesAreRefused() async throws {
        let admin = try await HostileServe.admin()
        let owner = try await admin.makeTenant(TestNames.unique("owner"))
        let other = try await admin.makeTenant(TestNames.unique("other"))
        flow.server.register("/s.json", data: Data(#"{"secret": "inside"}"#.utf8))
        let cached = try owner.send("POST", "/artifacts", json: ["url": flow.server.url("/s.json") + "?token=hunter2"])
        let uuid = try #require(cached.object["uuid"] as? String, "\(cached)")
        #expect(cached.object["namespace"] as? String == owner.namespace, "\(cached)")
        #expect(try other.send("GET", "/artifacts/\(uuid)").status == 404)
        #expect(!(try other.send("GET", "/artifacts")).text.contains(uuid))
        // An RFC 1918 address the tests' allow list does not open: refused before any connection.
        let inside = try owner.send("POST", "/artifacts", json: ["url": "http://10.255.255.1/x.qcow2"])
        let insideUUID = try #require(inside.object["uuid"] as? String, "\(inside)")
        let refused = await eventually(timeout: .seconds(60)) {
            let events = (try? owner.send("GET", "/artifacts/\(insideUUID)/events"))?.text ?? ""
            return events.contains("10.255.255.1") && events.contains("refusing to fetch")
        }
        #expect(refused, "\((try? owner.send("GET", "/artifacts/\(insideUUID)/events"))?.text ?? "")")
        #expect(owner.isUp())
    }

    @Test func aSlowServerDoesNotStallAnotherNamespacesNetwork() async throws {
        let admin = try await HostileServe.admin()
        let slow = try await admin.makeTenant(TestNames.unique("slow"))
        let busy = try await admin.makeTenant(TestNames.unique("busy"))
        flow.server.register("/drip.qcow2", file: TestGuest.baseImage, behaviour: .throttled(bytesPerSecond: 64))
        #expect(try slow.send("POST", "/artifacts", json: ["url": flow.server.url("/drip.qcow2")]).status == 200)
        // The download is under way before the network is asked for.
        #expect(await eventually(timeout: .seconds(30)) { flow.server.bytesSent("/drip.qcow2") > 0 })
        let network = try busy.send("POST", "/networks", json: ["name": "quick", "netblock": "10.97.0.0/24"])
        let uuid = try #require(network.object["uuid"] as? String, "\(network)")
        let created = await eventually(timeout: .seconds(30)) {
            (try? busy.send("GET", "/networks/\(uuid)"))?.object["state"] as? String == "created"
        }
        #expect(created, "the network waited behind the download")
        _ = try busy.send("DELETE", "/networks/\(uuid)")
        #expect(await eventually(timeout: .seconds(60)) {
            (try? busy.send("GET", "/networks/\(uuid)"))?.object["state"] as? String == "deleted"
        })
    }

    @Test func quotasRefuseWhatANamespaceMayNotHave() async throws {
        let tenant = try await HostileServe.admin().makeTenant(TestNames.unique("quota"))
        let greedy = try tenant.send("POST", "/instances", json: ["name": "big", "cpus": 8, "memory": 64, "disk": [["size": 1]]])
        #expect(greedy.status == 403 && greedy.text.contains("SFNODE_QUOTA_VCPUS"), "\(greedy)")
        let uploads = try (0..<3).map { _ in try tenant.send("POST", "/upload", json: [:]).status }
        #expect(uploads == [200, 200, 403], "\(uploads)")
        #expect(tenant.isUp())
    }

    @Test func aDecompressionBombStopsAtTheImageCap() async throws {
        let tenant = try await HostileServe.admin().makeTenant(TestNames.unique("bomb"))
        // 2 GiB of zeros in about 2 MiB of gzip: twice the suite's 1 GiB image cap.
        let bomb = flow.directory + "/bomb.gz"
        let made = try ChildProcess.run(["/bin/sh", "-c", "head -c 2G /dev/zero | gzip -1 > \(bomb)"])
        #expect(made.status == 0, "\(made.stderr)")
        flow.server.register("/bomb.gz", file: bomb)
        // The image is unpacked when an instance first needs it.
        let created = try tenant.send(
            "POST", "/instances", json: ["name": "bomb", "cpus": 1, "memory": 64, "disk": [["size": 1, "base": flow.server.url("/bomb.gz")]]])
        let uuid = try #require(created.object["uuid"] as? String, "\(created)")
        var last = TenantClient.Answer(status: 0, text: "")
        let refused = await eventually(timeout: .seconds(180)) {
            last = (try? tenant.send("GET", "/instances/\(uuid)")) ?? last
            return (last.object["error_message"] as? String)?.contains("SFNODE_IMAGE_MAX_GIB") == true
        }
        #expect(refused, "\(last)")
        _ = try tenant.send("DELETE", "/instances/\(uuid)")
        #expect(tenant.isUp())
    }

    @Test func aLoginFloodIsThrottledWhileOthersStillLogIn() async throws {
        let admin = try await HostileServe.admin()
        let target = try await admin.makeTenant(TestNames.unique("flood"))
        let anonymous = TenantClient(apiURL: flow.apiURL, namespace: target.namespace, token: nil)
        var statuses: [Int] = []
        for _ in 0..<30 {
            statuses.append(try anonymous.send("POST", "/auth", json: ["namespace": target.namespace, "key": "wrong"]).status)
            if statuses.last == 429 { break }
        }
        #expect(statuses.last == 429, "never throttled: \(statuses)")
        #expect(Set(statuses).isSubset(of: [401, 429]), "\(statuses)")
        _ = try await admin.makeTenant(TestNames.unique("calm"))
        #expect(anonymous.isUp())
    }

    @Test func namesThatLookTheSameAreOneName() async throws {
        let admin = try await HostileServe.admin()
        let suffix = TestNames.unique("")
        let composed = "caf\u{e9}" + suffix
        let decomposed = "cafe\u{301}" + suffix
        let first = try admin.send("POST", "/auth/namespaces", json: ["namespace": composed])
        let second = try admin.send("POST", "/auth/namespaces", json: ["namespace": decomposed])
        // Either non-ASCII names are refused outright, or the second spelling is the same name.
        #expect(first.status != 200 || second.status != 200, "both spellings were made: \(first) / \(second)")
        let listed = (try admin.send("GET", "/auth/namespaces").json as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(listed.filter { $0.hasSuffix(suffix) }.count <= 1, "\(listed)")
        #expect(admin.isUp())
    }

    @Test func twoLargeUploadsLeaveTheAPIAnswering() async throws {
        let tenant = try await HostileServe.admin().makeTenant(TestNames.unique("bulk"))
        let chunk = flow.directory + "/chunk"
        try Data(repeating: 0x5a, count: 4 << 20).write(to: URL(fileURLWithPath: chunk))
        let uploads = try (0..<2).map { _ in try #require(tenant.send("POST", "/upload", json: [:]).object["uuid"] as? String) }
        let sent = Task.detached {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for uuid in uploads {
                    group.addTask { for _ in 0..<64 { _ = try tenant.send("POST", "/upload/\(uuid)", file: chunk) } }
                }
                try await group.waitForAll()
            }
        }
        var answered = 0
        for _ in 0..<20 {
            if tenant.isUp() { answered += 1 }
            try await Task.sleep(for: .milliseconds(100))
        }
        try await sent.value
        #expect(answered == 20)
    }
}

/// The `sfnode serve` the hostile-tenant suite shares: started once before its first test, with the
/// tests' loopback allowed for fetches, torn down (nothing left) after its last.
struct HostileServe: SuiteTrait, TestScoping {
    @TaskLocal static var flow: CommandLineFlow?

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        // Small limits, so that a test reaches each without filling the machine.
        let flow = try await CommandLineFlow.start(
            serving: true,
            settings: ["SFNODE_QUOTA_VCPUS": "4", "SFNODE_QUOTA_PENDING_UPLOADS": "2", "SFNODE_IMAGE_MAX_GIB": "1"])
        try await flow.finishing {
            try await HostileServe.$flow.withValue(flow) { try await function() }
        }
    }

    static func admin() async throws -> TenantClient {
        guard let flow else { throw AgentProcessError("the hostile-tenant suite's server is not running") }
        return try await TenantClient.admin(of: flow)
    }
}

/// A 512-byte VMDK sparse extent header (`KDMV`) whose embedded descriptor is said to start at sector
/// 2^54: past any file, and 2^63 bytes when multiplied by the sector size.
func hostileVMDK() -> Data {
    var header = Data(count: 512)
    func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(offset..<offset + MemoryLayout<T>.size, with: $0) }
    }
    header.replaceSubrange(0..<4, with: Data("KDMV".utf8))
    put(UInt32(1), at: 4)  // version
    put(UInt32(3), at: 8)  // flags: valid newline test, redundant grain table
    put(UInt64(2048), at: 12)  // capacity in sectors
    put(UInt64(128), at: 20)  // grain size
    put(UInt64(1) << 54, at: 28)  // descriptor offset, in sectors
    put(UInt64(1), at: 36)  // descriptor size, in sectors
    put(UInt32(512), at: 44)  // grain table entries per grain table
    header.replaceSubrange(73..<77, with: Data([0x0a, 0x20, 0x0d, 0x0a]))
    return header
}
