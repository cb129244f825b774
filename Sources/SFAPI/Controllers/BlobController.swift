import Foundation
import Hummingbird
import NIOCore
import SFControl
import SFStore

/// `/blobs` and `/blob_checksums`: blobs by UUID, their data by offset and limit, and lookup by
/// sha512. No namespace owns a blob, but a namespace sees one only through an
/// artifact, instance or blob of its own or shared holding it (``Control/canSee(blob:namespace:)``):
/// any other is not found, exactly as a missing one, and a lookup by sha512 answers null.
struct BlobController {
    let api: API

    /// The client's loop asks for 512 MiB at a time; data is streamed in chunks of this size.
    static let chunkBytes = 1 << 20

    func add(to group: RouterGroup<APIContext>) {
        group.get("/blobs") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: ["node"])
            try context.authenticated().requireAdmin()
            var views: [BlobWireView] = []
            for blob in try await api.control.blobs() {
                views.append(try await view(blob.uuid, try context.authenticated()))
            }
            return Reply.json(views)
        }
        group.get("/blobs/:uuid") { request, context in
            let uuid = try await resolve(request, context)
            return Reply.json(try await view(uuid, try context.authenticated()))
        }
        group.get("/blobs/:uuid/data") { request, context in
            let uuid = try await existing(request, context)
            let offset = try request.integerQuery("offset") ?? 0
            // Shaken Fist's limit=0 means "to the end".
            let limit = try request.integerQuery("limit").flatMap { $0 == 0 ? nil : $0 }
            let chunks = try await api.control.readBlob(uuid: uuid, offset: offset, limit: limit, storage: api.storage, chunkSize: Self.chunkBytes)
            // 200 and streamed, never 206: the client accepts only 200 and 202, and ends its loop on
            // a short (or empty) reply.
            return Response(
                status: .ok, headers: [.contentType: "application/octet-stream"],
                body: ResponseBody { writer in
                    for try await chunk in chunks { try await writer.write(ByteBuffer(bytes: chunk)) }
                    try await writer.finish(nil)
                })
        }
        group.get("/blob_checksums/:algorithm/:hash") { request, context in
            let caller = try context.authenticated()
            let algorithm = try request.parameter("algorithm", context)
            guard algorithm == "sha512" else {
                throw APIError(.badRequest, ["sha1", "sha256", "xxh128"].contains(algorithm)
                    ? "this cluster records sha512 only; search by sha512" : "unknown hash algorithm")
            }
            guard let blob = try await api.control.blob(sha512: try request.parameter("hash", context), namespace: caller.scope) else {
                return Reply.null
            }
            return Reply.json(try await view(blob.uuid, caller))
        }
        // A blob's metadata is read and changed by whoever sees the blob, as in Shaken Fist (where
        // any caller may): no namespace owns a blob, and one a caller cannot see stays 404.
        MetadataRoutes(
            type: .blob, resolve: { request, context in try await existing(request, context) }, control: api.control
        ).add(to: group, path: "/blobs/:uuid")
    }

    func resolve(_ request: Request, _ context: APIContext) async throws -> UUID {
        _ = try context.authenticated()
        return try request.uuidParameter("uuid", context, what: "blob")
    }

    /// A blob that exists and the caller sees (404 `blob not found` otherwise).
    func existing(_ request: Request, _ context: APIContext) async throws -> UUID {
        let uuid = try await resolve(request, context)
        _ = try await api.control.blob(uuid: uuid, namespace: try context.authenticated().scope)
        return uuid
    }

    /// The blob as `caller` sees it: 404 when it may not, and only the holders it sees.
    func view(_ uuid: UUID, _ caller: Caller) async throws -> BlobWireView {
        BlobWireView(
            view: try await api.control.blob(uuid: uuid, namespace: caller.scope), metadata: try await api.control.metadata(.blob, uuid),
            admin: caller.isAdmin)
    }
}
