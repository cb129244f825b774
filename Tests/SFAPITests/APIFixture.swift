import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SFAPI
import SFControl
import SFStore

/// The API over a fresh temporary store with one hypervisor that has checked in, a `system` key
/// and blob storage in a temporary directory, driven through Hummingbird's router test client (no
/// socket, no root).
struct APIFixture {
    let store: SQLiteStore
    let control: Control
    let storage: BlobStorage
    let configuration: APIConfiguration
    static let adminKey = "admin-secret-for-tests"

    init(tokenLifetime: Duration = .seconds(900), quotas: NamespaceQuotas = NamespaceQuotas(), limits: APILimits = APILimits()) async throws {
        store = try SQLiteStore.temporary()
        var logger = Logger(label: "sfnode.test.api")
        logger.logLevel = .critical
        let directory = (store.path as NSString).deletingLastPathComponent
        storage = BlobStorage(path: directory + "/storage", nodeName: "hv1")
        var settings = ControlSettings()
        settings.quotas = quotas
        // No agent runs here: a power operation waits this long for its job, then answers.
        settings.powerWait = .milliseconds(200)
        control = Control(store: store, settings: settings, logger: logger)
        configuration = APIConfiguration(tokenLifetime: tokenLifetime, limits: limits)
        try await store.saveNode(
            Node(name: "hv1", roles: [.hypervisor, .networkNode], lastSeen: Date(), capacity: NodeCapacity(cpus: 4, memoryMiB: 8192, diskGiB: 100)))
        try await store.createNamespace("system")
        try await NamespaceAdministration(records: store).addKey(namespace: "system", name: "test", secret: Self.adminKey)
    }

    func cleanup() { store.removeFiles() }

    /// Runs `body` with a client of the API.
    func run(_ body: @escaping @Sendable (APIClient) async throws -> Void) async throws {
        var logger = Logger(label: "sfnode.test.api")
        logger.logLevel = .critical
        let router = try await buildRouter(configuration: configuration, control: control, auth: store, storage: storage, logger: logger)
        try await Application(router: router, logger: logger).test(.router) { client in
            try await body(APIClient(client: client))
        }
    }
}

/// A response: status, headers, and the body as JSON (nil when it is not JSON).
struct APIResponse {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let bytes: ByteBuffer

    var json: JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: bytes)) }
    var text: String { String(buffer: bytes) }
    /// A member of a JSON object body.
    subscript(_ key: String) -> JSONValue? {
        if case .object(let members)? = json { return members[key] }
        return nil
    }
}

struct APIClient: Sendable {
    let client: any TestClientProtocol

    /// A bearer token for a namespace's key.
    func token(namespace: String = "system", key: String = APIFixture.adminKey) async throws -> String {
        let response = try await send(.post, "/auth", body: ["namespace": .string(namespace), "key": .string(key)])
        guard response.status == .ok, let token = response["access_token"]?.stringValue else {
            throw APIFixtureError("POST /auth gave \(response.status.code): \(response.text)")
        }
        return token
    }

    /// Sends a request with an optional JSON body (or raw bytes) and bearer token.
    func send(
        _ method: HTTPRequest.Method, _ path: String, token: String? = nil, body: JSONValue? = nil, raw: ByteBuffer? = nil,
        headers extra: HTTPFields = [:]
    ) async throws -> APIResponse {
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        var buffer = raw
        if let body {
            headers[.contentType] = "application/json"
            buffer = ByteBuffer(data: try JSONEncoder().encode(body))
        }
        return try await client.execute(uri: path, method: method, headers: headers, body: buffer) { response in
            APIResponse(status: response.status, headers: response.headers, bytes: response.body)
        }
    }
}

struct APIFixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
