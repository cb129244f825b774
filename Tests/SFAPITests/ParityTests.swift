import Foundation
import NIOCore
import SFAPI
import SFStore
import Testing

/// Calls the real client makes that must answer as Shaken Fist answers them (issue 14).
@Suite("Shaken Fist parity of the API")
struct ParityTests {
    @Test("a known path with a wrong method is 405 with Allow, before authentication; OPTIONS and HEAD answer; unknown paths stay 404")
    func wrongMethodIs405() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let put = try await api.send(.put, "/auth/namespaces/system/keys")
            #expect(put.status == .methodNotAllowed, "\(put.text)")
            #expect(put["error"]?.stringValue == "The method is not allowed for the requested URL.")
            #expect(put.headers[.allow] == "GET, HEAD, OPTIONS, POST", "\(put.headers)")
            let root = try await api.send(.post, "/")
            #expect(root.status == .methodNotAllowed && root.headers[.allow]?.contains("GET") == true)
            let options = try await api.send(.options, "/instances")
            #expect(options.status == .ok && options.headers[.allow] == "DELETE, GET, HEAD, OPTIONS, POST", "\(options.headers)")
            let unknown = try await api.send(.put, "/no/such/path")
            #expect(unknown.status == .notFound)
            // The route exists for GET: HEAD is answered (401 here, as its GET is without a token).
            let head = try await api.send(.head, "/instances")
            #expect(head.status == .unauthorized)
            let token = try await api.token()
            let authorised = try await api.send(.head, "/instances", token: token)
            #expect(authorised.status == .ok)
        }
    }

    @Test("any namespace that sees a blob may change its metadata; one that does not see it gets 404")
    func blobMetadataIsNotAdminOnly() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "tenant", "key_name": "k", "key": "tenant-key-1"])
            let tenant = try await api.token(namespace: "tenant", key: "tenant-key-1")
            let upload = try await api.send(.post, "/upload", token: tenant)
            let uploadUUID = try #require(upload["uuid"]?.stringValue)
            _ = try await api.send(.post, "/upload/\(uploadUUID)", token: tenant, raw: ByteBuffer(string: "some image bytes"))
            let made = try await api.send(.post, "/artifacts/upload/img", token: tenant, body: ["upload_uuid": .string(uploadUUID)])
            let blob = try #require(made["blob_uuid"]?.stringValue, "\(made.text)")
            let set = try await api.send(.put, "/blobs/\(blob)/metadata/owner", token: tenant, body: ["value": "team-a"])
            #expect(set.status == .ok, "\(set.text)")
            let read = try await api.send(.get, "/blobs/\(blob)/metadata", token: tenant)
            #expect(read["owner"] == .string("team-a"))
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "other", "key_name": "k", "key": "other-key-12"])
            let other = try await api.token(namespace: "other", key: "other-key-12")
            let foreign = try await api.send(.put, "/blobs/\(blob)/metadata/owner", token: other, body: ["value": "mine"])
            #expect(foreign.status == .notFound)
        }
    }

    @Test("namespace metadata for the namespace and the admin only; node metadata, events and locks for the admin")
    func namespaceAndNodeMetadata() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "tenant", "key_name": "k", "key": "tenant-key-1"])
            let tenant = try await api.token(namespace: "tenant", key: "tenant-key-1")
            let set = try await api.send(.post, "/auth/namespaces/tenant/metadata", token: tenant, body: ["key": "team", "value": "blue"])
            #expect(set.status == .ok && set.json == .null, "\(set.text)")
            #expect(try await api.send(.get, "/auth/namespaces/tenant/metadata", token: admin)["team"] == .string("blue"))
            #expect(try await api.send(.get, "/auth/namespaces/tenant", token: tenant)["metadata"] == .object(["team": "blue"]))
            let empty = try await api.send(.put, "/auth/namespaces/tenant/metadata/team", token: tenant, body: ["value": ""])
            #expect(empty.status == .badRequest && empty.text.contains("no value specified"))
            #expect(try await api.send(.get, "/auth/namespaces/system/metadata", token: tenant).status == .notFound)
            #expect(try await api.send(.delete, "/auth/namespaces/tenant/metadata/team", token: tenant).status == .ok)
            #expect(try await api.send(.delete, "/auth/namespaces/tenant/metadata/team", token: tenant).status == .ok)
            #expect(try await api.send(.get, "/auth/namespaces/tenant/metadata", token: tenant).json == .object([:]))

            #expect(try await api.send(.put, "/nodes/hv1/metadata/rack", token: admin, body: ["value": "r12"]).status == .ok)
            #expect(try await api.send(.get, "/nodes/hv1", token: admin)["metadata"] == .object(["rack": "r12"]))
            #expect(try await api.send(.get, "/nodes/hv1/metadata", token: tenant).status == .unauthorized)
            #expect(try await api.send(.get, "/nodes/nowhere/metadata", token: admin).status == .notFound)
            #expect(try await api.send(.get, "/nodes/nowhere/events", token: admin).json == .array([]))
            #expect(try await api.send(.get, "/admin/locks", token: admin).json == .object([:]))
            #expect(try await api.send(.get, "/admin/locks", token: tenant).status == .unauthorized)
        }
    }
}
