import Foundation
import Hummingbird
import NIOCore
import SFStore

/// `/auth/namespaces`: namespaces and their keys.
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
            let authenticator = api.authenticator
            let namespace = try await api.control.createNamespace(
                name, keyName: try body.string("key_name"), secret: try body.string("key"),
                hasher: { try await authenticator.hash($0, namespace: name) })
            return Reply.json(try await view(namespace))
        }
        group.get("/auth/namespaces/:namespace") { request, context in
            Reply.json(try await view(try await visible(request, context)))
        }
        group.delete("/auth/namespaces/:namespace") { request, context in
            try context.authenticated().requireAdmin()
            let namespace = try await visible(request, context)
            try await api.control.deleteNamespace(namespace.name, storage: api.storage)
            api.authenticator.forgetConfirmations(namespace: namespace.name)
            return Reply.null
        }
        // Any caller the namespace trusts (itself, and the admin), as in Shaken Fist.
        MetadataRoutes(resolve: { request, context in .namespace(try await visible(request, context).name) }, control: api.control)
            .add(to: group, path: "/auth/namespaces/:namespace")
        // Trust lets another namespace see and boot this one's images; as with its keys, the
        // namespace itself and the admin may change it.
        group.post("/auth/namespaces/:namespace/trust") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["external_namespace"])
            let namespace = try await visible(request, context)
            guard let other = try body.string("external_namespace"), !other.isEmpty else {
                throw APIError(.badRequest, "no external namespace specified")
            }
            try await api.control.setTrust(of: namespace.name, in: other, true)
            return Reply.json(try await view(namespace))
        }
        group.delete("/auth/namespaces/:namespace/trust/:external") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            let namespace = try await visible(request, context)
            try await api.control.setTrust(of: namespace.name, in: try request.parameter("external", context), false)
            return Reply.json(try await view(namespace))
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
            try await api.control.addKey(
                namespace: name, name: keyName, secret: secret, limit: context.limits.keysPerNamespace,
                hasher: { try await authenticator.hash($0, namespace: name) })
            // Replacing a key revokes its tokens; a new key revokes nothing.
            api.authenticator.forgetConfirmations(namespace: name, key: keyName)
            return Reply.json(keyName)
        }
        group.delete("/auth/namespaces/:namespace/keys/:key") { request, context in
            let namespace = try await visible(request, context)
            let key = try request.parameter("key", context)
            try await api.control.deleteKey(namespace: namespace.name, name: key)
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
        NamespaceView(
            namespace: namespace, keys: try await api.auth.keys(namespace: namespace.name).map(\.name),
            metadata: try await api.control.metadata(.namespace(namespace.name)), trust: try await api.control.trusts(of: namespace.name))
    }
}
