import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdAuth
import Logging
import SFSystem

extension HTTPField.Name {
    /// The request id header, taken from the caller or made here, and always returned. The name is
    /// a valid token, so this is never nil in practice.
    static let requestID = HTTPField.Name("X-Request-ID")
}

/// Gives every request its id: the caller's `X-Request-ID` when it is a sensible token, else a new
/// one. The id goes on every log line of the request (`request.id`, journald's `REQUEST_ID`), into
/// the jobs and events the request causes, and back to the caller in the response header.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = APIContext
    /// The server's limits, handed to every request's context.
    let limits: APILimits

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        var context = context
        context.limits = limits
        let given = HTTPField.Name.requestID.flatMap { request.headers[$0] }
        context.requestID = Self.accept(given) ?? "req-\(UUID.random().lowercasedString)"
        context.logger[metadataKey: "request.id"] = .string(context.requestID)
        var response = try await next(request, context)
        if let name = HTTPField.Name.requestID { response.headers[name] = context.requestID }
        return response
    }

    /// The caller's id, if it is 1 to 128 characters of letters, digits and `-_.:`; anything else
    /// would be unsafe to copy into logs and job payloads, so a fresh id replaces it.
    static func accept(_ header: String?) -> String? {
        guard let header, (1...128).contains(header.utf8.count),
            header.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.:".unicodeScalars.contains($0)) })
        else { return nil }
        return header
    }
}

/// Requires a valid bearer token and puts its caller on the context; anything else is a 401 with
/// flask_jwt_extended's messages, which makes the client authenticate again and retry once.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let authenticator: Authenticator

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        guard request.headers[.authorization] != nil else { throw APIError(.unauthorized, "Missing Authorization Header") }
        guard let bearer = request.headers.bearer else {
            throw APIError(.unauthorized, "Missing 'Bearer' type in 'Authorization' header. Expected 'Authorization: Bearer <JWT>'")
        }
        var context = context
        let caller = try await authenticator.caller(bearer: bearer.token)
        context.caller = caller
        context.logger[metadataKey: "namespace"] = .string(caller.namespace)
        return try await next(request, context)
    }
}
