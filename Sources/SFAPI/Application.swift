import Foundation
import HTTPTypes
import Hummingbird
import Logging
import SFControl
import SFStore

/// Where and how the API listens.
public struct APIConfiguration: Sendable, Equatable {
    /// The listening address (`SFNODE_API_LISTEN`), `127.0.0.1:13000` by default: Shaken Fist's port,
    /// on loopback until an operator opens it.
    public var host: String
    /// The TCP port.
    public var port: Int
    /// How long a token lasts.
    public var tokenLifetime: Duration

    /// The largest request body: above the client's 2 MiB upload chunk, far above any JSON body.
    public static let maxBodyBytes = 4 << 20

    /// A configuration; the defaults are Shaken Fist's port on loopback and 15-minute tokens.
    public init(host: String = "127.0.0.1", port: Int = 13000, tokenLifetime: Duration = .seconds(900)) {
        self.host = host
        self.port = port
        self.tokenLifetime = tokenLifetime
    }

    /// Parses `HOST:PORT` (as `SFNODE_API_LISTEN` gives it), naming what is wrong.
    public init(listen: String) throws {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (1...65535).contains(port),
            !listen[..<colon].isEmpty
        else {
            throw ControlError.invalid("SFNODE_API_LISTEN '\(listen)' is not HOST:PORT, such as 127.0.0.1:13000")
        }
        self.init(host: String(listen[..<colon]), port: port)
    }

    /// The URL a local client uses to reach this server (loopback when it listens on every address).
    public var localURL: String {
        let host = ["0.0.0.0", "::", "[::]"].contains(host) ? "127.0.0.1" : host
        return "http://\(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host):\(port)"
    }
}

/// Builds the Shaken Fist REST API over the use cases: the unauthenticated capability page, `/auth`
/// and `/openapi.json`, and every other route behind bearer-token authentication. It reaches the
/// agents only through the store and its queue.
///
/// - Parameters:
///   - storage: this node's blob storage, where blob data is read and uploads are written.
public func buildApplication(
    configuration: APIConfiguration, control: Control, auth: any AuthRecords, storage: BlobStorage, logger: Logger
) async throws -> some ApplicationProtocol {
    let router = try await buildRouter(configuration: configuration, control: control, auth: auth, storage: storage, logger: logger)
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "sfnode"),
        logger: logger)
}

/// The client's calls sfnode answers with "not supported".
let unsupportedCalls: [(HTTPRequest.Method, String, String)] = [
    (.delete, "/artifacts/:ref/versions/:version", "deleting one artifact version"),
    (.get, "/auth/namespaces/:namespace/metadata", "namespace metadata"),
    (.put, "/auth/namespaces/:namespace/metadata/:key", "namespace metadata"),
    (.delete, "/auth/namespaces/:namespace/metadata/:key", "namespace metadata"),
    (.delete, "/nodes/:name", "deleting a node"), (.post, "/instances/:ref/interfaces", "hot-plugging an interface"),
]

/// The router alone, for tests that drive it without a socket (`app.test(.router)`).
public func buildRouter(
    configuration: APIConfiguration, control: Control, auth: any AuthRecords, storage: BlobStorage, logger: Logger
) async throws -> Router<APIContext> {
    let authenticator = try await Authenticator.make(records: auth, tokenLifetime: configuration.tokenLifetime, logger: logger)
    let api = API(control: control, auth: auth, authenticator: authenticator, storage: storage, logger: logger)
    let router = Router(context: APIContext.self)
    router.add(middleware: RequestIDMiddleware())
    router.add(middleware: ErrorMiddleware())
    RootController(api: api).add(to: router)
    let authenticated = router.group().add(middleware: AuthenticationMiddleware(authenticator: authenticator))
    NamespaceController(api: api).add(to: authenticated)
    InstanceController(api: api).add(to: authenticated)
    NetworkController(api: api).add(to: authenticated)
    InterfaceController(api: api).add(to: authenticated)
    BlobController(api: api).add(to: authenticated)
    ArtifactController(api: api).add(to: authenticated)
    NodeController(api: api).add(to: authenticated)
    // Calls the client can make that sfnode does not implement: a 400 that says so, rather than a
    // 404 the client would report as "not found".
    for (method, path, what) in unsupportedCalls {
        authenticated.on(RouterPath(stringLiteral: path), method: method) { _, _ -> Response in
            throw APIError(.badRequest, "\(what) is not supported by sfnode")
        }
    }
    return router
}
