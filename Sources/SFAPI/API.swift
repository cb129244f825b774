import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SFControl
import SFStore

/// What every controller shares: the use cases, this node's blob storage, and the authenticator.
struct API: Sendable {
    let control: Control
    let auth: any AuthRecords
    let authenticator: Authenticator
    let storage: BlobStorage
    let logger: Logger
    /// Who follows events now (``EventStream``).
    let followers = EventFollowers()

    /// The namespace a request acts in: the body's `namespace` when given (which must exist and be
    /// the caller's, or any for the admin), else the caller's own. Another namespace is
    /// `namespace not found`, never forbidden.
    func targetNamespace(_ asked: String?, caller: Caller) async throws -> String {
        guard let asked, !asked.utf8.elementsEqual(caller.namespace.utf8) else { return caller.namespace }
        guard caller.isAdmin else { throw APIError(.notFound, "namespace not found") }
        try await requireNamespace(asked)
        return asked
    }

    /// Interfaces as the API shows them, each with its metadata.
    func interfaceViews(_ interfaces: [Interface]) async throws -> [InterfaceView] {
        var views: [InterfaceView] = []
        for interface in interfaces {
            views.append(InterfaceView(interface: interface, metadata: try await control.metadata(.interface, interface.uuid)))
        }
        return views
    }

    /// 404 `namespace not found` unless the namespace exists and is not deleted.
    func requireNamespace(_ name: String) async throws {
        guard try await auth.liveNamespace(name) != nil else { throw APIError(.notFound, "namespace not found") }
    }

    /// The namespace a delete-all acts on, by Shaken Fist's rules: `confirm` must be true, the admin
    /// must name an existing namespace, and anyone else may only name their own.
    func deleteAllNamespace(_ body: RequestBody, caller: Caller) async throws -> String {
        guard try body.bool("confirm") == true else { throw APIError(.badRequest, "parameter confirm is not set true") }
        let asked = try body.string("namespace")
        if caller.isAdmin {
            guard let asked else { throw APIError(.badRequest, "system user must specify parameter namespace") }
            try await requireNamespace(asked)
            return asked
        }
        if let asked, !asked.utf8.elementsEqual(caller.namespace.utf8) { throw APIError(.unauthorized, "you cannot delete other namespaces") }
        return caller.namespace
    }

    /// A delete-all's answer: every object of `uuids` is tried, one failure does not stop the rest,
    /// and the deleted ones are the answer. When any failed, the answer is the first failure's
    /// status with `{"deleted", "unable"}` (Shaken Fist's shape for networks that cannot go), and
    /// each failure is logged with its reason.
    func deleteEach(_ uuids: [String], _ context: APIContext, _ delete: (String) async throws -> Void) async throws -> Response {
        var deleted: [String] = []
        var unable: [String] = []
        var firstFailure: APIError?
        for uuid in uuids {
            do {
                try await delete(uuid)
                deleted.append(uuid)
            } catch {
                let failure = ErrorMiddleware.map(error)
                context.logger.notice("delete-all could not delete", metadata: ["object.uuid": "\(uuid)", "error": "\(failure.message)"])
                unable.append(uuid)
                if firstFailure == nil { firstFailure = failure }
            }
        }
        if let firstFailure {
            throw APIError(firstFailure.status, detail: ["deleted": deleted, "unable": unable], message: firstFailure.message)
        }
        return Reply.json(deleted)
    }

    /// The scope of a lookup: the body's `namespace` narrows it (get-instance-namespace), else the
    /// caller's own, or everything for the admin.
    func lookupScope(_ asked: String?, caller: Caller) async throws -> String? {
        guard let asked else { return caller.scope }
        return try await targetNamespace(asked, caller: caller)
    }
}

extension Request {
    /// A path parameter the route declares.
    func parameter(_ name: String, _ context: APIContext) throws -> String {
        guard let value = context.parameters.get(name) else { throw APIError(.badRequest, "missing path parameter \(name)") }
        // Foundation's decoding goes through CoreFoundation even when there is nothing to decode.
        guard value.utf8.contains(UInt8(ascii: "%")) else { return value }
        return value.removingPercentEncoding ?? value
    }

    /// A path parameter that must be a UUID.
    func uuidParameter(_ name: String, _ context: APIContext, what: String) throws -> UUID {
        let text = try parameter(name, context)
        guard let uuid = UUID(uuidString: text) else { throw APIError(.notFound, "\(what) not found") }
        return uuid
    }

    /// A query parameter as an integer, or nil when absent (the use case checks its range).
    func integerQuery(_ name: String) throws -> Int64? {
        try uri.queryParameters.get(name).map { try Self.integer($0, name) }
    }

    /// A path parameter that must be an integer.
    func integerParameter(_ name: String, _ context: APIContext) throws -> Int64 {
        try Self.integer(try parameter(name, context), name)
    }

    private static func integer(_ text: String, _ name: String) throws -> Int64 {
        guard let value = Int64(text) else { throw APIError(.badRequest, "\(name) '\(text.prefix(40))' is not an integer") }
        return value
    }
}

/// Responses as the client expects them: 200 with JSON, `null` for nothing.
enum Reply {
    static func json(_ value: some WireValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.encode(value))))
    }

    /// JSON `null`, Shaken Fist's "nothing" (never an empty body: the client parses every reply).
    static var null: Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "null\n")))
    }
}

/// The metadata endpoints every object type has: `GET …/metadata`, `POST …/metadata` with
/// `{"key", "value"}`, and `PUT` / `DELETE …/metadata/<key>`.
struct MetadataRoutes: Sendable {
    /// Resolves the path's object (checking the caller may see it).
    let resolve: @Sendable (Request, APIContext) async throws -> ObjectKey
    /// Resolves it for a change (checking the caller may change it); `resolve` when nil, for the
    /// objects whose visibility already is ownership.
    let resolveForChange: (@Sendable (Request, APIContext) async throws -> ObjectKey)?
    let control: Control

    init(
        resolve: @escaping @Sendable (Request, APIContext) async throws -> ObjectKey,
        resolveForChange: (@Sendable (Request, APIContext) async throws -> ObjectKey)? = nil, control: Control
    ) {
        self.resolve = resolve
        self.resolveForChange = resolveForChange
        self.control = control
    }

    /// For the objects known by UUID.
    init(
        type: ObjectType, resolve: @escaping @Sendable (Request, APIContext) async throws -> UUID,
        resolveForChange: (@Sendable (Request, APIContext) async throws -> UUID)? = nil, control: Control
    ) {
        let byKey: @Sendable (Request, APIContext) async throws -> ObjectKey = { request, context in
            ObjectKey(type, try await resolve(request, context))
        }
        var changeByKey: (@Sendable (Request, APIContext) async throws -> ObjectKey)?
        if let resolveForChange {
            changeByKey = { request, context in ObjectKey(type, try await resolveForChange(request, context)) }
        }
        self.init(resolve: byKey, resolveForChange: changeByKey, control: control)
    }

    func add(to group: RouterGroup<APIContext>, path: RouterPath) {
        group.get("\(path)/metadata") { request, context in
            Reply.json(try await control.metadata(try await resolve(request, context)))
        }
        group.post("\(path)/metadata") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["key", "value"])
            guard let key = try body.string("key") else { throw APIError(.badRequest, "no key specified") }
            try await set(request, context, key: key, body: body)
            return Reply.null
        }
        group.put("\(path)/metadata/:key") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["value"])
            try await set(request, context, key: try request.parameter("key", context), body: body)
            return Reply.null
        }
        group.delete("\(path)/metadata/:key") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            let object = try await (resolveForChange ?? resolve)(request, context)
            try await control.deleteMetadata(object, key: try request.parameter("key", context))
            return Reply.null
        }
    }

    private func set(_ request: Request, _ context: APIContext, key: String, body: RequestBody) async throws {
        guard let value = body.value("value"), Self.isTruthy(value) else { throw APIError(.badRequest, "no value specified") }
        let object = try await (resolveForChange ?? resolve)(request, context)
        try await control.setMetadata(object, key: key, value: value)
    }

    /// Python truthiness, which Shaken Fist's check uses: "", 0, false, [] and {} are "no value".
    static func isTruthy(_ value: JSONValue) -> Bool {
        switch value {
        case .null: return false
        case .bool(let flag): return flag
        case .number(let number): return number != 0
        case .string(let text): return !text.isEmpty
        case .array(let items): return !items.isEmpty
        case .object(let members): return !members.isEmpty
        }
    }
}

/// `GET …/events` with the optional body `{"event_type", "limit"}`.
func eventsResponse(_ api: API, _ type: ObjectType, _ uuid: UUID, _ request: Request, _ context: APIContext) async throws -> Response {
    try await eventsResponse(api, ObjectKey(type, uuid), request, context)
}

/// `GET …/events` with the optional body `{"event_type", "limit"}` (or the same as query
/// parameters); `?follow=true` streams them as they are recorded (``EventStream``).
func eventsResponse(_ api: API, _ object: ObjectKey, _ request: Request, _ context: APIContext) async throws -> Response {
    let control = api.control
    let body = try await RequestBody.read(request, context: context, allowed: ["event_type", "limit"])
    let query = request.uri.queryParameters
    let follow: Bool
    switch query.get("follow").map({ $0.lowercased() }) {
    case nil, "false", "0", "no": follow = false
    case "true", "1", "yes": follow = true
    case let other?: throw APIError(.badRequest, "follow '\(other)' is not true or false")
    }
    let queryLimit = try query.get("limit").map { text -> Int in
        guard let value = Int(text) else { throw APIError(.badRequest, "limit '\(text)' is not a whole number") }
        return value
    }
    // Upstream has no cap; more than the store keeps per read is simply all of them.
    let limit = min(try body.int("limit") ?? queryLimit ?? (follow ? 10 : 100), 1000)
    guard limit >= 1 else { throw APIError(.badRequest, "limit \(limit) is not a positive number of events") }
    var wanted: EventType?
    if let name = try body.string("event_type") ?? query.get("event_type") {
        guard let type = EventType(rawValue: name) else {
            throw APIError(.badRequest, "invalid event type \(name) (use \(EventType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        wanted = type
    }
    if follow { return try await EventStream.response(api, object, backlog: limit, only: wanted, context: context) }
    return Reply.json(try await control.events(object, eventType: wanted, limit: limit).map(EventView.init))
}
