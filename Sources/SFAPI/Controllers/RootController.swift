import Foundation
import Hummingbird
import NIOCore
import SFStore

/// The unauthenticated routes: the capability page, `POST /auth` and the OpenAPI document.
struct RootController {
    let api: API

    /// Exactly the capabilities implemented. The client tests each with a substring match on the
    /// whole page, so no other text on it may contain one it does not support.
    static let capabilities: [(group: String, names: [String])] = [
        ("artifacts", ["artifact-metadata"]),
        ("blobs", ["blob-metadata", "blob-search-by-hash", "blob-data-limit"]),
        ("events", ["events-by-type"]),
        ("instances", ["get-instance-namespace"]),
        ("networks", ["get-network-namespace", "provide-dns", "extra-dns-entries"]),
        ("networkinterfaces", ["interface-metadata"]),
        ("nodes", ["node-get"]),
    ]

    static let page: String = {
        let items = capabilities.map { "<li>\($0.group): \($0.names.joined(separator: ", "))</li>" }.joined()
        return "<html><head><title>Shaken Fist REST API service</title></head><body><h1>Shaken Fist REST API service</h1>"
            + "<p>sfnode. The OpenAPI document is at <a href=\"/openapi.json\">/openapi.json</a>.</p>"
            + "<p>Machine searchable API capabilities:</p><ul>\(items)</ul></body></html>\n"
    }()

    func add(to router: Router<APIContext>) {
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: Self.page)))
        }
        router.post("/auth") { request, context in
            // Unauthenticated: only a few KiB, however large other routes' bodies may be.
            let body = try await RequestBody.read(request, context: context, allowed: ["namespace", "key"], limit: context.limits.authBodyBytes)
            guard let namespace = try body.string("namespace") else { throw APIError(.badRequest, "missing namespace in request") }
            guard let key = body.value("key") else { throw APIError(.badRequest, "missing key in request") }
            guard let secret = key.stringValue else { throw APIError(.badRequest, "key is not a string") }
            return Reply.json(try await api.authenticator.issueToken(namespace: namespace, secret: secret, clientAddress: context.clientAddress))
        }
        router.get("/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
    }
}

/// `/auth/namespaces`: namespaces and their keys (the reference's §3.2).
struct NamespaceController {
    let api: API

    func add(to group: RouterGroup<APIContext>) {
        group.get("/auth/namespaces") { request, context in
            let caller = try context.authenticated()
            var views: [NamespaceView] = []
            for namespace in try await api.auth.namespaces() where caller.isAdmin || namespace.name == caller.namespace {
                views.append(try await view(namespace))
            }
            return Reply.json(views)
        }
        group.post("/auth/namespaces") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["namespace", "key_name", "key"])
            try context.authenticated().requireAdmin()
            guard let name = try body.string("namespace"), !name.isEmpty else { throw APIError(.badRequest, "no namespace specified") }
            let namespace = try await NamespaceAdministration(records: api.auth).create(
                name, keyName: try body.string("key_name"), secret: try body.string("key"))
            return Reply.json(try await view(namespace))
        }
        group.get("/auth/namespaces/:namespace") { request, context in
            Reply.json(try await view(try await visible(request, context)))
        }
        group.delete("/auth/namespaces/:namespace") { request, context in
            try context.authenticated().requireAdmin()
            let namespace = try await visible(request, context)
            try await NamespaceAdministration(records: api.auth).delete(namespace.name, control: api.control)
            api.authenticator.forgetConfirmations(namespace: namespace.name)
            return Reply.null
        }
        group.get("/auth/namespaces/:namespace/keys") { request, context in
            let namespace = try await visible(request, context)
            return Reply.json(try await api.auth.keys(namespace: namespace.name).map(\.name))
        }
        group.post("/auth/namespaces/:namespace/keys") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["key_name", "key"])
            let namespace = try await visible(request, context)
            guard let keyName = try body.string("key_name"), !keyName.isEmpty else { throw APIError(.badRequest, "no key name specified") }
            guard let secret = try body.string("key"), !secret.isEmpty else { throw APIError(.badRequest, "no key specified") }
            let authenticator = api.authenticator
            let name = namespace.name
            try await NamespaceAdministration(records: api.auth).addKey(
                namespace: name, name: keyName, secret: secret, limit: context.limits.keysPerNamespace,
                hasher: { try await authenticator.hash($0, namespace: name) })
            // Replacing a key revokes its tokens; a new key revokes nothing.
            api.authenticator.forgetConfirmations(namespace: name, key: keyName)
            return Reply.json(keyName)
        }
        group.delete("/auth/namespaces/:namespace/keys/:key") { request, context in
            let namespace = try await visible(request, context)
            let key = try request.parameter("key", context)
            do {
                try await api.auth.deleteKey(namespace: namespace.name, name: key)
            } catch StoreError.notFound {
                throw APIError(.notFound, "key name not found in namespace")
            }
            api.authenticator.forgetConfirmations(namespace: namespace.name, key: key)
            return Reply.null
        }
    }

    /// The namespace of the path, if the caller may see it (its own, or any for the admin).
    func visible(_ request: Request, _ context: APIContext) async throws -> Namespace {
        let caller = try context.authenticated()
        let name = try request.parameter("namespace", context)
        // Byte for byte: Swift's == would take "cafe\u{301}" for "caf\u{e9}", which the store does not.
        guard caller.isAdmin || caller.namespace.utf8.elementsEqual(name.utf8), let namespace = try await api.auth.liveNamespace(name),
            caller.isAdmin || namespace.name.utf8.elementsEqual(caller.namespace.utf8)
        else {
            throw APIError(.notFound, "namespace not found")
        }
        return namespace
    }

    func view(_ namespace: Namespace) async throws -> NamespaceView {
        NamespaceView(namespace: namespace, keys: try await api.auth.keys(namespace: namespace.name).map(\.name), metadata: [:])
    }
}
