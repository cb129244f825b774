import Foundation
import SFControl
import SFStore
import Testing

/// The network calls on the wire: create with provide_dns and Shaken Fist's netblock refusals, and
/// ping's checks in Shaken Fist's order (the network, its state, the address, the netblock) with
/// sfnode's codes (406 only while a network is made; 409 for one that never will be).
@Suite struct NetworkAPITests {
    @Test func provideDNSIsStoredAndShownAndBadNetblocksAreRefusedByName() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let token = try await api.token()
            let created = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.0.0.0/29", "name": "dns", "provide_dns": true])
            #expect(created.status == .ok && created["provide_dns"] == true, "\(created.text)")
            let uuid = try #require(created["uuid"]?.stringValue)
            #expect(try await api.send(.get, "/networks/\(uuid)", token: token)["provide_dns"] == true)
            let plain = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.1.0.0/24", "name": "plain"])
            #expect(plain["provide_dns"] == false)
            for (netblock, message) in [
                ("10.0.0.1/24", "cannot parse netblock: 10.0.0.1/24 has host bits set"),
                ("10.0.0.0/30", "network is below minimum size of /29"),
                ("10.0.0.1", "network is below minimum size of /29"),
                ("bogus", "cannot parse netblock: 'bogus' does not appear to be an IPv4 or IPv6 network"),
                ("fd00::/64", "cannot parse netblock: fd00::/64 is an IPv6 network; sfnode networks are IPv4 only"),
            ] {
                let refused = try await api.send(.post, "/networks", token: token, body: ["netblock": .string(netblock), "name": "bad"])
                #expect(refused.status == .badRequest && refused["error"]?.stringValue == message, "\(netblock): \(refused.text)")
            }
        }
    }

    @Test func pingChecksRunInShakenFistsOrder() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "other", "key_name": "k", "key": "other-key"])
            let other = try await api.token(namespace: "other", key: "other-key")
            let created = try await api.send(.post, "/networks", token: admin, body: ["netblock": "10.2.0.0/24", "name": "net"])
            let uuidText = try #require(created["uuid"]?.stringValue)
            let uuid = try #require(UUID(uuidString: uuidText))
            func ping(_ address: String, token: String = admin) async throws -> APIResponse {
                try await api.send(.get, "/networks/\(uuidText)/ping/\(address)", token: token)
            }
            #expect(try await ping("10.2.0.1", token: other).status == .notFound)
            // Still being made: 406, before the address is even looked at.
            let initial = try await ping("not-an-address")
            #expect(initial.status == .notAcceptable && initial["error"]?.stringValue == "network \(uuidText) is not ready (initial)", "\(initial.text)")
            _ = try await fixture.store.setNetworkState(uuid: uuid, to: .created)
            let invalid = try await ping("10.2.0.256")
            #expect(invalid.status == .badRequest && invalid["error"]?.stringValue == "invalid address", "\(invalid.text)")
            for outside in ["10.3.0.1", "fd00::1"] {
                let refused = try await ping(outside)
                #expect(refused.status == .badRequest && refused["error"]?.stringValue == "ping request for address outside network block", "\(refused.text)")
            }
            // Inside the block, but this node has no namespace for the network (it runs no agent).
            #expect(try await ping("10.2.0.255").status == .conflict)
            _ = try await fixture.store.setNetworkState(uuid: uuid, to: .error)
            let failed = try await ping("10.2.0.1")
            #expect(failed.status == .conflict && failed["error"]?.stringValue == "network \(uuidText) is not ready (error)", "\(failed.text)")
        }
    }

    @Test func extraDNSEntriesAnswer400NotTheClientsRetrying406() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let token = try await api.token()
            let page = try await api.send(.get, "/")
            #expect(page.text.contains("extra-dns-entries"))
            let dns = try #require(try await api.send(.post, "/networks", token: token, body: ["netblock": "10.4.0.0/24", "name": "dns", "provide_dns": true])["uuid"]?.stringValue)
            let plain = try #require(try await api.send(.post, "/networks", token: token, body: ["netblock": "10.5.0.0/24", "name": "plain"])["uuid"]?.stringValue)
            let early = try await api.send(.post, "/networks/\(dns)/dns", token: token, body: ["name": "db", "value": "10.4.0.5"])
            #expect(early.status == .notAcceptable, "\(early.text)")
            for uuid in [dns, plain] { _ = try await fixture.store.setNetworkState(uuid: try #require(UUID(uuidString: uuid)), to: .created) }
            let added = try await api.send(.post, "/networks/\(dns)/dns", token: token, body: ["name": "db", "value": "10.4.0.5"])
            #expect(added.status == .ok && added.json == .null, "\(added.text)")
            let removed = try await api.send(.delete, "/networks/\(dns)/dns", token: token, body: ["name": "db"])
            #expect(removed.status == .ok && removed.json == .null, "\(removed.text)")
            for (uuid, body, message) in [
                (plain, ["name": "db", "value": "10.5.0.5"] as JSONValue, "network does not provide DNS"),
                (dns, ["name": "no such!", "value": "10.4.0.5"], "invalid DNS name"),
                (dns, ["name": "db", "value": "somewhere"], "invalid DNS value: 'somewhere' is not an IPv4 address"),
            ] {
                let refused = try await api.send(.post, "/networks/\(uuid)/dns", token: token, body: body)
                #expect(refused.status == .badRequest && refused["error"]?.stringValue == message, "\(refused.text)")
            }
        }
    }
}
