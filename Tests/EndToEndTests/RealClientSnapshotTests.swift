import Foundation
import SFSystem
import SFTestSupport
import Testing

/// The real sf-client snapshots an instance of `sfnode serve` and lists its snapshots (`instance
/// show --snapshots`, which needs sfnode's `device` and `created`), sfnode's own CLI snapshots it
/// again, and sf-client makes a new instance from `sf://snapshot/<artifact uuid>`. The source guest
/// need not boot: a running domain is enough to snapshot.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct RealClientSnapshotTests {
    @Test func sfClientSnapshotsListsAndBootsFromASnapshot() async throws {
        let flow = try await CommandLineFlow.start(serving: true)
        try await flow.finishing {
            let client = try RealClient(flow: flow)
            let url = flow.server.url("/images/guest.qcow2")
            let created = try #require(try client.sfClient(["instance", "create", "web", "1", "256", "-d", "1@\(url)"]) as? [String: Any])
            let uuid = try #require(created["uuid"] as? String)
            _ = try await client.waitForInstance(uuid) { $0["state"] as? String == "created" }

            // sf-client waits (its default async strategy) until the blob it was answered is created.
            let snapshot = try #require(try client.sfClient(["instance", "snapshot", "web"]) as? [String: [String: String]])
            #expect(Array(snapshot.keys) == ["vda"])
            let vda = try #require(snapshot["vda"])
            #expect(vda["source_url"] == "sf://instance/\(uuid)/vda")
            let artifact = try #require(vda["artifact_uuid"])
            let blobUUID = try #require(vda["blob_uuid"])
            let blob = try #require(try client.python(["show-blob", blobUUID]) as? [String: Any])
            #expect(blob["state"] as? String == "created" && (blob["sha512"] as? String)?.count == 128)

            // sfnode's own CLI, same syntax, waits for the job too: a second version.
            let again = try flow.json(["instance", "snapshot", "web"])
            #expect((again["vda"] as? [String: Any])?["artifact_uuid"] as? String == artifact)
            let shown = try #require(try client.sfClient(["instance", "show", "web", "--snapshots"]) as? [String: Any])
            let snapshots = try #require(shown["snapshots"] as? [[String: Any]])
            #expect(snapshots.count == 2 && snapshots.allSatisfy { $0["uuid"] as? String == artifact && $0["device"] as? String == "vda" && $0["created"] is Double })

            // A new instance from the snapshot's newest version.
            let clone = try #require(
                try client.sfClient(["instance", "create", "clone", "1", "256", "-d", "1@sf://snapshot/\(artifact)"]) as? [String: Any])
            let cloneUUID = try #require(clone["uuid"] as? String)
            let running = try await client.waitForInstance(cloneUUID) { ["created", "error"].contains($0["state"] as? String) }
            #expect(running["state"] as? String == "created", "\(running)")
            _ = try client.sfClient(["instance", "delete", "clone"])
            _ = try await client.waitForInstance(cloneUUID) { $0["state"] as? String == "deleted" }

            // Labelled by the server (label_name in the body): the call waits for the copy, then labels it.
            let served = try Self.postJSON(
                client, "/instances/\(uuid)/snapshot", body: #"{"device": "vda", "label_name": "served", "delete_snapshot_after_label": false}"#)
            let servedLabel = try #require(served["label"] as? [String: Any], "\(served)")
            #expect(servedLabel["artifact_type"] as? String == "label" && servedLabel["source_url"] as? String == "sf://label/system/served")
            #expect(servedLabel["blob_uuid"] as? String == (served["vda"] as? [String: Any])?["blob_uuid"] as? String)

            // Labelled by sf-client (update_label, then delete_artifact): the label keeps the blob.
            let labelled = try #require(
                try client.sfClient(["instance", "snapshot", "web", "-l", "golden", "--delete-snapshot-after-label"]) as? [String: Any])
            let golden = try #require((labelled["label"] as? [String: Any])?["blob_uuid"] as? String, "\(labelled)")
            #expect(golden == (labelled["vda"] as? [String: Any])?["blob_uuid"] as? String)
            let gone = try #require(try client.python(["show-artifact", artifact]) as? [String: Any])
            #expect(gone["state"] as? String == "deleted", "\(gone)")
            #expect((try client.python(["show-blob", golden]) as? [String: Any])?["state"] as? String == "created")
        }
    }

    /// `POST path` with a raw JSON body, as the client's own token, through the client's Python (the
    /// API listens in the test process's namespace); the reply parsed.
    static func postJSON(_ client: RealClient, _ path: String, body: String) throws -> [String: Any] {
        let script = """
            import os, sys, requests
            base = os.environ['SHAKENFIST_API_URL']
            token = requests.post(base + '/auth', json={'namespace': os.environ['SHAKENFIST_NAMESPACE'], 'key': os.environ['SHAKENFIST_KEY']}).json()['access_token']
            r = requests.post(base + sys.argv[1], data=sys.argv[2], headers={'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'})
            print(r.text)
            sys.exit(0 if r.status_code == 200 else 1)
            """
        let output = try ChildProcess.run(client.command([client.venv + "/bin/python", "-c", script, path, body]))
        guard output.status == 0, let reply = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] else {
            throw AgentProcessError("POST \(path) failed: \(output.stdout)\(output.stderr)")
        }
        return reply
    }
}