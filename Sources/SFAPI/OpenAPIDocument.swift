import Foundation
import SFStore

/// The OpenAPI 3 document served at `/openapi.json`: every route, its body, and the objects it
/// answers with (the same shapes as ``InstanceView`` and the other views), so that a client
/// generator or a fuzzer (CI runs schemathesis against it) sees the real API.
enum OpenAPIDocument {
    static let json: String = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(document)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }()

    static var document: JSONValue {
        [
            "openapi": "3.0.3",
            "info": [
                "title": "sfnode: the Shaken Fist REST API", "version": "0.8",
                "description": "Shaken Fist's REST API as sfnode serves it. Every success is 200 with JSON (null for nothing); every error is {\"error\", \"status\"}.",
            ],
            "servers": [["url": "/"]],
            "security": [["bearer": []]],
            "components": ["securitySchemes": ["bearer": ["type": "http", "scheme": "bearer", "bearerFormat": "JWT"]], "schemas": schemas],
            "paths": .object(paths),
        ]
    }

    // MARK: Schemas

    static func ref(_ name: String) -> JSONValue { ["$ref": .string("#/components/schemas/\(name)")] }
    static func array(_ items: JSONValue) -> JSONValue { ["type": "array", "items": items] }
    static let string: JSONValue = ["type": "string"]
    static let nullableString: JSONValue = ["type": "string", "nullable": true]
    static let integer: JSONValue = ["type": "integer"]
    static let nullableInteger: JSONValue = ["type": "integer", "nullable": true]
    static let number: JSONValue = ["type": "number"]
    static let nullableNumber: JSONValue = ["type": "number", "nullable": true]
    static let boolean: JSONValue = ["type": "boolean"]
    static let anyObject: JSONValue = ["type": "object", "additionalProperties": true]
    /// JSON `null`, Shaken Fist's "nothing".
    static let null: JSONValue = ["nullable": true, "enum": [nil], "description": "JSON null"]

    static func object(_ properties: [String: JSONValue], required: [String]? = nil, closed: Bool = false) -> JSONValue {
        var schema: [String: JSONValue] = ["type": "object", "properties": .object(properties)]
        schema["required"] = .array((required ?? properties.keys.sorted()).map(JSONValue.string))
        if closed { schema["additionalProperties"] = false }
        return .object(schema)
    }

    static var schemas: JSONValue {
        [
            "Error": object(["error": ["oneOf": [string, anyObject]], "status": integer]),
            "Token": object(["access_token": string, "token_type": string, "expires_in": integer]),
            "Namespace": object(["name": string, "state": string, "metadata": anyObject, "version": integer, "keys": array(string), "trust": anyObject]),
            "Interface": object([
                "uuid": string, "state": string, "metadata": anyObject, "version": integer, "network_uuid": string, "instance_uuid": string,
                "macaddr": string, "ipv4": nullableString, "order": integer, "model": string, "floating": nullableString,
            ]),
            "Instance": object([
                "uuid": string, "name": string, "namespace": string, "state": string, "metadata": anyObject, "version": integer,
                "cpus": integer, "memory": integer,
                "disk_spec": array(object(["base": nullableString, "bus": nullableString, "size": nullableInteger, "type": string])),
                "disks": array(anyObject), "video": object(["model": string, "memory": integer, "vdi": nullableString]),
                "ssh_key": nullableString, "user_data": nullableString, "uefi": boolean, "secure_boot": boolean,
                "nvram_template": nullableString, "configdrive": string, "machine_type": string, "side_channels": array(string),
                "agent_state": nullableString, "agent_start_time": nullableNumber, "agent_system_boot_time": nullableNumber,
                "error_message": nullableString, "node": nullableString, "power_state": string, "console_port": nullableInteger,
                "vdi_port": nullableInteger, "vdi_tls_port": nullableInteger, "interfaces": array(ref("Interface")),
            ]),
            "Network": object([
                "uuid": string, "state": string, "metadata": anyObject, "version": integer, "name": string, "namespace": string,
                "netblock": string, "provide_dhcp": boolean, "provide_nat": boolean, "provide_dns": boolean,
                "spoof_filter": boolean, "floating_gateway": nullableString, "vxlan_id": integer,
            ]),
            "Event": object(
                ["type": string, "timestamp": number, "fqdn": string, "duration": nullableNumber, "message": string,
                 "extra": ["type": "object", "nullable": true, "additionalProperties": true], "request_id": nullableString]),
            "Blob": object(
                ["uuid": string, "state": string, "metadata": anyObject, "version": integer, "size": integer, "modified": number,
                 "fetched_at": nullableNumber, "last_used": nullableNumber, "depends_on": nullableString, "transcodes": anyObject,
                 "locations": array(string), "reference_count": integer, "sha512": nullableString, "instances": array(string),
                 "references_to": anyObject, "references_from": anyObject],
                required: ["uuid", "state", "metadata", "version", "size", "modified", "locations", "reference_count", "transcodes"]),
            "Artifact": object(
                ["uuid": string, "state": string, "metadata": anyObject, "version": integer, "artifact_type": string,
                 "source_url": nullableString, "max_versions": integer, "namespace": string, "shared": boolean, "index": integer,
                 "blob_uuid": string, "blobs": anyObject, "instances": array(string)],
                required: ["uuid", "state", "metadata", "version", "artifact_type", "source_url", "max_versions", "namespace", "index", "blobs"]),
            "Upload": object(["uuid": string, "state": string, "metadata": anyObject, "version": integer, "node": string, "created_at": number]),
            "Node": object([
                "uuid": string, "state": string, "metadata": anyObject, "version": integer, "name": string, "ip": nullableString,
                "lastseen": number, "release": string, "is_etcd_master": boolean, "is_hypervisor": boolean, "is_network_node": boolean,
                "is_eventlog_node": boolean, "is_cluster_maintainer": boolean,
            ]),
        ]
    }

    // MARK: Paths

    struct Operation {
        let method: String
        let summary: String
        var body: JSONValue? = nil
        var bodyType = "application/json"
        let response: JSONValue
        var responseType = "application/json"
        var query: [String] = []
        var isPublic = false
    }

    static func ops(_ list: Operation...) -> [Operation] { list }

    static var paths: [String: JSONValue] {
        let metadataValue = object(["value": ["description": "any JSON value but a falsy one"]], closed: true)
        let namespaceOnly = object(["namespace": nullableString], required: [], closed: true)
        let deleteAll = object(["confirm": boolean, "namespace": nullableString, "clean_wait": boolean], required: ["confirm"], closed: true)
        let eventsQuery = object(["event_type": nullableString, "limit": ["oneOf": [integer, string], "nullable": true]], required: [], closed: true)
        var table: [String: [Operation]] = [
            "/": ops(Operation(method: "get", summary: "The capability page (HTML)", response: string, responseType: "text/html", isPublic: true)),
            "/auth": ops(Operation(method: "post", summary: "A bearer token for a namespace's key", body: object(["namespace": string, "key": string], closed: true), response: ref("Token"), isPublic: true)),
            "/openapi.json": ops(Operation(method: "get", summary: "This document", response: anyObject, isPublic: true)),
            "/auth/namespaces": ops(
                Operation(method: "get", summary: "Namespaces the caller may see", response: array(ref("Namespace"))),
                Operation(method: "post", summary: "Create a namespace (admin)", body: object(["namespace": string, "key_name": nullableString, "key": nullableString], required: ["namespace"], closed: true), response: ref("Namespace"))),
            "/auth/namespaces/{namespace}": ops(
                Operation(method: "get", summary: "A namespace", response: ref("Namespace")),
                Operation(method: "delete", summary: "Delete an empty namespace (admin)", response: null)),
            "/auth/namespaces/{namespace}/keys": ops(
                Operation(method: "get", summary: "The names of a namespace's keys", response: array(string)),
                Operation(method: "post", summary: "Add or replace a key", body: object(["key_name": string, "key": string], closed: true), response: string)),
            "/auth/namespaces/{namespace}/keys/{key}": ops(Operation(method: "delete", summary: "Remove a key (its tokens stop working)", response: null)),
            "/instances": ops(
                Operation(method: "get", summary: "Instances", body: object(["all": boolean], required: [], closed: true), response: array(ref("Instance"))),
                Operation(method: "post", summary: "Create an instance", body: instanceCreate, response: ref("Instance")),
                Operation(method: "delete", summary: "Delete every instance of a namespace", body: deleteAll, response: array(string))),
            "/instances/{ref}": ops(
                Operation(method: "get", summary: "An instance by UUID or name", body: namespaceOnly, response: ref("Instance")),
                Operation(method: "delete", summary: "Delete an instance", body: namespaceOnly, response: ref("Instance"))),
            "/instances/{ref}/interfaces": ops(Operation(method: "get", summary: "An instance's interfaces", response: array(ref("Interface")))),
            "/instances/{ref}/consoledata": ops(
                Operation(method: "get", summary: "The end of the serial console log", body: object(["length": ["oneOf": [integer, string], "nullable": true]], required: [], closed: true), response: ["type": "string", "format": "binary"], responseType: "application/octet-stream"),
                Operation(method: "delete", summary: "Clear the console log", response: null)),
            "/instances/{ref}/snapshot": ops(
                Operation(method: "post", summary: "Snapshot disk 0, one device or all disks; answers at once, keyed by device (the blobs exist once the job ran)", body: object(["all": boolean, "device": nullableString, "thin": boolean, "max_versions": ["oneOf": [integer, string], "nullable": true], "label_name": nullableString, "delete_snapshot_after_label": boolean], required: [], closed: true), response: ["type": "object", "properties": ["label": ref("Artifact")], "additionalProperties": object(["source_url": string, "artifact_uuid": string, "blob_uuid": string])]),
                Operation(method: "get", summary: "Every version of the instance's snapshot artifacts: the artifact overlaid with its blob, plus device and created", response: array(object(["uuid": string, "artifact_type": string, "source_url": string, "blob_uuid": string, "state": string, "device": string, "created": number, "size": integer, "sha512": nullableString, "depends_on": nullableString, "index": integer])))),
            "/interfaces/{ref}": ops(Operation(method: "get", summary: "An interface by UUID or MAC", response: ref("Interface"))),
            "/interfaces/{ref}/float": ops(Operation(method: "post", summary: "Give the interface a floating address", response: null)),
            "/interfaces/{ref}/defloat": ops(Operation(method: "post", summary: "Release its floating address", response: null)),
            "/networks": ops(
                Operation(method: "get", summary: "Networks", body: object(["all": boolean], required: [], closed: true), response: array(ref("Network"))),
                Operation(method: "post", summary: "Create a network: an IPv4 netblock with host bits clear, /8 to /29 (400 otherwise); provide_dns answers the instances' names on the router", body: object(["netblock": string, "name": string, "provide_dhcp": boolean, "provide_nat": boolean, "provide_dns": boolean, "spoof_filter": boolean, "namespace": nullableString], required: ["netblock", "name"], closed: true), response: ref("Network")),
                Operation(method: "delete", summary: "Delete every network of a namespace", body: deleteAll, response: array(string))),
            "/networks/{ref}": ops(
                Operation(method: "get", summary: "A network by UUID or name", body: namespaceOnly, response: ref("Network")),
                Operation(method: "delete", summary: "Delete a network (null when already deleted)", body: namespaceOnly, response: ["nullable": true, "allOf": [ref("Network")]])),
            "/networks/{ref}/interfaces": ops(Operation(method: "get", summary: "A network's interfaces", response: array(ref("Interface")))),
            "/networks/{ref}/dns": ops(
                Operation(method: "post", summary: "Add or replace an extra DNS record (the value an IPv4 address) on a network with DNS; 400 for a bad name or value or a network without DNS", body: object(["name": string, "value": string, "namespace": nullableString], required: ["name", "value"], closed: true), response: null),
                Operation(method: "delete", summary: "Remove an extra DNS record (a missing name is not an error)", body: object(["name": string, "namespace": nullableString], required: ["name"], closed: true), response: null)),
            "/networks/{ref}/ping/{address}": ops(Operation(method: "get", summary: "Ping an address of the network from its namespace (10 requests, 1 s apart): ping's output as lines; 406 while the network is made, 409 when it is in error or deleted, 429 when too many pings run", response: object(["stdout": array(string), "stderr": array(string)], required: ["stdout", "stderr"], closed: true))),
            "/blobs": ops(Operation(method: "get", summary: "Every blob (admin)", body: object(["node": nullableString], required: [], closed: true), response: array(ref("Blob")))),
            "/blobs/{uuid}": ops(Operation(method: "get", summary: "A blob", response: ref("Blob"))),
            "/blobs/{uuid}/data": ops(Operation(method: "get", summary: "Blob data from offset, at most limit bytes (0: to the end); always 200", response: ["type": "string", "format": "binary"], responseType: "application/octet-stream", query: ["offset", "limit"])),
            "/blob_checksums/{algorithm}/{hash}": ops(Operation(method: "get", summary: "The created blob with this sha512, or null", response: ["nullable": true, "allOf": [ref("Blob")]])),
            "/artifacts": ops(
                Operation(method: "get", summary: "Artifacts", body: object(["node": nullableString], required: [], closed: true), response: array(ref("Artifact"))),
                Operation(method: "post", summary: "Cache an image URL", body: object(["url": string, "shared": boolean, "namespace": nullableString], required: ["url"], closed: true), response: ref("Artifact")),
                Operation(method: "delete", summary: "Delete every artifact of a namespace", body: deleteAll, response: array(string))),
            "/artifacts/upload/{name}": ops(Operation(method: "post", summary: "Make an upload (or a blob) the artifact's newest version", body: object(["upload_uuid": nullableString, "blob_uuid": nullableString, "source_url": nullableString, "shared": boolean, "namespace": nullableString, "artifact_type": nullableString], required: [], closed: true), response: ref("Artifact"))),
            "/artifacts/{ref}": ops(
                Operation(method: "get", summary: "An artifact with the instances using it", response: ref("Artifact")),
                Operation(method: "delete", summary: "Delete an artifact (null when already deleted)", response: ["nullable": true, "allOf": [ref("Artifact")]])),
            "/artifacts/{ref}/versions": ops(
                Operation(method: "get", summary: "Its versions' blobs, oldest first", response: array(ref("Blob"))),
                Operation(method: "post", summary: "Set how many versions are kept", body: object(["max_versions": ["oneOf": [integer, string]]], closed: true), response: null)),
            "/artifacts/{ref}/share": ops(Operation(method: "post", summary: "Share a system artifact with every namespace (admin)", response: ref("Artifact"))),
            "/artifacts/{ref}/unshare": ops(Operation(method: "post", summary: "Stop sharing an artifact (admin)", response: ref("Artifact"))),
            "/label/{name}": ops(Operation(method: "post", summary: "Point a label at a blob", body: object(["blob_uuid": string], closed: true), response: ref("Artifact"))),
            "/upload": ops(Operation(method: "post", summary: "Start an upload", response: ref("Upload"))),
            "/upload/{uuid}": ops(Operation(method: "post", summary: "Append a chunk; answers the new total size", body: ["type": "string", "format": "binary"], bodyType: "application/octet-stream", response: integer)),
            "/upload/{uuid}/truncate/{offset}": ops(Operation(method: "post", summary: "Cut the upload back to offset bytes", response: null)),
            "/nodes": ops(Operation(method: "get", summary: "The cluster's nodes (admin)", response: array(ref("Node")))),
            "/nodes/{name}": ops(
                Operation(method: "get", summary: "A node (admin)", response: ref("Node")),
                Operation(method: "delete", summary: "Delete a node that is gone, with its instances (admin)", response: ref("Node"))),
            "/nodes/{name}/events": ops(Operation(method: "get", summary: "A node's events, newest first (admin; none for an unknown node)", body: eventsQuery, response: array(ref("Event")))),
            "/auth/namespaces/{namespace}/trust": ops(Operation(method: "post", summary: "Trust another namespace to see and boot this one's images", body: object(["external_namespace": string], closed: true), response: ref("Namespace"))),
            "/auth/namespaces/{namespace}/trust/{external}": ops(Operation(method: "delete", summary: "Stop trusting a namespace", response: ref("Namespace"))),
            "/instances/{ref}/interfaces/{interface}": ops(Operation(method: "get", summary: "One interface of the instance, by UUID or MAC address", response: ref("Interface"))),
            "/artifacts/{ref}/versions/{version}": ops(Operation(method: "delete", summary: "Delete one version by its index; the last one deletes the artifact", response: ref("Artifact"))),
            "/instances/{ref}/vdiconsolehelper": ops(Operation(method: "get", summary: "The virt-viewer file of the instance's display (404 until it has a port)", response: ["type": "string"], responseType: "application/x-virt-viewer")),
            "/admin/locks": ops(Operation(method: "get", summary: "The leases held now, one per running job, keyed as Shaken Fist's locks (admin)", response: anyObject)),
        ]
        for operation in ["rebootsoft", "reboothard", "poweroff", "poweron", "pause", "unpause"] {
            table["/instances/{ref}/\(operation)"] = ops(Operation(method: "post", summary: "Queue \(operation)", response: null))
        }
        for (base, kind) in [("/instances/{ref}", "instance"), ("/networks/{ref}", "network"), ("/artifacts/{ref}", "artifact")] {
            table[base + "/events"] = ops(Operation(method: "get", summary: "The \(kind)'s events, newest first", body: eventsQuery, response: array(ref("Event"))))
        }
        for base in ["/instances/{ref}", "/networks/{ref}", "/interfaces/{ref}", "/blobs/{uuid}", "/artifacts/{ref}", "/auth/namespaces/{namespace}", "/nodes/{name}"] {
            table[base + "/metadata"] = ops(
                Operation(method: "get", summary: "Metadata", response: anyObject),
                Operation(method: "post", summary: "Set one key", body: object(["key": string, "value": ["description": "any JSON value but a falsy one"]], closed: true), response: null))
            table[base + "/metadata/{key}"] = ops(
                Operation(method: "put", summary: "Set one key", body: metadataValue, response: null),
                Operation(method: "delete", summary: "Remove one key", response: null))
        }
        return table.mapValues { operations in
            .object(Dictionary(uniqueKeysWithValues: operations.map { ($0.method, describe($0, parameters: [])) }))
        }.reduce(into: [:]) { result, entry in
            result[entry.key] = withParameters(entry.value, path: entry.key)
        }
    }

    static var instanceCreate: JSONValue {
        object(
            [
                "name": string, "cpus": ["oneOf": [integer, string]], "memory": ["oneOf": [integer, string]],
                "disk": array(object(["size": ["oneOf": [integer, string], "nullable": true], "base": nullableString, "bus": nullableString, "type": nullableString], required: [], closed: true)),
                "network": ["type": "array", "nullable": true, "items": object(["network_uuid": string, "address": nullableString, "macaddress": nullableString, "model": nullableString, "float": ["type": "boolean", "nullable": true]], required: ["network_uuid"], closed: true)],
                "ssh_key": nullableString, "user_data": nullableString, "namespace": nullableString,
                "video": ["type": "object", "nullable": true, "properties": ["model": string, "memory": ["oneOf": [integer, string]], "vdi": nullableString], "additionalProperties": false],
                "configdrive": nullableString, "metadata": ["type": "object", "nullable": true, "additionalProperties": true],
                "side_channels": ["type": "array", "nullable": true, "items": string], "uefi": boolean, "secure_boot": boolean,
                "nvram_template": nullableString, "placed_on": nullableString,
            ], required: ["name", "cpus", "memory", "disk"], closed: true)
    }

    /// The limits every tenant meets (README, "Limits"), each with its own status, so that a client
    /// can tell "too big" and "too many" from "not allowed".
    static let limitAnswers: [(status: String, meaning: String)] = [
        ("403", "Not allowed, or a quota of the namespace is used up (the message names it)"),
        ("413", "The request body is larger than the server accepts"),
        ("429", "Too many requests: login attempts, or jobs queued for the namespace; retry after Retry-After"),
    ]

    static func describe(_ operation: Operation, parameters: [JSONValue]) -> JSONValue {
        var responses: [String: JSONValue] = [
            "200": ["description": "Success", "content": .object([operation.responseType: ["schema": operation.response]])],
            "default": ["description": "An error", "content": ["application/json": ["schema": ref("Error")]]],
        ]
        for answer in limitAnswers {
            responses[answer.status] = ["description": .string(answer.meaning), "content": ["application/json": ["schema": ref("Error")]]]
        }
        var described: [String: JSONValue] = ["summary": .string(operation.summary), "responses": .object(responses)]
        if let body = operation.body {
            described["requestBody"] = ["required": false, "content": .object([operation.bodyType: ["schema": body]])]
        }
        if operation.isPublic { described["security"] = [] }
        if !operation.query.isEmpty {
            described["parameters"] = .array(operation.query.map { ["name": .string($0), "in": "query", "required": false, "schema": ["type": "integer", "minimum": 0]] })
        }
        return .object(described)
    }

    /// Adds the path's `{parameters}` to each of its operations.
    static func withParameters(_ item: JSONValue, path: String) -> JSONValue {
        let names = path.split(separator: "/").filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) }
        guard !names.isEmpty, case .object(let operations) = item else { return item }
        let parameters: [JSONValue] = names.map { ["name": .string($0), "in": "path", "required": true, "schema": string] }
        return .object(operations.mapValues { operation in
            guard case .object(var members) = operation else { return operation }
            members["parameters"] = .array(parameters + (members["parameters"]?.arrayValue ?? []))
            return .object(members)
        })
    }
}
