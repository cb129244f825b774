import Foundation
import HTTPTypes
import Testing
import SFAPI
import Logging
import SFStore
import SFTestSupport

@Suite("API authentication and namespaces")
struct AuthTests {
    @Test("the capability page is public and advertises exactly what is implemented")
    func capabilities() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let page = try await api.send(.get, "/")
            #expect(page.status == .ok)
            for implemented in ["blob-search-by-hash", "blob-data-limit", "events-by-type", "interface-metadata", "get-instance-namespace", "provide-dns", "node-metadata", "vdi-console-helper", "extra-dns-entries"] {
                #expect(page.text.contains(implemented), "missing \(implemented)")
            }
            for missing in ["network-delete-async", "hot-plug-interface", "blob-events", "blob-single-checksum", "get-cluster-operations"] {
                #expect(!page.text.contains(missing), "advertises \(missing), which is not implemented")
            }
        }
    }

    @Test("a bad key and an unknown namespace are 401, and no, garbage or expired tokens are 401")
    func tokens() async throws {
        let fixture = try await APIFixture(tokenLifetime: .seconds(3))
        defer { fixture.cleanup() }
        try await fixture.run { api in
            #expect(try await api.send(.post, "/auth", body: ["namespace": "system", "key": "wrong-key-value"]).status == .unauthorized)
            // Not 404: that would tell a guesser which namespaces exist.
            #expect(try await api.send(.post, "/auth", body: ["namespace": "nowhere", "key": "whatever-key"]).status == .unauthorized)
            let refusedField = try await api.send(.post, "/auth", body: ["namespace": "system", "keyyy": "x"])
            #expect(refusedField.status == .badRequest && refusedField.text.contains("keyyy"))
            #expect(try await api.send(.get, "/instances").status == .unauthorized)
            #expect(try await api.send(.get, "/instances", token: "not.a.jwt").status == .unauthorized)
            let token = try await api.token()
            let listed = try await api.send(.get, "/instances", token: token, body: ["all": false])
            #expect(listed.status == .ok && listed.json == .array([]))
            // Polled, not slept on: the token's seconds count from its making, however slow the
            // requests above were.
            #expect(await eventually(timeout: .seconds(15)) { (try? await api.send(.get, "/instances", token: token).status) == .unauthorized })
            let expired = try await api.send(.get, "/instances", token: token)
            #expect(expired.status == .unauthorized && expired["error"] != nil)
        }
    }

    @Test("namespaces isolate: another namespace's network is 404, the admin sees all, a deleted key's tokens stop")
    func isolation() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            for name in ["ci", "other"] {
                let created = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": .string(name), "key_name": "deploy", "key": "deploy-key-\(name)"])
                #expect(created.status == .ok && created["name"] == .string(name))
            }
            let ci = try await api.token(namespace: "ci", key: "deploy-key-ci")
            let other = try await api.token(namespace: "other", key: "deploy-key-other")
            let network = try await api.send(.post, "/networks", token: ci, body: ["netblock": "10.0.0.0/24", "provide_dhcp": true, "provide_nat": true, "name": "cinet", "namespace": nil])
            #expect(network.status == .ok && network["namespace"] == "ci" && network["state"] == "initial")
            let uuid = try #require(network["uuid"]?.stringValue)
            #expect(try await api.send(.get, "/networks/\(uuid)", token: other).status == .notFound)
            #expect(try await api.send(.get, "/networks/cinet", token: other).status == .notFound)
            #expect(try await api.send(.get, "/networks/\(uuid)", token: admin)["name"] == "cinet")
            #expect(try await api.send(.post, "/auth/namespaces", token: ci, body: ["namespace": "mine"]).status == .unauthorized)
            #expect(try await api.send(.get, "/blobs", token: ci).status == .unauthorized)
            #expect(try await api.send(.delete, "/auth/namespaces/other/keys/deploy", token: admin).status == .ok)
            #expect(try await api.send(.get, "/networks", token: other).status == .unauthorized)
            let stored = try await fixture.store.keys(namespace: "ci")
            #expect(stored.count == 1 && stored[0].hash.hasPrefix("$2") && !stored[0].hash.contains("deploy-key-ci"))
        }
    }

    @Test("the client configuration is written once, kept while valid, replaced when another store's")
    func clientConfiguration() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        let path = (fixture.store.path as NSString).deletingLastPathComponent + "/etc-sf/shakenfist.json"
        let logger = Logger(label: "test")
        try await ClientConfiguration.prepare(at: path, apiURL: "http://127.0.0.1:13000", control: fixture.control, records: fixture.store, logger: logger)
        let first = try JSONDecoder().decode(ClientConfiguration.self, from: try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(first.namespace == "system" && first.apiurl == "http://127.0.0.1:13000")
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        try await ClientConfiguration.prepare(at: path, apiURL: "http://127.0.0.1:13000", control: fixture.control, records: fixture.store, logger: logger)
        #expect(try JSONDecoder().decode(ClientConfiguration.self, from: try Data(contentsOf: URL(fileURLWithPath: path))) == first)
        let foreign = ClientConfiguration(namespace: "system", key: "a-key-from-another-store", apiurl: "http://127.0.0.1:13000")
        try JSONEncoder().encode(foreign).write(to: URL(fileURLWithPath: path))
        try await ClientConfiguration.prepare(at: path, apiURL: "http://127.0.0.1:13000", control: fixture.control, records: fixture.store, logger: logger)
        let replaced = try JSONDecoder().decode(ClientConfiguration.self, from: try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(replaced.key != foreign.key && replaced.key != first.key)
        try await fixture.run { api in
            let current = try await api.send(.post, "/auth", body: ["namespace": "system", "key": .string(replaced.key)])
            let old = try await api.send(.post, "/auth", body: ["namespace": "system", "key": .string(first.key)])
            #expect(current.status == .ok)
            #expect(old.status == .unauthorized)
        }
    }
}
