import Foundation
import HTTPTypes
import NIOCore
import SFAPI
import SFStore
import Testing

@Suite("API ownership of uploads, artifacts, blobs and the store file")
struct OwnershipTests {
    @Test("another namespace's upload is 404; blob metadata needs a blob the caller sees; unknown namespaces are 404")
    func ownership() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            for name in ["ci", "other"] {
                _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": .string(name), "key_name": "deploy", "key": "deploy-key-\(name)"])
            }
            let ci = try await api.token(namespace: "ci", key: "deploy-key-ci")
            let other = try await api.token(namespace: "other", key: "deploy-key-other")
            let upload = try await api.send(.post, "/upload", token: ci)
            let uuid = try #require(upload["uuid"]?.stringValue)
            let chunk = ByteBuffer(string: String(repeating: "sfnode", count: 1000))
            #expect(try await api.send(.post, "/upload/\(uuid)", token: ci, raw: chunk).json == .number(6000))
            #expect(try await api.send(.post, "/upload/\(uuid)", token: other, raw: chunk).status == .notFound)
            #expect(try await api.send(.post, "/upload/\(uuid)/truncate/0", token: other).status == .notFound)
            #expect(try await api.send(.post, "/artifacts/upload/stolen", token: other, body: ["upload_uuid": .string(uuid)]).status == .notFound)
            let artifact = try await api.send(.post, "/artifacts/upload/mine", token: ci, body: ["upload_uuid": .string(uuid)])
            #expect(artifact.status == .ok && artifact["namespace"] == "ci", "\(artifact.text)")
            let blob = try #require(artifact["blob_uuid"]?.stringValue)
            let artifactUUID = try #require(artifact["uuid"]?.stringValue)
            #expect(try await api.send(.put, "/artifacts/\(artifactUUID)/metadata/owner", token: other, body: ["value": "me"]).status == .notFound)
            #expect(try await api.send(.put, "/blobs/\(blob)/metadata/owner", token: ci, body: ["value": "me"]).status == .ok)
            #expect(try await api.send(.put, "/blobs/\(blob)/metadata/owner", token: other, body: ["value": "me"]).status == .notFound)
            #expect(try await api.send(.put, "/blobs/\(blob)/metadata/owner", token: admin, body: ["value": "ops"]).status == .ok)
            #expect(try await api.send(.get, "/blobs/\(UUID().uuidString)/metadata", token: ci).status == .notFound)
            let listed = try await api.send(.get, "/blobs", token: admin)
            #expect(listed.text.contains("\"instances\""), "sf-client's blob list iterates instances: \(listed.text)")
            #expect(try await api.send(.delete, "/instances", token: admin, body: ["confirm": true, "namespace": "nowhere"]).status == .notFound)
            #expect(try await api.send(.delete, "/auth/namespaces/ci", token: admin).status == .ok, "its artifact goes with it")
            #expect(try await api.send(.get, "/artifacts/\(artifactUUID)", token: admin)["state"] == "deleted")
            let unsupported = try await api.send(.post, "/instances/\(UUID().uuidString)/interfaces", token: admin)
            #expect(unsupported.status == .badRequest && unsupported.text.contains("not supported by sfnode"), "\(unsupported.text)")
        }
        let mode = try FileManager.default.attributesOfItem(atPath: fixture.store.path)[.posixPermissions] as? Int
        #expect(mode == 0o600, "the store holds the token-signing secret")
    }
}
