import HTTPTypes
import Hummingbird

/// The methods each of the router's paths takes, read from the router once every route is on it.
///
/// Hummingbird answers 404 both for a path it does not know and for a known path asked with a
/// method it does not take. Shaken Fist (Flask-RESTful) answers the second with 405 and an `Allow`
/// header, and its clients tell "wrong method" from "not found" by that.
struct RouteTable: Sendable {
    private let routes: [(path: [RouterPath.Element], methods: Set<HTTPRequest.Method>)]

    init(_ descriptions: [Router<APIContext>.RouteDescription]) {
        var byPath: [String: (path: [RouterPath.Element], methods: Set<HTTPRequest.Method>)] = [:]
        for route in descriptions {
            byPath[route.path.description, default: (route.path.components, [])].methods.insert(route.method)
        }
        routes = Array(byPath.values)
    }

    /// Every method some route takes at `path`; empty when no route has this path. HEAD comes with
    /// GET, as the router answers it (`autoGenerateHeadEndpoints`).
    func methods(for path: String) -> Set<HTTPRequest.Method> {
        let components = path.split(separator: "/", omittingEmptySubsequences: true)
        var methods = Set<HTTPRequest.Method>()
        for route in routes where Self.matches(route.path, components[...]) {
            methods.formUnion(route.methods)
        }
        if methods.contains(.get) { methods.insert(.head) }
        return methods
    }

    private static func matches(_ pattern: [RouterPath.Element], _ components: ArraySlice<Substring>) -> Bool {
        guard let first = pattern.first else { return components.isEmpty }
        if first == .recursiveWildcard { return true }
        guard let component = components.first, first ~= component else { return false }
        return matches(Array(pattern.dropFirst()), components.dropFirst())
    }
}

/// Answers a known path asked with a method it does not take: 405 with `Allow`, or 200 with
/// `Allow` for `OPTIONS`. Added to the router after every route, so it runs only where no route
/// matched (Hummingbird applies a middleware to the routes added after it, and to "not found"),
/// and so before authentication, as in Shaken Fist. Unknown paths stay 404.
struct MethodNotAllowedMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let routes: RouteTable

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        var allowed = routes.methods(for: request.uri.path)
        guard !allowed.isEmpty, !allowed.contains(request.method) else { return try await next(request, context) }
        allowed.insert(.options)
        let allow = allowed.map(\.rawValue).sorted().joined(separator: ", ")
        if request.method == .options {
            return Response(status: .ok, headers: [.allow: allow])
        }
        var response = try APIError(.methodNotAllowed, "The method is not allowed for the requested URL.").response(from: request, context: context)
        response.headers[.allow] = allow
        return response
    }
}
