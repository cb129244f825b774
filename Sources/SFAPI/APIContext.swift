import Foundation
import Hummingbird
import Logging
import SFStore

/// What one request carries through the middleware to its handler: the request id (given by the
/// caller as `X-Request-ID`, or made here) and, once authenticated, who is calling.
public struct APIContext: RequestContext {
    /// Hummingbird's own per-request state (logger, parameters).
    public var coreContext: CoreRequestContextStorage
    /// The request id, returned as `X-Request-ID` and carried into the jobs and events it causes.
    public var requestID: String
    /// The authenticated caller; nil on the unauthenticated routes (`/`, `/auth`, `/openapi.json`).
    public var caller: Caller?
    /// The server's limits, put here by the first middleware.
    var limits = APILimits()
    /// The peer's IP address (without port), which failed logins are also counted by; "unknown"
    /// when the channel has none (the router test client).
    let clientAddress: String

    /// A context for a new request, before the middleware fills in its id and caller.
    public init(source: Source) {
        coreContext = .init(source: source)
        requestID = ""
        caller = nil
        clientAddress = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Bodies larger than this are refused with 413 before they are read whole. Upload chunks are
    /// at most 2 MiB from the real client; JSON bodies are far smaller.
    public var maxUploadSize: Int { APIConfiguration.maxBodyBytes }

    /// The caller, for handlers behind the authentication middleware.
    func authenticated() throws -> Caller {
        guard let caller else { throw APIError(.unauthorized, "Missing Authorization Header") }
        return caller
    }
}

/// Who is calling: the namespace and key of the token.
public struct Caller: Sendable, Equatable {
    /// The namespace the token's key belongs to.
    public var namespace: String
    /// The key's name within it.
    public var keyName: String

    /// The `system` namespace sees and manages everything.
    public var isAdmin: Bool { namespace.utf8.elementsEqual(Caller.adminNamespace.utf8) }

    /// The admin namespace.
    public static let adminNamespace = Namespace.system

    /// The namespace filter for the use cases: nil (everything) for the admin, else its own.
    var scope: String? { isAdmin ? nil : namespace }

    /// Refuses callers other than the admin, with Shaken Fist's 401 `unauthorized`.
    func requireAdmin() throws {
        guard isAdmin else { throw APIError(.unauthorized, "unauthorized") }
    }
}
