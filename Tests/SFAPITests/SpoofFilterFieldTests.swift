import Foundation
import SFAPI
import SFStore
import Testing

@Suite("The network's spoof_filter field")
struct SpoofFilterFieldTests {
    @Test("on by default; only the admin may turn it off; the store keeps what the admin asked")
    func onlyTheAdminTurnsTheFilterOff() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "tenant", "key_name": "deploy", "key": "deploy-key-t"])
            let tenant = try await api.token(namespace: "tenant", key: "deploy-key-t")

            let plain = try await api.send(.post, "/networks", token: tenant, body: ["netblock": "10.1.0.0/24", "name": "plain"])
            #expect(plain.status == .ok && plain["spoof_filter"] == .bool(true), "\(plain.text)")
            let refused = try await api.send(
                .post, "/networks", token: tenant, body: ["netblock": "10.2.0.0/24", "name": "open", "spoof_filter": false])
            #expect(refused.status == .unauthorized && refused.text.contains("spoof_filter"), "\(refused.text)")
            let open = try await api.send(
                .post, "/networks", token: admin, body: ["netblock": "10.3.0.0/24", "name": "open", "spoof_filter": false])
            #expect(open.status == .ok && open["spoof_filter"] == .bool(false), "\(open.text)")
            let uuid = try #require(open["uuid"]?.stringValue.flatMap(UUID.init(uuidString:)))
            #expect(try await fixture.store.network(uuid: uuid).spoofFilter == false)
        }
    }
}
