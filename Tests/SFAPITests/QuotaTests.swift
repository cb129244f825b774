import Foundation
import HTTPTypes
import NIOCore
import SFAPI
import SFControl
import SFStore
import Testing

/// Each namespace quota refuses with a clear answer naming its setting, and the admin is exempt.
@Suite("API namespace quotas")
struct QuotaTests {
    /// A tenant namespace `ci` with its token, and the admin's token, on a fixture with `quotas`.
    static func withTenant(
        _ quotas: NamespaceQuotas, _ body: @escaping @Sendable (APIClient, _ tenant: String, _ admin: String, APIFixture) async throws -> Void
    ) async throws {
        let fixture = try await APIFixture(quotas: quotas)
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let made = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "ci", "key_name": "k", "key": "tenant-key-1"])
            #expect(made.status == .ok, "\(made.text)")
            try await body(api, try await api.token(namespace: "ci", key: "tenant-key-1"), admin, fixture)
        }
    }

    static func instance(_ name: String, cpus: Int = 1, memory: Int = 512, disk: Int = 8, extra: [String: JSONValue] = [:]) -> JSONValue {
        var body: [String: JSONValue] = ["name": .string(name), "cpus": .number(Double(cpus)), "memory": .number(Double(memory)), "disk": [["size": .number(Double(disk))]]]
        for (key, value) in extra { body[key] = value }
        return .object(body)
    }

    static func expectRefused(_ response: APIResponse, _ status: HTTPResponse.Status, naming setting: String) {
        #expect(response.status == status, "\(response.status.code) \(response.text)")
        #expect(response["error"]?.stringValue?.contains(setting) == true, "\(response.text)")
    }

    @Test("instances, vCPUs, memory and disk are refused past their quotas with 403; the admin is exempt")
    func instanceQuotas() async throws {
        var quotas = NamespaceQuotas()
        quotas.instances = 2
        quotas.vcpus = 3
        quotas.memoryMiB = 1536
        quotas.diskGiB = 20
        try await Self.withTenant(quotas) { api, tenant, admin, _ in
            #expect(try await api.send(.post, "/instances", token: tenant, body: Self.instance("a", cpus: 2)).status == .ok)
            Self.expectRefused(try await api.send(.post, "/instances", token: tenant, body: Self.instance("b", cpus: 2)), .forbidden, naming: "SFNODE_QUOTA_VCPUS")
            Self.expectRefused(try await api.send(.post, "/instances", token: tenant, body: Self.instance("b", memory: 1536)), .forbidden, naming: "SFNODE_QUOTA_MEMORY_GIB")
            Self.expectRefused(try await api.send(.post, "/instances", token: tenant, body: Self.instance("b", disk: 16)), .forbidden, naming: "SFNODE_QUOTA_DISK_GIB")
            #expect(try await api.send(.post, "/instances", token: tenant, body: Self.instance("b")).status == .ok)
            Self.expectRefused(try await api.send(.post, "/instances", token: tenant, body: Self.instance("c")), .forbidden, naming: "SFNODE_QUOTA_INSTANCES")
            // The admin's own namespace has no quota.
            for name in ["x", "y", "z"] {
                #expect(try await api.send(.post, "/instances", token: admin, body: Self.instance(name, cpus: 2)).status == .ok)
            }
        }
    }

    @Test("networks and floating addresses (NAT gateways, floats) are refused past their quotas with 403")
    func networkQuotas() async throws {
        var quotas = NamespaceQuotas()
        quotas.networks = 3
        quotas.floatingAddresses = 1
        try await Self.withTenant(quotas) { api, tenant, _, _ in
            #expect(try await api.send(.post, "/networks", token: tenant, body: ["netblock": "10.0.0.0/24", "name": "nat"]).status == .ok)
            Self.expectRefused(
                try await api.send(.post, "/networks", token: tenant, body: ["netblock": "10.1.0.0/24", "name": "nat2"]), .forbidden,
                naming: "SFNODE_QUOTA_FLOATING_ADDRESSES")
            #expect(try await api.send(.post, "/networks", token: tenant, body: ["netblock": "10.1.0.0/24", "name": "b", "provide_nat": false]).status == .ok)
            let floating = Self.instance("f", extra: ["network": [["network_uuid": "b", "float": true]]])
            Self.expectRefused(try await api.send(.post, "/instances", token: tenant, body: floating), .forbidden, naming: "SFNODE_QUOTA_FLOATING_ADDRESSES")
            #expect(try await api.send(.post, "/networks", token: tenant, body: ["netblock": "10.2.0.0/24", "name": "c", "provide_nat": false]).status == .ok)
            Self.expectRefused(
                try await api.send(.post, "/networks", token: tenant, body: ["netblock": "10.3.0.0/24", "name": "d", "provide_nat": false]), .forbidden,
                naming: "SFNODE_QUOTA_NETWORKS")
        }
    }

    @Test("pending uploads are 403 past their quota; an upload past its size cap or the namespace's bytes is 413")
    func uploadQuotas() async throws {
        var quotas = NamespaceQuotas()
        quotas.pendingUploads = 2
        quotas.uploadBytes = 100
        quotas.blobBytes = 150
        try await Self.withTenant(quotas) { api, tenant, admin, _ in
            let first = try #require(try await api.send(.post, "/upload", token: tenant)["uuid"]?.stringValue)
            let second = try #require(try await api.send(.post, "/upload", token: tenant)["uuid"]?.stringValue)
            Self.expectRefused(try await api.send(.post, "/upload", token: tenant), .forbidden, naming: "SFNODE_QUOTA_PENDING_UPLOADS")
            let chunk = ByteBuffer(repeating: 7, count: 80)
            #expect(try await api.send(.post, "/upload/\(first)", token: tenant, raw: chunk).json == 80)
            Self.expectRefused(try await api.send(.post, "/upload/\(first)", token: tenant, raw: chunk), .contentTooLarge, naming: "SFNODE_UPLOAD_MAX_GIB")
            Self.expectRefused(try await api.send(.post, "/upload/\(second)", token: tenant, raw: chunk), .contentTooLarge, naming: "SFNODE_QUOTA_BLOB_GIB")
            // The admin keeps the per-upload cap (it protects the disk) but has no byte quota.
            let own = try #require(try await api.send(.post, "/upload", token: admin)["uuid"]?.stringValue)
            #expect(try await api.send(.post, "/upload/\(own)", token: admin, raw: chunk).json == 80)
            Self.expectRefused(try await api.send(.post, "/upload/\(own)", token: admin, raw: chunk), .contentTooLarge, naming: "SFNODE_UPLOAD_MAX_GIB")
        }
    }

    @Test("queued jobs past the namespace's quota are 429 with Retry-After; an identical queued power operation is coalesced")
    func queuedJobs() async throws {
        var quotas = NamespaceQuotas()
        quotas.queuedJobs = 3
        try await Self.withTenant(quotas) { api, tenant, _, fixture in
            let made = try await api.send(.post, "/instances", token: tenant, body: Self.instance("a"))
            let uuid = try #require(made["uuid"]?.stringValue.flatMap(UUID.init(uuidString:)))
            // Power operations are for a created instance; no agent runs here, so it is made so.
            for state in [InstanceState.preflight, .creating, .created] { try await fixture.store.setInstanceState(uuid: uuid, to: state) }
            #expect(try await api.send(.post, "/instances/a/poweroff", token: tenant).status == .ok)
            #expect(try await api.send(.post, "/instances/a/poweroff", token: tenant).status == .ok)
            let queued = try await fixture.store.jobs(states: [.queued], limit: 100)
            #expect(queued.filter { $0.kind == "instance.poweroff" }.count == 1, "the second poweroff is coalesced into the first")
            #expect(try await api.send(.post, "/instances/a/poweron", token: tenant).status == .ok)
            let refused = try await api.send(.post, "/instances/a/rebootsoft", token: tenant)
            Self.expectRefused(refused, .tooManyRequests, naming: "SFNODE_QUOTA_QUEUED_JOBS")
            #expect(refused.headers[.retryAfter] != nil)
        }
    }

    @Test("metadata at create obeys the value limit and the key count; set later, a key past the count is 403; user_data text is bounded")
    func metadataAndUserData() async throws {
        var quotas = NamespaceQuotas()
        quotas.metadataKeys = 2
        try await Self.withTenant(quotas) { api, tenant, _, _ in
            let big = JSONValue.string(String(repeating: "x", count: 70_000))
            let bigValue = try await api.send(.post, "/instances", token: tenant, body: Self.instance("m", extra: ["metadata": ["k": big]]))
            #expect(bigValue.status == .badRequest && bigValue.text.contains("65536"), "\(bigValue.text)")
            let tooMany = try await api.send(.post, "/instances", token: tenant, body: Self.instance("m", extra: ["metadata": ["a": 1, "b": 2, "c": 3]]))
            Self.expectRefused(tooMany, .badRequest, naming: "SFNODE_QUOTA_METADATA_KEYS")
            let userData = JSONValue.string(String(repeating: "QUFB\n", count: 40_000))
            let hugeUserData = try await api.send(.post, "/instances", token: tenant, body: Self.instance("m", extra: ["user_data": userData]))
            #expect(hugeUserData.status == .badRequest && hugeUserData.text.contains("user_data"), "\(hugeUserData.text)")
            #expect(try await api.send(.post, "/instances", token: tenant, body: Self.instance("m", extra: ["metadata": ["a": 1, "b": 2]])).status == .ok)
            #expect(try await api.send(.put, "/instances/m/metadata/a", token: tenant, body: ["value": 5]).status == .ok)
            Self.expectRefused(try await api.send(.put, "/instances/m/metadata/c", token: tenant, body: ["value": 5]), .forbidden, naming: "SFNODE_QUOTA_METADATA_KEYS")
        }
    }
}
