import Foundation
import Hummingbird
import SFControl
import SFStore

/// `/nodes` and `/admin/locks`: the cluster's nodes, their metadata and events, and the leases
/// held, admin only.
struct NodeController {
    let api: API

    func add(to group: RouterGroup<APIContext>) {
        group.get("/nodes") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            try context.authenticated().requireAdmin()
            var views: [NodeView] = []
            for node in try await api.control.nodes() { views.append(try await view(node)) }
            return Reply.json(views)
        }
        group.get("/nodes/:name") { request, context in
            Reply.json(try await view(try await existing(request, context)))
        }
        // The operator's word that the node is gone: its instances go with it (Shaken Fist's answer is the node, deleted).
        group.delete("/nodes/:name") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            try context.authenticated().requireAdmin()
            let node = try await api.control.deleteNode(named: try request.parameter("name", context), requestID: context.requestID)
            return Reply.json(try await view(node))
        }
        // As in Shaken Fist, an unknown node has no events rather than a 404.
        group.get("/nodes/:name/events") { request, context in
            try context.authenticated().requireAdmin()
            return try await eventsResponse(api, .node(try request.parameter("name", context)), request, context)
        }
        MetadataRoutes(resolve: { request, context in .node(try await existing(request, context).name) }, control: api.control)
            .add(to: group, path: "/nodes/:name")
        group.get("/admin/locks") { request, context in
            try context.authenticated().requireAdmin()
            return Reply.json(LeasesView(leases: try await api.control.leases()))
        }
    }

    /// The path's node, for the admin only (401 for anyone else, as in Shaken Fist).
    func existing(_ request: Request, _ context: APIContext) async throws -> Node {
        try context.authenticated().requireAdmin()
        return try await api.control.node(named: try request.parameter("name", context))
    }

    func view(_ node: Node) async throws -> NodeView {
        NodeView(node: node, metadata: try await api.control.metadata(.node(node.name)), state: api.control.state(of: node, now: try await api.control.clock()))
    }
}
