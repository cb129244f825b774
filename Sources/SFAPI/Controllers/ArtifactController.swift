import Foundation
import Hummingbird
import NIOCore
import SFControl
import SFStore

/// `/artifacts`, `/label` and `/upload`: images by URL or upload, their versions, labels, and
/// chunked uploads.
struct ArtifactController {
    let api: API

    func add(to group: RouterGroup<APIContext>) {
        group.get("/artifacts") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: ["node"])
            let caller = try context.authenticated()
            var views: [ArtifactWireView] = []
            for artifact in try await api.control.artifacts(namespace: caller.scope) {
                views.append(
                    try await view(try await api.control.artifactView(artifact.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
            }
            return Reply.json(views)
        }
        group.post("/artifacts") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["url", "shared", "namespace"])
            let caller = try context.authenticated()
            let namespace = try await api.targetNamespace(try body.string("namespace"), caller: caller)
            let shared = try Self.checkShared(body, caller: caller, namespace: namespace)
            guard let url = try body.string("url") else { throw APIError(.badRequest, "url is required") }
            // The caller's namespace owns the cache: a tenant's URL is never another tenant's image.
            let artifact = try await api.control.cacheArtifact(url: url, namespace: namespace, shared: shared, requestID: context.requestID)
            return Reply.json(try await view(try await api.control.artifactView(artifact.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
        }
        group.delete("/artifacts") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["confirm", "namespace"])
            let caller = try context.authenticated()
            let namespace = try await api.deleteAllNamespace(body, caller: caller)
            let owned = try await api.control.artifacts(namespace: namespace).filter { $0.namespace == namespace }
            return try await api.deleteEach(owned.map(\.uuid.lowercasedString), context) { uuid in
                _ = try await api.control.deleteArtifact(uuid, namespace: namespace, storage: api.storage)
            }
        }
        group.post("/artifacts/upload/:name") { request, context in
            let body = try await RequestBody.read(
                request, context: context, allowed: ["namespace", "shared", "source_url", "upload_uuid", "blob_uuid", "artifact_type"])
            let caller = try context.authenticated()
            let namespace = try await api.targetNamespace(try body.string("namespace"), caller: caller)
            let name = try request.parameter("name", context)
            let shared = try Self.checkShared(body, caller: caller, namespace: namespace)
            let sourceURL = try body.string("source_url")
            if let type = try body.string("artifact_type"), !["image", "other"].contains(type) {
                throw APIError(.forbidden, "invalid artifact type specified")
            }
            let uploaded: UploadedArtifact
            switch (try body.string("upload_uuid"), try body.string("blob_uuid")) {
            case (let upload?, nil):
                let uuid = try await ownedUpload(upload, caller: caller)
                uploaded = try await api.control.uploadArtifact(
                    name: name, uploadUUID: uuid, namespace: namespace, shared: shared, sourceURL: sourceURL, storage: api.storage)
            case (nil, let blob?):
                let uuid = try await visibleBlob(blob, caller: caller)
                uploaded = try await api.control.blobArtifact(
                    name: name, blobUUID: uuid, namespace: namespace, shared: shared, sourceURL: sourceURL, storage: api.storage)
            case (nil, nil): throw APIError(.badRequest, "specify one of upload_uuid and blob_uuid")
            default: throw APIError(.badRequest, "only specify one of upload_uuid and blob_uuid")
            }
            return Reply.json(
                try await view(try await api.control.artifactView(uploaded.artifact.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
        }
        group.get("/artifacts/:ref") { request, context in
            Reply.json(try await view(try await resolve(request, context), try context.authenticated(), instances: true))
        }
        group.delete("/artifacts/:ref") { request, context in
            let caller = try context.authenticated()
            let reference = try request.parameter("ref", context)
            let before = try await api.control.artifact(reference, namespace: caller.scope)
            if before.state == .deleted { return Reply.null }
            let deleted = try await api.control.deleteArtifact(reference, namespace: caller.scope, storage: api.storage)
            return Reply.json(
                try await view(try await api.control.artifactView(deleted.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
        }
        group.get("/artifacts/:ref/versions") { request, context in
            let caller = try context.authenticated()
            let versions = try await api.control.artifactVersions(try request.parameter("ref", context), namespace: caller.scope)
            return Reply.json(versions.map { ArtifactVersionWireView(version: $0, admin: caller.isAdmin) })
        }
        group.post("/artifacts/:ref/versions") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["max_versions"])
            let caller = try context.authenticated()
            guard let value = body.value("max_versions"), let count = RequestBody.integer(value) else {
                throw APIError(.badRequest, "max version is not an integer")
            }
            _ = try await api.control.setMaxVersions(try request.parameter("ref", context), count, namespace: caller.scope, storage: api.storage)
            return Reply.null
        }
        group.delete("/artifacts/:ref/versions/:version") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            let owned = try await resolveOwned(request, context).artifact
            let caller = try context.authenticated()
            let artifact = try await api.control.deleteArtifactVersion(
                owned.uuid.lowercasedString, index: try request.parameter("version", context), namespace: caller.scope, storage: api.storage)
            return Reply.json(try await view(try await api.control.artifactView(artifact.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
        }
        group.post("/artifacts/:ref/share") { request, context in
            let owned = try await resolveOwned(request, context).artifact
            guard owned.namespace == Namespace.system else { throw APIError(.forbidden, "only artifacts in the system namespace can be shared") }
            let caller = try context.authenticated()
            let artifact = try await api.control.setShared(owned.uuid.lowercasedString, true, namespace: caller.scope)
            return Reply.json(try await view(try await api.control.artifactView(artifact.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
        }
        group.post("/artifacts/:ref/unshare") { request, context in
            let owned = try await resolveOwned(request, context).artifact
            guard owned.shared else { throw APIError(.forbidden, "artifact not shared") }
            let caller = try context.authenticated()
            let artifact = try await api.control.setShared(owned.uuid.lowercasedString, false, namespace: caller.scope)
            return Reply.json(try await view(try await api.control.artifactView(artifact.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
        }
        group.get("/artifacts/:ref/events") { request, context in
            try await eventsResponse(api, .artifact, try await resolve(request, context).artifact.uuid, request, context)
        }
        MetadataRoutes(
            type: .artifact, resolve: { request, context in try await resolve(request, context).artifact.uuid },
            resolveForChange: { request, context in try await resolveOwned(request, context).artifact.uuid }, control: api.control
        ).add(to: group, path: "/artifacts/:ref")

        group.post("/label/**") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["blob_uuid"])
            let caller = try context.authenticated()
            let segments = context.parameters.getCatchAll().map(String.init)
            let namespace: String
            let name: String
            switch segments.count {
            case 1: (namespace, name) = (caller.namespace, segments[0])
            case 2: (namespace, name) = (try await api.targetNamespace(segments[0], caller: caller), segments[1])
            default: throw APIError(.badRequest, "a label is NAME or NAMESPACE/NAME")
            }
            guard let blob = try body.string("blob_uuid") else { throw APIError(.badRequest, "blob_uuid is required") }
            let uuid = try await visibleBlob(blob, caller: caller)
            let label = try await api.control.setLabel(name: name, blobUUID: uuid, namespace: namespace, storage: api.storage)
            return Reply.json(try await view(try await api.control.artifactView(label.uuid.lowercasedString, namespace: caller.scope), caller, instances: false))
        }

        group.post("/upload") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            let caller = try context.authenticated()
            return Reply.json(UploadView(upload: try await api.control.createUpload(namespace: caller.namespace, storage: api.storage)))
        }
        group.post("/upload/:uuid") { request, context in
            let uuid = try await ownedUpload(try request.parameter("uuid", context), caller: try context.authenticated())
            // Chunks are opaque bytes, never parsed as JSON (upstream's hazard).
            let chunk = try await request.body.collect(upTo: context.maxUploadSize)
            let upload = try await api.control.appendUpload(uuid: uuid, bytes: chunk.readableBytesView, storage: api.storage)
            return Reply.json(upload.received)
        }
        group.post("/upload/:uuid/truncate/:offset") { request, context in
            let uuid = try await ownedUpload(try request.parameter("uuid", context), caller: try context.authenticated())
            let offset = try request.integerParameter("offset", context)
            _ = try await api.control.truncateUpload(uuid: uuid, to: offset, storage: api.storage)
            return Reply.null
        }
    }

    /// Whether the body asks to share what it makes. Only the admin makes shared artifacts, and
    /// only in the system namespace (Shaken Fist's 403s).
    static func checkShared(_ body: RequestBody, caller: Caller, namespace: String) throws -> Bool {
        guard try body.bool("shared") == true else { return false }
        guard caller.isAdmin else { throw APIError(.forbidden, "only the system namespace can create shared artifacts") }
        guard namespace == Namespace.system else { throw APIError(.forbidden, "only artifacts in the system namespace can be shared") }
        return true
    }

    /// The blob `text` names, if the caller may see it (the admin sees all): otherwise 404
    /// `blob not found`, so no namespace makes another's blob its artifact or label by the UUID.
    func visibleBlob(_ text: String, caller: Caller) async throws -> UUID {
        guard let uuid = UUID(uuidString: text) else { throw APIError(.notFound, "blob not found") }
        guard try await api.control.canSee(blob: uuid, namespace: caller.namespace) else { throw APIError(.notFound, "blob not found") }
        return uuid
    }

    /// The upload `text` names, if it is the caller's (any for the admin); another namespace's is 404.
    func ownedUpload(_ text: String, caller: Caller) async throws -> UUID {
        guard let uuid = UUID(uuidString: text), let upload = try? await api.control.upload(uuid: uuid),
            caller.isAdmin || upload.namespace == caller.namespace
        else { throw APIError(.notFound, "upload not found") }
        return uuid
    }

    /// The artifact of the path, for a change: the caller must own it (the admin owns all).
    func resolveOwned(_ request: Request, _ context: APIContext) async throws -> ArtifactView {
        let view = try await resolve(request, context)
        let caller = try context.authenticated()
        guard caller.isAdmin || view.artifact.namespace == caller.namespace else { throw APIError(.notFound, "artifact not found") }
        return view
    }

    func resolve(_ request: Request, _ context: APIContext) async throws -> ArtifactView {
        let caller = try context.authenticated()
        return try await api.control.artifactView(try request.parameter("ref", context), namespace: caller.scope)
    }

    /// The wire view of an artifact read for `caller` (its blobs already show only the instances
    /// the caller sees).
    func view(_ view: ArtifactView, _ caller: Caller, instances: Bool) async throws -> ArtifactWireView {
        ArtifactWireView(
            view: view, metadata: try await api.control.metadata(.artifact, view.artifact.uuid),
            instances: instances ? Array(Set(view.versions.flatMap(\.blob.instances))).sorted() : nil, viewer: caller.namespace)
    }
}
