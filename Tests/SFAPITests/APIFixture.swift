import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SFAPI
import SFControl
import SFMetrics
import SFStore

/// The API over a fresh temporary store with one hypervisor that has checked in, a `system` key
/// and blob storage in a temporary directory, driven through Hummingbird's router test client (no
/// socket, no root).
struct APIFixture {
    let store: SQLStore
    let control: Control
    let storage: BlobStorage
    let configuration: APIConfiguration
    /// What `/metrics` answers; nil serves none.
    var metrics: MetricsExposition?
    static let adminKey = "admin-secret-for-tests"

    init(tokenLifetime: Duration = .seconds(900), quotas: NamespaceQuotas = NamespaceQuotas(), limits: APILimits = APILimits()) async throws {
        store = try SQLStore.temporary()
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
        // No agent checks in here: a check-in an hour ahead keeps hv1 live however long a test runs
        // on a loaded machine (past SFNODE_NODE_MISSING_SECONDS it would be missing and placed nothing).
        try await store.saveNode(
            Node(name: "hv1", roles: [.hypervisor, .networkNode], lastSeen: Date(timeIntervalSinceNow: 3600),
                 capacity: NodeCapacity(cpus: 4, memoryMiB: 8192, diskGiB: 100)))
        try await store.createNamespace("system")
        try await control.addKey(namespace: "system", name: "test", secret: Self.adminKey, hasher: Authenticator.hash)
    }

    func cleanup() { store.removeFiles() }

    /// Runs `body` with a client of the API.
    func run(_ body: @escaping @Sendable (APIClient) async throws -> Void) async throws {
        var logger = Logger(label: "sfnode.test.api")
        logger.logLevel = .critical
        let router = try await buildRouter(
            configuration: configuration, control: control, auth: store, storage: storage, metrics: metrics, logger: logger)
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

    /// Makes namespace `name` with one key (as the admin, whose token is `admin`) and answers a
    /// token of it.
    func tenant(_ name: String, admin: String) async throws -> String {
        let key = name + "-key-1234"
        let made = try await send(.post, "/auth/namespaces", token: admin, body: ["namespace": .string(name), "key_name": "k", "key": .string(key)])
        guard made.status == .ok else { throw APIFixtureError("creating namespace \(name) gave \(made.status.code): \(made.text)") }
        return try await token(namespace: name, key: key)
    }

    /// Uploads `content` and makes it (a new version of) the artifact `name`: the artifact's view.
    func uploadArtifact(_ name: String, content: String, token: String) async throws -> APIResponse {
        let upload = try await send(.post, "/upload", token: token)
        guard let uuid = upload["uuid"]?.stringValue else { throw APIFixtureError("POST /upload gave \(upload.text)") }
        _ = try await send(.post, "/upload/\(uuid)", token: token, raw: ByteBuffer(string: content))
        return try await send(.post, "/artifacts/upload/\(name)", token: token, body: ["upload_uuid": .string(uuid)])
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
