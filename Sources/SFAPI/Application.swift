import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import SFControl
import SFMetrics
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
    /// What one request or client may cost.
    public var limits: APILimits

    /// The largest upload chunk (`POST /upload/<uuid>`): above the client's 2 MiB chunks. JSON
    /// bodies have much smaller limits (``APILimits``).
    public static let maxBodyBytes = 4 << 20

    /// A configuration; the defaults are Shaken Fist's port on loopback and 15-minute tokens.
    public init(host: String = "127.0.0.1", port: Int = 13000, tokenLifetime: Duration = .seconds(900), limits: APILimits = APILimits()) {
        self.host = host
        self.port = port
        self.tokenLifetime = tokenLifetime
        self.limits = limits
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
///   - metrics: what `GET /metrics` answers (to the system namespace only); nil for no metrics,
///     and then requests are not counted either.
public func buildApplication(
    configuration: APIConfiguration, control: Control, auth: any AuthRecords, storage: BlobStorage,
    metrics: MetricsExposition? = nil, logger: Logger
) async throws -> some ApplicationProtocol {
    let router = try await buildRouter(
        configuration: configuration, control: control, auth: auth, storage: storage, metrics: metrics, logger: logger)
    let limits = configuration.limits
    // An idle connection is closed, one that does not finish its request head in time too
    // (slowloris), and past the connection cap the server stops accepting until one closes: held
    // connections cannot use up the descriptors the agent shares in `serve`.
    let http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [RequestHeadTimeoutHandler(timeout: timeAmount(limits.headerTimeout))],
        idleTimeout: timeAmount(limits.idleTimeout),
        httpDecoderConfiguration: .init(maxHeaderFieldSize: 16 << 10, maxHeaderListSize: 64 << 10, maxHeaderFieldCount: 100))
    return Application(
        router: router, server: .http1(configuration: http1),
        configuration: .init(
            address: .hostname(configuration.host, port: configuration.port), serverName: "sfnode",
            availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections, logger: logger)),
        logger: logger)
}

/// What one request or client may cost the API: body sizes, connection timeouts and caps, and
/// the login throttle. Each is a setting (`SFNODE_API_…`, `SFNODE_LOGIN_…`, `SFNODE_KEYS_…`).
public struct APILimits: Sendable, Equatable {
    /// The largest `POST /auth` body: a namespace and a key fit in far less, and it needs no token.
    public var authBodyBytes = 4 << 10
    /// The largest JSON body of any other route (uploads take ``APIConfiguration/maxBodyBytes``).
    public var jsonBodyBytes = 1 << 20
    /// How deeply a JSON body may nest.
    public var jsonDepth = 32
    /// A connection with nothing to read or write for this long is closed.
    public var idleTimeout: Duration = .seconds(60)
    /// A connection must send a whole request head within this long of opening (or of its last
    /// response).
    public var headerTimeout: Duration = .seconds(30)
    /// Open connections at most; past it, new ones wait in the kernel's backlog.
    public var maxConnections = 1024
    /// Failed logins per namespace within ``loginWindow`` before `POST /auth` answers 429.
    public var loginFailuresPerNamespace = 10
    /// Failed logins per client address within ``loginWindow`` before `POST /auth` answers 429.
    public var loginFailuresPerAddress = 30
    /// The window failed logins are counted in.
    public var loginWindow: Duration = .seconds(60)
    /// bcrypt checks one namespace may have waiting for the shared gate; past it, 429.
    public var loginQueuePerNamespace = 8
    /// Keys one namespace may have.
    public var keysPerNamespace = 32
    /// Objects one namespace may follow the events of at once (`…/events?follow=true`).
    public var followsPerNamespace = 8
    /// Follows the server holds at once, every namespace together.
    public var followsTotal = 128
    /// How long one follow lasts before the server ends it (the client reconnects).
    public var followDuration: Duration = .seconds(3600)
    /// A follow writes a blank line this often (a heartbeat).
    public var followHeartbeat: Duration = .seconds(15)

    public init() {}
}

/// The client's calls sfnode answers with "not supported".
let unsupportedCalls: [(HTTPRequest.Method, String, String)] = [
    (.post, "/instances/:ref/interfaces", "hot-plugging an interface"),
]

/// The router alone, for tests that drive it without a socket (`app.test(.router)`).
public func buildRouter(
    configuration: APIConfiguration, control: Control, auth: any AuthRecords, storage: BlobStorage,
    metrics: MetricsExposition? = nil, logger: Logger
) async throws -> Router<APIContext> {
    let authenticator = try await Authenticator.make(
        records: auth, tokenLifetime: configuration.tokenLifetime, limits: configuration.limits, logger: logger)
    let api = API(control: control, auth: auth, authenticator: authenticator, storage: storage, logger: logger)
    let router = Router(context: APIContext.self, options: .autoGenerateHeadEndpoints)
    router.add(middleware: RequestIDMiddleware(limits: configuration.limits))
    // Requests by route template, method and status: bounded labels, whatever the paths asked.
    if let metrics { router.add(middleware: RequestMetricsMiddleware(histograms: RequestHistograms(registry: metrics.registry))) }
    router.add(middleware: ErrorMiddleware())
    RootController(api: api).add(to: router)
    let authenticated = router.group().add(middleware: AuthenticationMiddleware(authenticator: authenticator))
    if let metrics {
        // Every domain and the queue of every namespace: the operator's, not a tenant's.
        authenticated.get("/metrics") { request, context -> Response in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            try context.authenticated().requireAdmin()
            return metricsResponse(await metrics.render())
        }
    }
    NamespaceController(api: api).add(to: authenticated)
    InstanceController(api: api).add(to: authenticated)
    SnapshotController(api: api).add(to: authenticated)
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
    // Last: it sees only requests no route took (see MethodNotAllowedMiddleware).
    router.add(middleware: MethodNotAllowedMiddleware(routes: RouteTable(router.routes)))
    return router
}
