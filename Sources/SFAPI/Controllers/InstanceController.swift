import Foundation
import Hummingbird
import NIOCore
import SFControl
import SFStore

/// `/instances`: Shaken Fist's instance endpoints.
struct InstanceController {
    let api: API

    func add(to group: RouterGroup<APIContext>) {
        group.get("/instances") { request, context in try await list(request, context) }
        group.post("/instances") { request, context in try await create(request, context) }
        group.delete("/instances") { request, context in try await deleteAll(request, context) }
        group.get("/instances/:ref") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["namespace"])
            let caller = try context.authenticated()
            let scope = try await api.lookupScope(try body.string("namespace"), caller: caller)
            let record = try await api.control.instanceRecord(try request.parameter("ref", context), namespace: scope)
            return Reply.json(InstanceView(record, missingNodes: try await api.control.missingNodes()))
        }
        group.delete("/instances/:ref") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["namespace"])
            let instance = try await resolve(request, context, namespace: try body.string("namespace"))
            guard instance.state != .deleted else { throw APIError(.notFound, "instance not found") }
            let deleted = try await api.control.deleteInstance(instance.uuid.lowercasedString, requestID: context.requestID)
            return Reply.json(try await view(deleted))
        }
        // The paths are the operations' names: rebootsoft, reboothard, poweroff, poweron, pause, unpause.
        for operation in PowerOperation.allCases {
            group.post("/instances/:ref/\(operation.rawValue)") { request, context in
                _ = try await RequestBody.read(request, context: context, allowed: [])
                let instance = try await resolve(request, context)
                _ = try await api.control.power(operation, instance.uuid.lowercasedString, requestID: context.requestID)
                return Reply.null
            }
        }
        group.get("/instances/:ref/interfaces") { request, context in
            let instance = try await resolve(request, context)
            return Reply.json(try await api.interfaceViews(try await api.control.interfaces(ofInstance: instance)))
        }
        // Shaken Fist's virt-viewer file for the instance's display, once its node gave it a port.
        group.get("/instances/:ref/vdiconsolehelper") { request, context in
            let instance = try await resolve(request, context)
            guard let port = instance.vdiPort, let node = instance.node, let kind = instance.video.displayProtocol else {
                throw APIError(.notFound, "instance \(instance.uuid.lowercasedString) has no display port (it has no video device, or has not started yet)")
            }
            var response = Response(
                status: .ok, body: .init(byteBuffer: ByteBuffer(string: "[virt-viewer]\ntype=\(kind)\nhost=\(node)\nport=\(port)\ndelete-this-file=1\n")))
            response.headers[.contentType] = "application/x-virt-viewer"
            return response
        }
        // The nested form of GET /interfaces/<ref>: one interface of this instance, by UUID or MAC.
        group.get("/instances/:ref/interfaces/:interface") { request, context in
            let instance = try await resolve(request, context)
            let reference = try request.parameter("interface", context).lowercased()
            let interfaces = try await api.control.interfaces(ofInstance: instance)
            guard let interface = interfaces.first(where: { $0.uuid.lowercasedString == reference || $0.macaddr.description.lowercased() == reference }) else {
                throw APIError(.notFound, "interface not found")
            }
            return Reply.json(InterfaceView(interface: interface, metadata: try await api.control.metadata(.interface, interface.uuid)))
        }
        group.get("/instances/:ref/events") { request, context in
            try await eventsResponse(api, .instance, try await resolve(request, context).uuid, request, context)
        }
        group.get("/instances/:ref/consoledata") { request, context in
            let body = try await RequestBody.read(request, context: context, allowed: ["length"])
            let instance = try await resolve(request, context)
            guard instance.node != nil else { return Reply.null }
            let length: Int?
            switch body.value("length") {
            case nil: length = nil
            case let value?:
                guard let number = RequestBody.integer(value) else { throw APIError(.badRequest, "length is not an integer") }
                length = number
            }
            let data = try await api.control.consoleData(instance.uuid.lowercasedString, length: length)
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: .init(bytes: data)))
        }
        group.delete("/instances/:ref/consoledata") { request, context in
            let instance = try await resolve(request, context)
            try await api.control.clearConsoleData(instance.uuid.lowercasedString)
            return Reply.null
        }
        MetadataRoutes(type: .instance, resolve: { request, context in try await resolve(request, context).uuid }, control: api.control)
            .add(to: group, path: "/instances/:ref")
    }

    /// The instance the path's `ref` names (UUID in any state, or unique live name) that the
    /// caller may see; another namespace's is 404.
    func resolve(_ request: Request, _ context: APIContext, namespace: String? = nil) async throws -> Instance {
        let caller = try context.authenticated()
        let scope = try await api.lookupScope(namespace, caller: caller)
        return try await api.control.instance(try request.parameter("ref", context), namespace: scope)
    }

    func view(_ instance: Instance) async throws -> InstanceView {
        InstanceView(try await api.control.instanceRecord(instance.uuid.lowercasedString), missingNodes: try await api.control.missingNodes())
    }

    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let body = try await RequestBody.read(request, context: context, allowed: ["all"])
        let caller = try context.authenticated()
        let records = try await api.control.instanceRecords(namespace: caller.scope, includeDeleted: try body.bool("all") ?? false)
        let missing = try await api.control.missingNodes()
        return Reply.json(records.map { InstanceView($0, missingNodes: missing) })
    }

    func create(_ request: Request, _ context: APIContext) async throws -> Response {
        let body = try await RequestBody.read(request, context: context, allowed: Self.createMembers)
        let caller = try context.authenticated()
        let namespace = try await api.targetNamespace(try body.string("namespace"), caller: caller)
        var instanceRequest = try Self.instanceRequest(body)
        instanceRequest.namespace = namespace
        instanceRequest.requestID = context.requestID
        let (instance, _) = try await api.control.createInstance(instanceRequest)
        context.logger.info("instance create accepted", metadata: ["instance.uuid": "\(instance.uuid.lowercasedString)"])
        return Reply.json(try await view(instance))
    }

    func deleteAll(_ request: Request, _ context: APIContext) async throws -> Response {
        let body = try await RequestBody.read(request, context: context, allowed: ["confirm", "namespace"])
        let caller = try context.authenticated()
        let namespace = try await api.deleteAllNamespace(body, caller: caller)
        return try await api.deleteEach(try await api.control.instances(namespace: namespace).map(\.uuid.lowercasedString), context) { uuid in
            _ = try await api.control.deleteInstance(uuid, requestID: context.requestID)
        }
    }

    static let createMembers: Set<String> = [
        "name", "cpus", "memory", "network", "disk", "ssh_key", "user_data", "namespace", "video", "configdrive", "metadata",
        "side_channels", "uefi", "secure_boot", "nvram_template", "placed_on",
    ]

    /// Shaken Fist's create body as an ``InstanceRequest``, each malformed member refused by name.
    static func instanceRequest(_ body: RequestBody) throws -> InstanceRequest {
        guard let name = try body.string("name") else { throw APIError(.badRequest, "name is required") }
        guard let cpus = try body.int("cpus") else { throw APIError(.badRequest, "cpus is required") }
        guard let memory = try body.int("memory") else { throw APIError(.badRequest, "memory is required") }
        guard let disks = try body.array("disk"), !disks.isEmpty else { throw APIError(.badRequest, "instance must specify at least one disk") }
        var request = InstanceRequest(
            name: name, cpus: cpus, memoryMiB: memory, disks: try disks.map(diskSpec),
            networks: try (body.array("network") ?? []).map(networkRequest))
        if let video = try body.object("video") {
            let video = try RequestBody(members: video, allowed: ["model", "memory", "vdi"], what: "video specification")
            guard let model = try video.string("model") else { throw APIError(.badRequest, "video specification requires \"model\"") }
            guard let memory = try video.int("memory") else { throw APIError(.badRequest, "video specification requires \"memory\"") }
            request.video = VideoSpec(model: model, memory: memory, vdi: try video.string("vdi") ?? "spice")
        }
        request.forcePlacement = try body.string("placed_on")
        request.metadata = try body.object("metadata") ?? [:]
        var config = InstanceConfig()
        config.sshKey = try body.string("ssh_key")
        config.userData = try body.string("user_data")
        if let drive = try body.string("configdrive") {
            guard let parsed = InstanceConfig.ConfigDrive(rawValue: drive) else { throw APIError(.badRequest, "invalid config drive type: \"\(drive)\"") }
            config.configDrive = parsed
        }
        if let channels = try body.array("side_channels") {
            config.sideChannels = try channels.map {
                guard let channel = $0.stringValue else { throw APIError(.badRequest, "side_channels must be a list of strings") }
                return channel
            }
        }
        config.uefi = try body.bool("uefi") ?? false
        config.secureBoot = try body.bool("secure_boot") ?? false
        config.nvramTemplate = try body.string("nvram_template")
        request.config = config
        return request
    }

    static func diskSpec(_ value: JSONValue) throws -> DiskSpec {
        guard case .object(let members) = value else { throw APIError(.badRequest, "disk specification should contain JSON objects") }
        let disk = try RequestBody(members: members, allowed: ["size", "base", "bus", "type"], what: "disk specification")
        var spec = DiskSpec(size: try disk.int("size"), bus: try disk.string("bus"))
        if let base = try disk.string("base"), base != "none", !base.isEmpty { spec.base = base }
        if let type = try disk.string("type") {
            guard let kind = DiskSpec.Kind(rawValue: type) else { throw APIError(.badRequest, "disk type '\(type)' is not disk or cdrom") }
            spec.type = kind
        }
        return spec
    }

    static func networkRequest(_ value: JSONValue) throws -> NetworkRequest {
        guard case .object(let members) = value else { throw APIError(.badRequest, "network specification should contain JSON objects") }
        let network = try RequestBody(
            members: members, allowed: ["network_uuid", "address", "macaddress", "model", "float"], what: "network specification")
        guard let reference = try network.string("network_uuid") else {
            throw APIError(.badRequest, "network specification is missing network_uuid")
        }
        return NetworkRequest(
            network: reference, address: try network.string("address"), macaddr: try network.string("macaddress"),
            model: try network.string("model"), float: try network.bool("float") ?? false)
    }
}
