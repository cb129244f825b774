import Foundation
import HTTPTypes
import Hummingbird
import NIOHTTP1
import NIOCore
import SFControl

/// An error as the API answers it: a status and Shaken Fist's body `{"error": …, "status": …}`.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    /// The HTTP status.
    public let status: HTTPResponse.Status
    /// What went wrong, the body's `error`.
    public let message: String
    /// Extra members of the error body (delete-all's `{"deleted", "unable"}`), as JSON.
    let detail: RawJSON?
    /// Seconds the client should wait before trying again (`Retry-After`, with 429 and 503).
    let retryAfter: Int?

    /// An error with `status` and `message`.
    public init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
        self.detail = nil
        self.retryAfter = nil
    }

    /// An error the client may retry after `retryAfter` seconds.
    init(_ status: HTTPResponse.Status, _ message: String, retryAfter: Int) {
        self.status = status
        self.message = message
        self.detail = nil
        self.retryAfter = retryAfter
    }

    init(_ status: HTTPResponse.Status, detail: some WireValue, message: String) {
        self.status = status
        self.message = message
        self.detail = RawJSON(JSONWriter.encode(detail))
        self.retryAfter = nil
    }

    /// A use-case error, by its code: the mapping the client's exceptions expect (406 makes it
    /// retry, 507 is insufficient resources).
    public init(_ error: ControlError) {
        if error.code == .tooBusy {
            self.init(Self.status(of: error.code), error.message, retryAfter: 5)
        } else {
            self.init(Self.status(of: error.code), error.message)
        }
    }

    /// The status a ControlError code is answered with.
    public static func status(of code: ControlError.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidArgument: return .badRequest
        case .notFound: return .notFound
        case .conflict: return .conflict
        case .notReady: return .notAcceptable
        case .insufficientResources: return .init(code: 507, reasonPhrase: "Insufficient Storage")
        case .internal: return .internalServerError
        case .quotaExceeded: return .forbidden
        case .tooLarge: return .contentTooLarge
        case .tooBusy: return .tooManyRequests
        case .forbidden: return .forbidden
        }
    }

    public var description: String { "\(status.code) \(message)" }

    /// The JSON response: `{"error": message, "status": code}`.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = Reply.json(ErrorBody(error: detail ?? RawJSON(JSONWriter.encode(message)), status: status.code), status: status)
        if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
        return response
    }

    private struct ErrorBody: WireValue {
        let error: RawJSON
        let status: Int

        func write(to json: inout JSONWriter) {
            json.object { json in
                json.put("error", error)
                json.put("status", status)
            }
        }
    }
}

/// Turns whatever a handler throws into an ``APIError`` response, so that every failure has
/// Shaken Fist's JSON shape and no internal error escapes as a bare 500.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = APIContext

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPParserError {
            // A body cut short or malformed on the wire: Hummingbird answers 400 and closes the
            // connection, which is right; mapped here it became a 500.
            throw error
        } catch {
            let mapped = Self.map(error)
            if mapped.status.code >= 500 {
                context.logger.error("request failed", metadata: ["error": "\(error)"])
            }
            return try mapped.response(from: request, context: context)
        }
    }

    static func map(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError: return error
        case let error as ControlError: return APIError(error)
        case is NIOTooManyBytesError:
            return APIError(.contentTooLarge, "the request body is larger than this endpoint takes (\(APIConfiguration.maxBodyBytes) bytes for an upload chunk)")
        case let error as HTTPError:
            return APIError(error.status, error.body ?? error.status.reasonPhrase)
        case let error as any HTTPResponseError:
            return APIError(error.status, "\(error)")
        default:
            return APIError(ControlError(classifying: error))
        }
    }
}
