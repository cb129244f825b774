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
        ("instances", ["get-instance-namespace", "vdi-console-helper"]),
        ("networks", ["get-network-namespace", "provide-dns", "extra-dns-entries"]),
        ("networkinterfaces", ["interface-metadata"]),
        ("nodes", ["node-get", "node-metadata"]),
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
