import Foundation
import HTTPTypes
import NIOCore
import Testing
import SFAPI
import SFStore

@Suite("API instances, networks and interfaces")
struct InstanceAPITests {
    /// The body the real client sends for `sf-client instance create web 1 512 -d 8@URL -f NET`.
    static func createBody(network: String, extra: [String: JSONValue] = [:]) -> JSONValue {
        var body: [String: JSONValue] = [
            "name": "web", "cpus": 1, "memory": 512,
            "network": [["network_uuid": .string(network), "macaddress": nil, "model": "virtio", "float": true]],
            "disk": [["size": 8, "base": "http://127.0.0.1/guest.qcow2", "bus": nil, "type": "disk"]],
            "ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test@host", "user_data": "I2Nsb3VkLWNvbmZpZwo=",
            "namespace": nil, "video": ["model": "cirrus", "memory": "16384"], "configdrive": nil, "metadata": [:],
            "side_channels": nil, "uefi": false, "secure_boot": false, "nvram_template": nil,
        ]
        for (key, value) in extra { body[key] = value }
        return .object(body)
    }

    @Test("create answers the full instance object with its interfaces, and queues its jobs with the request id")
    func create() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let token = try await api.token()
            _ = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.0.0.0/24", "name": "net"])
            let created = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "net"), headers: [.init("X-Request-ID")!: "trace-42"])
            #expect(created.status == .ok, "\(created.text)")
            #expect(created.headers[.init("X-Request-ID")!] == "trace-42")
            for key in ["uuid", "name", "namespace", "cpus", "memory", "node", "state", "disk_spec", "video", "ssh_key", "user_data", "power_state",
                        "console_port", "vdi_port", "agent_state", "error_message", "configdrive", "side_channels", "interfaces", "metadata"] {
                #expect(created[key] != nil, "instance object lacks \(key)")
            }
            #expect(created["state"] == "initial" && created["node"] == "hv1" && created["configdrive"] == "openstack-disk")
            guard case .array(let interfaces)? = created["interfaces"], case .object(let interface)? = interfaces.first else {
                Issue.record("no interfaces in \(created.text)")
                return
            }
            #expect(interface["ipv4"] == "10.0.0.2" && interface["floating"] == .null && interface["order"] == 0)
            let uuid = try #require(created["uuid"]?.stringValue)
            #expect(try await api.send(.get, "/instances/web", token: token)["uuid"] == .string(uuid))
            let jobs = try await fixture.store.jobs(states: [.queued], limit: 10)
            #expect(jobs.contains { $0.kind == "instance.create" && $0.payload.objectValue?["request_id"] == "trace-42" })
            let events = try await api.send(.get, "/instances/\(uuid)/events", token: token, body: ["event_type": "audit", "limit": "5"])
            #expect(events.status == .ok && events.text.contains("schedule placed on hv1") && events.text.contains("trace-42"))
        }
    }

    @Test("bad bodies are 4xx naming the problem: unknown field, malformed JSON, wrong type, IDE, huge body")
    func refusals() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let token = try await api.token()
            let unknown = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "net", extra: ["colour": "red"]))
            #expect(unknown.status == .badRequest && unknown["error"]?.stringValue?.contains("colour") == true)
            let malformed = try await api.send(.post, "/instances", token: token, raw: ByteBuffer(string: "{\"name\": "), headers: [.contentType: "application/json"])
            #expect(malformed.status == .badRequest && malformed.text.contains("not valid JSON"))
            let wrongType = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "net", extra: ["cpus": "many"]))
            #expect(wrongType.status == .badRequest && wrongType.text.contains("cpus"))
            let ide = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "net", extra: ["disk": [["size": 8, "bus": "ide"]]]))
            #expect(ide.status == .badRequest && ide.text.contains("IDE"))
            let badName = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "net", extra: ["name": .string(String(repeating: "x", count: 300))]))
            #expect(badName.status == .badRequest)
            let huge = try await api.send(.post, "/instances", token: token, raw: ByteBuffer(repeating: UInt8(ascii: " "), count: 5 << 20))
            #expect(huge.status == .contentTooLarge)
            #expect(try await api.send(.get, "/instances/nothing-here", token: token).status == .notFound)
            let noNetwork = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "missing"))
            #expect(noNetwork.status == .notFound)
        }
    }

    @Test("metadata: set, read, refuse falsy values, delete; an interface is found by MAC")
    func metadata() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let token = try await api.token()
            _ = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.0.0.0/24", "name": "net"])
            let created = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "net"))
            let uuid = try #require(created["uuid"]?.stringValue)
            #expect(try await api.send(.put, "/instances/\(uuid)/metadata/owner", token: token, body: ["value": "ops"]).text == "null\n")
            #expect(try await api.send(.put, "/instances/\(uuid)/metadata/tags", token: token, body: ["value": "notalist"]).status == .badRequest)
            #expect(try await api.send(.put, "/instances/\(uuid)/metadata/empty", token: token, body: ["value": ""]).status == .badRequest)
            #expect(try await api.send(.get, "/instances/\(uuid)/metadata", token: token).json == .object(["owner": "ops"]))
            #expect(try await api.send(.delete, "/instances/\(uuid)/metadata/owner", token: token).status == .ok)
            #expect(try await api.send(.get, "/instances/\(uuid)/metadata", token: token).json == .object([:]))
            guard case .array(let interfaces)? = created["interfaces"], case .object(let interface)? = interfaces.first,
                let mac = interface["macaddr"]?.stringValue
            else { throw APIFixtureError("no interface in \(created.text)") }
            let byMAC = try await api.send(.get, "/interfaces/\(mac)", token: token)
            #expect(byMAC.status == .ok && byMAC["uuid"] == interface["uuid"])
            #expect(try await api.send(.post, "/interfaces/\(mac)/float", token: token).text == "null\n")
        }
    }

    @Test("delete-all tries every object: one that cannot go is named, the others still go")
    func deleteAllGoesOn() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let token = try await api.token()
            let busy = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.0.0.0/24", "name": "busy"])
            let free = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.0.1.0/24", "name": "free"])
            _ = try await api.send(.post, "/instances", token: token, body: Self.createBody(network: "busy"))
            let (busyUUID, freeUUID) = (try #require(busy["uuid"]), try #require(free["uuid"]))
            // The busy network comes first (oldest first), and the free one behind it still goes.
            let networks = try await api.send(.delete, "/networks", token: token, body: ["confirm": true, "namespace": "system"])
            #expect(networks.status == .forbidden)
            #expect(networks["error"] == .object(["deleted": .array([freeUUID]), "unable": .array([busyUUID])]), "\(networks.text)")
            let instances = try await api.send(.delete, "/instances", token: token, body: ["confirm": true, "namespace": "system"])
            #expect(instances.status == .ok && instances.json?.arrayValue?.count == 1, "\(instances.text)")
        }
    }
}

extension JSONValue {
    var objectValue: [String: JSONValue]? {
        if case .object(let members) = self { return members }
        return nil
    }
}
