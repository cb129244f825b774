import Foundation
import HTTPTypes
import NIOCore
import SFAPI
import SFStore
import Testing

/// Images belong to namespaces, through the API as a real client sends it: another tenant's upload,
/// URL cache and blob are not found; credentials in URLs are the owner's only.
@Suite("API: images belong to namespaces")
struct ImageNamespaceAPITests {
    /// Tokens for the admin and two tenants, `a` and `b`.
    static func tokens(_ api: APIClient) async throws -> (admin: String, a: String, b: String) {
        let admin = try await api.token()
        for name in ["a", "b"] {
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": .string(name), "key_name": "k", "key": .string("key-of-\(name)-123")])
        }
        return (admin, try await api.token(namespace: "a", key: "key-of-a-123"), try await api.token(namespace: "b", key: "key-of-b-123"))
    }

    /// Uploads `bytes` as artifact `name` the way sf-client does; returns the artifact object.
    static func upload(_ api: APIClient, _ token: String, name: String, bytes: String, shared: Bool = false) async throws -> APIResponse {
        let upload = try #require(try await api.send(.post, "/upload", token: token)["uuid"]?.stringValue)
        _ = try await api.send(.post, "/upload/\(upload)", token: token, raw: ByteBuffer(string: bytes))
        return try await api.send(
            .post, "/artifacts/upload/\(name)", token: token,
            body: ["namespace": nil, "shared": .bool(shared), "source_url": nil, "upload_uuid": .string(upload)])
    }

    static func instance(base: String) -> JSONValue {
        InstanceAPITests.createBody(network: "none", extra: ["network": [], "disk": [["size": 8, "base": .string(base)]]])
    }

    @Test("tenant b cannot boot, read, look up or adopt tenant a's upload")
    func foreignUploadAndBlob() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let (admin, a, b) = try await Self.tokens(api)
            let content = String(repeating: "private-bytes-", count: 300)
            let artifact = try await Self.upload(api, a, name: "db-image", bytes: content)
            #expect(artifact.status == .ok && artifact["namespace"] == "a" && artifact["shared"] == false, "\(artifact.text)")
            let blob = try #require(artifact["blob_uuid"]?.stringValue)

            let stolen = try await api.send(.post, "/instances", token: b, body: Self.instance(base: "sf://upload/a/db-image"))
            #expect(stolen.status == .notFound && stolen["error"] == "artifact not found", "\(stolen.text)")
            let own = try await api.send(.post, "/instances", token: a, body: Self.instance(base: "sf://upload/a/db-image"))
            #expect(own.status == .ok, "\(own.text)")
            #expect(try await api.send(.post, "/instances", token: b, body: Self.instance(base: "sf://blob/\(blob)")).status == .notFound)

            #expect(try await api.send(.get, "/blobs/\(blob)", token: b).status == .notFound)
            #expect(try await api.send(.get, "/blobs/\(blob)/data", token: b).status == .notFound)
            #expect(try await api.send(.get, "/blobs/\(blob)/metadata", token: b).status == .notFound)
            #expect(try await api.send(.get, "/blobs/\(blob)/data", token: a).text == content)
            let sha512 = try #require(try await api.send(.get, "/blobs/\(blob)", token: a)["sha512"]?.stringValue)
            #expect(try await api.send(.get, "/blob_checksums/sha512/\(sha512)", token: b).json == .null)
            #expect(try await api.send(.get, "/blob_checksums/sha512/\(sha512)", token: a)["uuid"]?.stringValue == blob)
            #expect(try await api.send(.post, "/artifacts/upload/mine", token: b, body: ["blob_uuid": .string(blob)]).status == .notFound)
            #expect(try await api.send(.post, "/label/mine", token: b, body: ["blob_uuid": .string(blob)]).status == .notFound)

            // qemu's file name is a host path: the admin's only. The owner sees its instance.
            try await fixture.store.setBlobInfo(uuid: try #require(UUID(uuidString: blob)), info: ["filename": "/srv/blobs/x", "format": "raw"])
            let forOwner = try await api.send(.get, "/blobs/\(blob)", token: a)
            #expect(forOwner["filename"] == nil && forOwner["format"] == "raw", "\(forOwner.text)")
            #expect(try await api.send(.get, "/blobs/\(blob)", token: admin)["filename"] == "/srv/blobs/x")
        }
    }

    @Test("a URL cache is the caller's; only the admin shares; credentials are redacted for others")
    func urlCacheAndSharing() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let (admin, a, b) = try await Self.tokens(api)
            let url = "http://user:pw@127.0.0.1:9/x.qcow2?sig=secret"
            let mine = try await api.send(.post, "/artifacts", token: a, body: ["url": .string(url), "shared": false, "namespace": nil])
            #expect(mine.status == .ok && mine["namespace"] == "a" && mine["shared"] == false && mine["source_url"] == .string(url), "\(mine.text)")
            let uuid = try #require(mine["uuid"]?.stringValue)
            #expect(try await api.send(.get, "/artifacts/\(uuid)", token: b).status == .notFound)
            #expect(try await api.send(.get, "/artifacts", token: b).json == .array([]))
            let refused = try await api.send(.post, "/artifacts", token: b, body: ["url": .string(url), "shared": true])
            #expect(refused.status == .forbidden && refused["error"] == "only the system namespace can create shared artifacts")
            #expect(try await Self.upload(api, a, name: "x", bytes: "abc", shared: true).status == .forbidden)

            let shared = try await api.send(.post, "/artifacts", token: admin, body: ["url": .string(url), "shared": true])
            #expect(shared["namespace"] == "system" && shared["shared"] == true, "\(shared.text)")
            let sharedUUID = try #require(shared["uuid"]?.stringValue)
            let seenByB = try await api.send(.get, "/artifacts/\(sharedUUID)", token: b)
            #expect(seenByB["source_url"] == "http://redacted@127.0.0.1:9/x.qcow2?redacted", "\(seenByB.text)")
            #expect(try await api.send(.get, "/artifacts/\(sharedUUID)", token: admin)["source_url"] == .string(url))
            let gold = try await Self.upload(api, admin, name: "gold", bytes: "golden", shared: true)
            #expect(gold["shared"] == true && gold["source_url"] == "sf://upload/system/gold", "\(gold.text)")
            let fromGold = try await api.send(.post, "/instances", token: b, body: Self.instance(base: "sf://upload/system/gold"))
            #expect(fromGold.status == .ok, "\(fromGold.text)")
            let unshared = try await api.send(.post, "/artifacts/\(try #require(gold["uuid"]?.stringValue))/unshare", token: admin)
            #expect(unshared["shared"] == false)
            #expect(try await api.send(.post, "/instances", token: b, body: Self.instance(base: "sf://upload/system/gold")).status == .notFound)
        }
    }
}
