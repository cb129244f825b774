import Foundation
import HTTPTypes
import SFAPI
import SFStore
import Testing

@Suite("API instance snapshots")
struct SnapshotAPITests {
    @Test("snapshot answers Shaken Fist's dict at once; 404 across namespaces, 406 while being made, {} for an unknown device; GET adds device and created")
    func snapshots() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "ci", "key_name": "deploy", "key": "deploy-key-ci"])
            _ = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "other", "key_name": "deploy", "key": "deploy-key-other"])
            let ci = try await api.token(namespace: "ci", key: "deploy-key-ci")
            let other = try await api.token(namespace: "other", key: "deploy-key-other")
            let body: JSONValue = [
                "name": "web", "cpus": 1, "memory": 512, "network": [],
                "disk": [["size": 8, "base": "http://127.0.0.1/guest.qcow2", "bus": nil, "type": "disk"]],
            ]
            let created = try await api.send(.post, "/instances", token: ci, body: body)
            let uuid = try #require(created["uuid"]?.stringValue, "\(created.text)")
            // What sf-client sends.
            let ask: JSONValue = ["all": false, "device": nil, "thin": false]
            let early = try await api.send(.post, "/instances/\(uuid)/snapshot", token: ci, body: ask)
            #expect(early.status == .notAcceptable && early.text.contains("is not ready (initial)"), "\(early.text)")
            for next in [InstanceState.preflight, .creating, .created] {
                try await fixture.store.setInstanceState(uuid: try #require(UUID(uuidString: uuid)), to: next)
            }
            #expect(try await api.send(.post, "/instances/\(uuid)/snapshot", token: other, body: ask).status == .notFound)
            let unknown = try await api.send(.post, "/instances/\(uuid)/snapshot", token: ci, body: ["all": false, "device": "vdz", "thin": false])
            #expect(unknown.status == .ok && unknown.json == .object([:]), "\(unknown.text)")
            #expect(try await api.send(.post, "/instances/\(uuid)/snapshot", token: ci, body: ["colour": "red"]).status == .badRequest)

            let snapshot = try await api.send(.post, "/instances/web/snapshot", token: ci, body: ask)
            guard case .object(let vda)? = snapshot["vda"] else { Issue.record("no vda in \(snapshot.text)"); return }
            #expect(snapshot.json?.objectValue?.keys.sorted() == ["vda"])
            #expect(vda["source_url"] == .string("sf://instance/\(uuid)/vda"))
            let artifact = try #require(vda["artifact_uuid"]?.stringValue.flatMap(UUID.init(uuidString:)))
            let blobUUID = try #require(vda["blob_uuid"]?.stringValue.flatMap(UUID.init(uuidString:)))
            // No version until the agent has copied the disk.
            #expect(try await api.send(.get, "/instances/\(uuid)/snapshot", token: ci).json == .array([]))

            // The agent's part, done by hand: the blob under the UUID answered, as the artifact's version.
            try await fixture.store.createBlob(Blob(uuid: blobUUID, size: 4096))
            try await fixture.store.completeBlob(uuid: blobUUID, size: 4096, sha512: String(repeating: "b", count: 128), info: [:], node: "hv1")
            try await fixture.store.addArtifactVersion(artifactUUID: artifact, blobUUID: blobUUID, lastModified: nil, contentLength: nil)
            let listed = try await api.send(.get, "/instances/\(uuid)/snapshot", token: ci)
            guard case .array(let elements)? = listed.json, case .object(let element)? = elements.first, elements.count == 1 else {
                Issue.record("GET snapshot: \(listed.text)")
                return
            }
            #expect(element["uuid"] == .string(artifact.uuidString.lowercased()) && element["blob_uuid"] == .string(blobUUID.uuidString.lowercased()))
            #expect(element["state"] == "created" && element["artifact_type"] == "snapshot" && element["device"] == "vda")
            #expect(element["namespace"] == "ci" && element["size"] == 4096)
            if case .number(let created)? = element["created"] { #expect(abs(created - Date().timeIntervalSince1970) < 600) } else {
                Issue.record("created is not a number: \(listed.text)")
            }
            #expect(try await api.send(.get, "/instances/\(uuid)/snapshot", token: other).status == .notFound)
            // The new base names it.
            let clone = try await api.send(
                .post, "/instances", token: ci,
                body: ["name": "clone", "cpus": 1, "memory": 512, "disk": [["base": .string("sf://snapshot/\(artifact.uuidString)"), "type": "disk"]]])
            #expect(clone.status == .ok, "\(clone.text)")
            let foreign = try await api.send(
                .post, "/instances", token: other,
                body: ["name": "thief", "cpus": 1, "memory": 512, "disk": [["base": .string("sf://snapshot/\(artifact.uuidString)"), "type": "disk"]]])
            #expect(foreign.status == .notFound && foreign.text.contains("artifact not found"), "\(foreign.text)")
        }
    }
}
