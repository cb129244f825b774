import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SFAPI
import SFControl
import SFStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hostile numbers in every numeric field the API takes: every numeric member of every JSON body
/// in the OpenAPI document (found by walking the document, so a new one is covered when it is
/// documented), the affinity scores inside metadata, query and path integers, and Content-Length.
/// Each must be a 4xx, never a 5xx and never a trap, and the API answers `GET /` afterwards.
@Suite struct NumericAbuseTests {
    /// Spliced into bodies verbatim: huge, negative, fractional and non-finite numbers, the same as
    /// strings (the API takes "12" where Shaken Fist's client sends strings), and tokens that are
    /// not JSON at all.
    static let hostileTokens = [
        "1e300", "-1e300", "9223372036854775808", "18446744073709551616", "-9223372036854775809", "1.5", "-1", "1e-300",
        "\"1e300\"", "\"9223372036854775808\"", "\"18446744073709551616\"", "\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "\"1.5\"",
        "\"-1\"", "\"0x10\"", "NaN", "Infinity", "-Infinity", "1e999",
    ]
    static let placeholder = "@@HOSTILE@@"

    /// A numeric member of a request body: where it is, in the body of which route.
    struct NumericField: CustomStringConvertible {
        let method: String
        let path: String
        /// Object keys and array indexes from the body's root.
        let location: [String]
        var description: String { "\(method.uppercased()) \(path) \(location.joined(separator: "."))" }
    }

    /// Every numeric member of every JSON request body the document describes.
    static func numericFields(_ document: JSONValue) -> [NumericField] {
        guard case .object(let paths)? = document.members?["paths"] else { return [] }
        var fields: [NumericField] = []
        for (path, item) in paths {
            for (method, operation) in item.members ?? [:] {
                guard let schema = operation.members?["requestBody"]?.members?["content"]?.members?["application/json"]?.members?["schema"] else { continue }
                for location in numericLocations(schema, at: []) {
                    fields.append(NumericField(method: method, path: path, location: location))
                }
            }
        }
        return fields.sorted { $0.description < $1.description }
    }

    static func numericLocations(_ schema: JSONValue, at location: [String]) -> [[String]] {
        guard let members = schema.members else { return [] }
        let types = ([members["type"]] + (members["oneOf"]?.arrayValue ?? []).map { $0.members?["type"] }).compactMap { $0?.stringValue }
        if types.contains("integer") || types.contains("number") { return [location] }
        if let properties = members["properties"]?.members {
            return properties.flatMap { numericLocations($0.value, at: location + [$0.key]) }
        }
        if let items = members["items"] { return numericLocations(items, at: location + ["0"]) }
        return []
    }

    /// A body each route accepts (200), so that only the hostile number can be why it is refused.
    static func validBody(_ field: NumericField, name: String) -> JSONValue {
        switch (field.method, field.path) {
        case ("post", "/instances"):
            return [
                "name": .string(name), "cpus": 1, "memory": 512, "disk": [["size": 8, "base": nil, "type": "disk"]],
                "video": ["model": "cirrus", "memory": 16384], "metadata": ["affinity": ["x": 1]],
            ]
        case ("post", "/artifacts/{ref}/versions"): return ["max_versions": 3]
        // A device the instance does not have: accepted (Shaken Fist's {}), and nothing is queued.
        case ("post", "/instances/{ref}/snapshot"): return ["max_versions": 3, "device": "vdz"]
        case ("get", let path) where path.hasSuffix("/consoledata"): return ["length": 100]
        default: return ["limit": 5]  // the events routes
        }
    }

    /// `body` with the value at `location` replaced by the placeholder string.
    static func placing(_ value: JSONValue, in body: JSONValue, at location: [String]) -> JSONValue {
        guard let key = location.first else { return value }
        switch body {
        case .object(var members):
            members[key] = placing(value, in: members[key] ?? .object([:]), at: Array(location.dropFirst()))
            return .object(members)
        case .array(var items):
            guard let index = Int(key), items.indices.contains(index) else { return body }
            items[index] = placing(value, in: items[index], at: Array(location.dropFirst()))
            return .array(items)
        default:
            return placing(value, in: .object([:]), at: location)
        }
    }

    /// The path with each `{parameter}` naming a real object of the fixture.
    static func concrete(_ path: String, objects: [String: String]) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { segment -> String in
            guard segment.hasPrefix("{") else { return String(segment) }
            return objects[path.components(separatedBy: "/").dropFirst().first ?? ""] ?? "x"
        }.joined(separator: "/")
    }

    static func send(_ api: APIClient, _ method: String, _ path: String, token: String, text: String) async throws -> APIResponse {
        try await api.send(
            HTTPRequest.Method(method.uppercased()) ?? .get, path, token: token, raw: ByteBuffer(string: text),
            headers: [.contentType: "application/json"])
    }

    @Test("every numeric body field of every route, metadata affinity, query and path integers: hostile numbers are 4xx")
    func hostileNumbersAreClientErrors() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await Self.run(fixture) { api in
            let token = try await api.token()
            let document = try await api.send(.get, "/openapi.json")
            let fields = Self.numericFields(try #require(document.json))
            // The walk found the documented numbers (and any added later).
            let found = Set(fields.map(\.description))
            for expected in [
                "POST /instances cpus", "POST /instances memory", "POST /instances disk.0.size", "POST /instances video.memory",
                "GET /instances/{ref}/events limit", "GET /networks/{ref}/events limit", "GET /artifacts/{ref}/events limit",
                "GET /instances/{ref}/consoledata length", "POST /artifacts/{ref}/versions max_versions",
            ] {
                #expect(found.contains(expected), "the document's walk missed \(expected): \(found.sorted())")
            }
            // Real objects for the paths to name.
            _ = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.0.0.0/24", "name": "net"])
            let instance = try await api.send(.post, "/instances", token: token, body: ["name": "web", "cpus": 1, "memory": 512, "disk": [["size": 8]]])
            // Created, as an agent would leave it: a snapshot is only taken of a created instance.
            if let uuid = instance["uuid"]?.stringValue.flatMap(UUID.init(uuidString:)) {
                for next in [InstanceState.preflight, .creating, .created] { try await fixture.store.setInstanceState(uuid: uuid, to: next) }
            }
            // An artifact from an upload: nothing is fetched.
            let upload = try #require(try await api.send(.post, "/upload", token: token)["uuid"]?.stringValue)
            _ = try await api.send(.post, "/upload/\(upload)", token: token, raw: ByteBuffer(repeating: 7, count: 4096))
            let artifact = try await api.send(.post, "/artifacts/upload/image", token: token, body: ["upload_uuid": .string(upload)])
            let objects = [
                "instances": try #require(instance["uuid"]?.stringValue, "\(instance.text)"), "networks": "net",
                "artifacts": try #require(artifact["uuid"]?.stringValue, "\(artifact.text)"),
            ]
            var tried = 0
            let allFields = fields + [NumericField(method: "post", path: "/instances", location: ["metadata", "affinity", "x"])]
            for (index, field) in allFields.enumerated() {
                let path = Self.concrete(field.path, objects: objects)
                let valid = Self.validBody(field, name: "probe\(index)")
                let accepted = try await Self.send(api, field.method, path, token: token, text: String(decoding: try JSONEncoder().encode(valid), as: UTF8.self))
                #expect(accepted.status == .ok, "\(field) refused its valid body: \(accepted.status.code) \(accepted.text)")
                var hostileBody = Self.placing(.string(Self.placeholder), in: valid, at: field.location)
                if field.path == "/instances" { hostileBody = Self.placing("abused", in: hostileBody, at: ["name"]) }
                let template = String(decoding: try JSONEncoder().encode(hostileBody), as: UTF8.self)
                // -1 is a real value in two places: an anti-affinity score, and Shaken Fist's "the
                // whole console log". There it must only not be a server error.
                let legitimate: Set<String> = field.location.last == "x" || field.location == ["length"] ? ["-1", "\"-1\""] : []
                for hostile in Self.hostileTokens {
                    let text = template.replacingOccurrences(of: "\"\(Self.placeholder)\"", with: hostile)
                    let response = try await Self.send(api, field.method, path, token: token, text: text)
                    let expected = legitimate.contains(hostile) ? 200..<500 : 400..<500
                    #expect(expected.contains(response.status.code), "\(field) = \(hostile): \(response.status.code) \(response.text)")
                    if response.status == .ok, field.path == "/instances", let uuid = response["uuid"]?.stringValue {
                        _ = try await api.send(.delete, "/instances/\(uuid)", token: token)
                    }
                    tried += 1
                }
            }
            // The same scores set as instance metadata, by both metadata routes.
            for hostile in Self.hostileTokens where !["-1", "\"-1\""].contains(hostile) {
                let post = try await Self.send(api, "post", "/instances/web/metadata", token: token, text: "{\"key\": \"affinity\", \"value\": {\"x\": \(hostile)}}")
                let put = try await Self.send(api, "put", "/instances/web/metadata/affinity", token: token, text: "{\"value\": {\"x\": \(hostile)}}")
                #expect((400..<500).contains(post.status.code), "POST affinity \(hostile): \(post.status.code) \(post.text)")
                #expect((400..<500).contains(put.status.code), "PUT affinity \(hostile): \(put.status.code) \(put.text)")
            }
            // Query and path integers.
            let pending = try #require(try await api.send(.post, "/upload", token: token)["uuid"]?.stringValue)
            for text in ["1e300", "9223372036854775808", "18446744073709551616", "-1", "1.5", "NaN", "0x10", "%20", "-9223372036854775809", ""] {
                for name in ["offset", "limit"] {
                    let response = try await api.send(.get, "/blobs/\(UUID().uuidString.lowercased())/data?\(name)=\(text)", token: token)
                    #expect((400..<500).contains(response.status.code), "\(name)=\(text): \(response.status.code) \(response.text)")
                }
                let truncate = try await api.send(.post, "/upload/\(pending)/truncate/\(text.isEmpty ? "9223372036854775807" : text)", token: token)
                #expect((400..<500).contains(truncate.status.code), "truncate to \(text): \(truncate.status.code) \(truncate.text)")
            }
            #expect(tried >= 9 * Self.hostileTokens.count)
            #expect(try await api.send(.get, "/").status == .ok)
        }
    }

    @Test("a Content-Length that is huge, negative, fractional or doubled is refused, and the server answers after")
    func hostileContentLength() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        var logger = Logger(label: "sfnode.test.api")
        logger.logLevel = .critical
        let router = try await buildRouter(configuration: fixture.configuration, control: fixture.control, auth: fixture.store, storage: fixture.storage, logger: logger)
        let application = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
        try await application.test(.live) { client in
            let port = try #require(client.port)
            for length in ["99999999999999999999999", "-1", "1.5", "1e3", "abc", "2, 3"] {
                let request = "POST /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(length)\r\n\r\n{}"
                let status = try await Self.rawExchange(port: port, request)
                // No answer at all (the parser closed the connection) is a refusal too.
                #expect(status.map { (400..<500).contains($0) } ?? true, "Content-Length \(length): \(status.map(String.init) ?? "closed")")
            }
            // A length the parser takes but the body never reaches: the body stream ends with
            // NIOHTTP1's HTTPParserError, which ErrorMiddleware leaves to Hummingbird (400 and close).
            for path in ["/auth", "/instances"] {
                let cut = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9223372036854775807\r\n\r\n{}"
                let status = try await Self.rawExchange(port: port, cut)
                #expect(status.map { (400..<500).contains($0) } ?? true, "\(path), Content-Length 2^63 - 1, body cut short: \(status.map(String.init) ?? "closed")")
            }
            let doubled = "POST /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}"
            let status = try await Self.rawExchange(port: port, doubled)
            #expect(status.map { (400..<500).contains($0) } ?? true, "two Content-Lengths: \(status.map(String.init) ?? "closed")")
            let home = try await client.execute(uri: "/", method: .get) { $0.status }
            #expect(home == .ok)
        }
    }

    /// Like ``APIFixture/run(_:)``, with the fixture's node as this process's node (as `sfnode serve`
    /// has it), so that the console route reads a log rather than refusing for want of a node name.
    static func run(_ fixture: APIFixture, _ body: @escaping @Sendable (APIClient) async throws -> Void) async throws {
        var logger = Logger(label: "sfnode.test.api")
        logger.logLevel = .critical
        var settings = ControlSettings()
        settings.nodeName = "hv1"
        settings.storagePath = fixture.storage.path
        let control = Control(store: fixture.store, settings: settings, logger: logger)
        let router = try await buildRouter(configuration: fixture.configuration, control: control, auth: fixture.store, storage: fixture.storage, logger: logger)
        try await Application(router: router, logger: logger).test(.router) { client in try await body(APIClient(client: client)) }
    }

    /// Sends `request` to 127.0.0.1:`port`, ends the sending side, and returns the response's
    /// status code, or nil when the server closed without one. Off the cooperative pool: it blocks.
    static func rawExchange(port: Int, _ request: String) async throws -> Int? {
        try await Task.detached {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw APIFixtureError("socket: \(errno)") }
            defer { close(fd) }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { throw APIFixtureError("connect to 127.0.0.1:\(port): \(errno)") }
            let bytes = Array(request.utf8)
            guard bytes.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else {
                throw APIFixtureError("send: \(errno)")
            }
            shutdown(fd, Int32(SHUT_WR))
            var response: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while response.count < 65536 {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                response += buffer[0..<count]
            }
            let text = String(decoding: response, as: UTF8.self)
            guard text.hasPrefix("HTTP/1.1 ") else { return nil }
            return Int(text.dropFirst(9).prefix(3))
        }.value
    }
}

extension JSONValue {
    /// The members, when this is an object.
    fileprivate var members: [String: JSONValue]? {
        if case .object(let members) = self { return members }
        return nil
    }
}
