import Foundation
import Hummingbird
import SFControl
import SFStore

/// `/networks`: Shaken Fist's network endpoints.
struct NetworkController {
    let api: API

    func add(to group: RouterGroup<APIContext>) {
        group.get("/networks") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["all"])
            let caller = try context.authenticated()
            let networks = try await api.control.networks(namespace: caller.scope, includeDeleted: try body.bool("all") ?? false)
            var views: [NetworkView] = []
            for network in networks { views.append(try await view(network)) }
            return Reply.json(views)
        }
        group.post("/networks") { request, context in
            let body = try await RequestBody.read(
                request, context: context, allowed: ["netblock", "provide_dhcp", "provide_nat", "provide_dns", "name", "namespace", "spoof_filter"])
            let caller = try context.authenticated()
            let namespace: String
            if let asked = try body.string("namespace"), !asked.utf8.elementsEqual(caller.namespace.utf8) {
                guard caller.isAdmin else { throw APIError(.unauthorized, "only admins can create resources in a different namespace") }
                namespace = try await api.targetNamespace(asked, caller: caller)
            } else {
                namespace = caller.namespace
            }
            guard let netblock = try body.string("netblock") else { throw APIError(.badRequest, "netblock is required") }
            guard let name = try body.string("name") else { throw APIError(.badRequest, "name is required") }
            // Turning the anti-spoofing filter off lets the network's guests forge addresses: the admin's call.
            let spoofFilter = try body.bool("spoof_filter") ?? true
            if !spoofFilter, !caller.isAdmin { throw APIError(.unauthorized, "only admins can turn spoof_filter off") }
            let network = try await api.control.createNetwork(
                name: name, netblock: netblock, provideDHCP: try body.bool("provide_dhcp") ?? true,
                provideNAT: try body.bool("provide_nat") ?? true, provideDNS: try body.bool("provide_dns") ?? false,
                spoofFilter: spoofFilter, namespace: namespace,
                requestID: context.requestID)
            return Reply.json(try await view(network))
        }
        group.delete("/networks") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["confirm", "namespace", "clean_wait"])
            let caller = try context.authenticated()
            let namespace = try await api.deleteAllNamespace(body, caller: caller)
            let cleanWait = try body.bool("clean_wait") ?? false
            return try await api.deleteEach(try await api.control.networks(namespace: namespace).map(\.uuid.lowercasedString), context) { uuid in
                if !cleanWait, !(try await api.control.interfaces(ofNetwork: uuid)).isEmpty {
                    throw APIError(.forbidden, "network \(uuid) still has interfaces")
                }
                _ = try await api.control.deleteNetwork(uuid, requestID: context.requestID)
            }
        }
        group.get("/networks/:ref") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["namespace"])
            return Reply.json(try await view(try await resolve(request, context, namespace: try body.string("namespace"))))
        }
        group.delete("/networks/:ref") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["namespace"])
            let network = try await resolve(request, context, namespace: try body.string("namespace"))
            if network.state == .deleted { return Reply.null }
            let deleting = try await api.control.deleteNetwork(network.uuid.lowercasedString, requestID: context.requestID)
            return Reply.json(try await view(deleting))
        }
        group.get("/networks/:ref/interfaces") { request, context in
            let network = try await resolve(request, context)
            return Reply.json(try await api.interfaceViews(try await api.control.interfaces(ofNetwork: network.uuid.lowercasedString)))
        }
        group.get("/networks/:ref/ping/:address") { request, context in
            _ = try await RequestBody.read(request, context: context, allowed: [])
            let network = try await resolve(request, context)
            let report = try await api.control.ping(
                network: network.uuid.lowercasedString, address: try request.parameter("address", context))
            // Shaken Fist splits ping's output on newlines: the lines, then "" after the last newline.
            return Reply.json(PingView(stdout: report.lines + [""], stderr: [""]))
        }
        group.post("/networks/:ref/dns") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["name", "value", "namespace"])
            let network = try await resolve(request, context, namespace: try body.string("namespace"))
            guard let name = try body.string("name") else { throw APIError(.badRequest, "name is required") }
            guard let value = try body.string("value") else { throw APIError(.badRequest, "value is required") }
            try await api.control.setNetworkDNSEntry(
                network: network.uuid.lowercasedString, name: name, value: value, requestID: context.requestID)
            return Reply.null
        }
        group.delete("/networks/:ref/dns") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["name", "namespace"])
            let network = try await resolve(request, context, namespace: try body.string("namespace"))
            guard let name = try body.string("name") else { throw APIError(.badRequest, "name is required") }
            try await api.control.deleteNetworkDNSEntry(network: network.uuid.lowercasedString, name: name, requestID: context.requestID)
            return Reply.null
        }
        group.get("/networks/:ref/events") { request, context in
            try await eventsResponse(api, .network, try await resolve(request, context).uuid, request, context)
        }
        MetadataRoutes(type: .network, resolve: { request, context in try await resolve(request, context).uuid }, control: api.control)
            .add(to: group, path: "/networks/:ref")
    }

    func resolve(_ request: Request, _ context: APIContext, namespace: String? = nil) async throws -> Network {
        let caller = try context.authenticated()
        let scope = try await api.lookupScope(namespace, caller: caller)
        return try await api.control.network(try request.parameter("ref", context), namespace: scope)
    }

    func view(_ network: Network) async throws -> NetworkView {
        NetworkView(network: network, metadata: try await api.control.metadata(.network, network.uuid))
    }
}

/// Shaken Fist's answer to a ping: ping's standard output and error, as lists of lines.
struct PingView: WireValue {
    let stdout: [String]
    let stderr: [String]

    func write(to json: inout JSONWriter) {
        json.object { c in
            c.put("stdout", stdout)
            c.put("stderr", stderr)
        }
    }
}
