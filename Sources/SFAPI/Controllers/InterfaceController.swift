import Foundation
import Hummingbird
import SFControl
import SFStore

/// `/interfaces`: get, float, defloat and metadata, by UUID or MAC address.
struct InterfaceController {
    let api: API

    func add(to group: RouterGroup<APIContext>) {
        group.get("/interfaces/:ref") { request, context in
            let interface = try await resolve(request, context)
            return Reply.json(InterfaceView(interface: interface, metadata: try await api.control.metadata(.interface, interface.uuid)))
        }
        group.post("/interfaces/:ref/float") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            let interface = try await resolve(request, context)
            guard interface.floating == nil else {
                throw APIError(.conflict, "interface \(interface.uuid.lowercasedString) is already floating (\(interface.floating?.description ?? ""))")
            }
            _ = try await api.control.float(interface.uuid.lowercasedString, requestID: context.requestID)
            return Reply.null
        }
        group.post("/interfaces/:ref/defloat") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            let interface = try await resolve(request, context)
            _ = try await api.control.defloat(interface.uuid.lowercasedString, requestID: context.requestID)
            return Reply.null
        }
        MetadataRoutes(type: .interface, resolve: { request, context in try await resolve(request, context).uuid }, control: api.control)
            .add(to: group, path: "/interfaces/:ref")
    }

    /// The interface by UUID or MAC; one whose instance the caller does not own is 404.
    func resolve(_ request: Request, _ context: APIContext) async throws -> Interface {
        let caller = try context.authenticated()
        do {
            return try await api.control.interface(try request.parameter("ref", context), namespace: caller.scope)
        } catch let error as ControlError where error.code == .invalidArgument {
            throw APIError(.notFound, "interface not found")
        }
    }
}
