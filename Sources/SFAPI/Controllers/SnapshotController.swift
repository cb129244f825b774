import Foundation
import Hummingbird
import SFControl
import SFStore

/// `/instances/<ref>/snapshot`: snapshots of an instance's disks.
struct SnapshotController {
    let api: API

    /// How long a snapshot asked to be labelled may take: the label needs the copy, so the call waits
    /// for it (sf-client's `--async block` waits an hour for the same).
    static let labelWait: Duration = .seconds(3600)

    func add(to group: RouterGroup<APIContext>) {
        group.post("/instances/:ref/snapshot") { request, context in
            let body = try await RequestBody.read(
                request, context: context, allowed: ["all", "device", "thin", "max_versions", "label_name", "delete_snapshot_after_label"])
            let caller = try context.authenticated()
            let reference = try request.parameter("ref", context)
            let asked = SnapshotRequest(
                all: try body.bool("all") ?? false, device: try body.string("device"), thin: try body.bool("thin") ?? false,
                maxVersions: try body.int("max_versions"), labelName: try body.string("label_name"),
                deleteSnapshotAfterLabel: try body.bool("delete_snapshot_after_label") ?? false)
            // Only a snapshot asked with a label waits for its job; it waits in its namespace's places.
            let snapshot = try await api.control.waitingForJobs(namespace: asked.labelName == nil ? Namespace.system : caller.namespace) {
                let snapshot = try await api.control.snapshotInstance(reference, namespace: caller.scope, request: asked, requestID: context.requestID)
                if asked.labelName != nil, !snapshot.plan.targets.isEmpty { try await api.control.waitForSnapshot(snapshot, timeout: Self.labelWait) }
                return snapshot
            }
            var label: ArtifactWireView?
            if let name = asked.labelName, !snapshot.plan.targets.isEmpty {
                let made = try await api.control.labelSnapshot(
                    snapshot, name: name, device: asked.device, deleteSnapshot: asked.deleteSnapshotAfterLabel, storage: api.storage)
                let artifacts = ArtifactController(api: api)
                label = try await artifacts.view(
                    try await api.control.artifactView(made.uuid.lowercasedString, namespace: caller.scope), caller, instances: false)
            }
            return Reply.json(SnapshotReplyView(plan: snapshot.plan, label: label))
        }
        group.get("/instances/:ref/snapshot") { request, context in
            let caller = try context.authenticated()
            let versions = try await api.control.instanceSnapshots(try request.parameter("ref", context), namespace: caller.scope)
            var views: [SnapshotVersionView] = []
            for version in versions {
                views.append(SnapshotVersionView(version: version, metadata: try await api.control.metadata(.blob, version.blob.blob.uuid)))
            }
            return Reply.json(views)
        }
    }
}

/// Shaken Fist's snapshot reply: `{"<device>": {"source_url", "artifact_uuid", "blob_uuid"}}`, in disk
/// order, plus `label` (the label artifact) when one was asked for, as sf-client adds it.
struct SnapshotReplyView: WireValue {
    let plan: SnapshotPlan
    let label: ArtifactWireView?

    func write(to json: inout JSONWriter) {
        json.object { c in
            for target in plan.targets {
                c.put(
                    target.device,
                    [
                        "source_url": target.sourceURL, "artifact_uuid": target.artifactUUID.lowercasedString,
                        "blob_uuid": target.blobUUID.lowercasedString,
                    ])
            }
            if let label { c.put("label", label) }
        }
    }
}

/// One element of `GET /instances/<ref>/snapshot`: the snapshot artifact's fields (its `uuid`) with
/// its version's blob laid over them (`state`, `metadata`, `version`, `size` … are the blob's, its
/// UUID is `blob_uuid`), plus what sf-client's `instance show --snapshots` reads and Shaken Fist
/// does not send: `device` and `created` (when the copy was complete, as epoch seconds).
struct SnapshotVersionView: WireValue {
    let version: SnapshotVersion
    let metadata: [String: JSONValue]

    func write(to json: inout JSONWriter) {
        json.object { c in
            let artifact = version.artifact
            let blob = version.blob.blob
            c.putHeader(uuid: artifact.uuid.lowercasedString, state: blob.state.rawValue, metadata: metadata, version: 6)
            c.put("artifact_type", artifact.type.rawValue)
            c.put("source_url", artifact.sourceURL)
            c.put("max_versions", artifact.maxVersions)
            c.put("namespace", artifact.namespace)
            c.put("shared", artifact.shared)
            c.put("index", version.version.index)
            c.put("blob_uuid", blob.uuid.lowercasedString)
            c.put("size", blob.size)
            c.put("modified", blob.modified.timeIntervalSince1970)
            c.put("fetched_at", blob.fetchedAt?.timeIntervalSince1970)
            c.put("last_used", blob.lastUsed?.timeIntervalSince1970)
            c.put("depends_on", version.blob.referencesFrom.first { $0.relationship == .dependsOn }?.blobUUID.lowercasedString)
            c.put("locations", blob.locations)
            c.put("reference_count", version.blob.referenceCount)
            c.put("sha512", blob.sha512)
            c.put("instances", version.blob.instances)
            c.put("device", version.device)
            c.put("created", (blob.fetchedAt ?? version.version.created).timeIntervalSince1970)
        }
    }
}
