import AsyncHTTPClient
import Foundation
import NIOCore
import SFAPI
import SFControl
import SFStore

/// `sfnode events … --follow --api`: follows an object's events through a REST API's streaming
/// events route from any machine, as the real client's configuration names the API and its key
/// (`SHAKENFIST_API_URL`, `SHAKENFIST_NAMESPACE`, `SHAKENFIST_KEY`, else `~/.shakenfist`, else
/// `/etc/sf/shakenfist.json`). A follow the server ends (its time limit, a restart) is taken up
/// again, without printing any event twice.
struct RemoteEvents {
    let configuration: ClientConfiguration

    /// The configuration the real client would use.
    static func clientConfiguration() throws -> ClientConfiguration {
        let environment = ProcessInfo.processInfo.environment
        if let url = environment["SHAKENFIST_API_URL"], let namespace = environment["SHAKENFIST_NAMESPACE"],
            let key = environment["SHAKENFIST_KEY"]
        {
            return ClientConfiguration(namespace: namespace, key: key, apiurl: url)
        }
        let paths = [NSHomeDirectory() + "/.shakenfist", "/etc/sf/shakenfist.json"]
        for path in paths {
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            do {
                return try JSONDecoder().decode(ClientConfiguration.self, from: data)
            } catch {
                throw RemoteEventsError("\(path) is not a client configuration (namespace, key, apiurl): \(error)")
            }
        }
        throw RemoteEventsError(
            "no API to follow through: set SHAKENFIST_API_URL, SHAKENFIST_NAMESPACE and SHAKENFIST_KEY, or write \(paths.joined(separator: " or "))")
    }

    /// The longest line of a stream taken as an event.
    static let maxLineBytes = 1 << 20

    /// The API's events route of an object, or nil for a type it has none for.
    static func path(_ type: ObjectType, _ reference: String) -> String? {
        switch type {
        case .instance: return "/instances/\(reference)/events"
        case .network: return "/networks/\(reference)/events"
        case .artifact: return "/artifacts/\(reference)/events"
        case .node: return "/nodes/\(reference)/events"
        default: return nil
        }
    }

    /// Follows `path` until cancelled, handing each event to `print` once, oldest first; the first
    /// connection starts with the last `backlog` events.
    func follow(path: String, backlog: Int, print: (RemoteEvent) throws -> Void) async throws {
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)
        do {
            try await follow(http, path: path, backlog: backlog, print: print)
        } catch {
            try? await http.shutdown()
            throw error
        }
        try? await http.shutdown()
    }

    private func follow(_ http: HTTPClient, path: String, backlog: Int, print: (RemoteEvent) throws -> Void) async throws {
        var printed = RecentlyPrinted()
        var limit = backlog
        while !Task.isCancelled {
            let token = try await authenticate(http)
            var request = HTTPClientRequest(url: configuration.apiurl + path + "?follow=true&limit=\(max(limit, 1))")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let response = try await http.execute(request, timeout: .hours(24))
            guard response.status == .ok else {
                let body = try await response.body.collect(upTo: 64 << 10)
                throw RemoteEventsError("GET \(path) answered \(response.status.code): \(String(buffer: body))")
            }
            var pending: [UInt8] = []
            for try await chunk in response.body {
                pending.append(contentsOf: chunk.readableBytesView)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(pending[..<newline])
                    pending.removeSubrange(...newline)
                    // Blank lines are the server's heartbeats.
                    guard !line.isEmpty else { continue }
                    let event = try JSONDecoder().decode(RemoteEvent.self, from: Data(line))
                    if printed.isNew(event) { try print(event) }
                }
                // An event is a few hundred bytes: a server that never ends its line is not an API.
                guard pending.count <= Self.maxLineBytes else {
                    throw RemoteEventsError("GET \(path) sent a line longer than \(Self.maxLineBytes) bytes; it is not an events stream")
                }
            }
            // The server ended the follow: again, with enough backlog to cover what came meanwhile.
            limit = 100
        }
    }

    private func authenticate(_ http: HTTPClient) async throws -> String {
        var request = HTTPClientRequest(url: configuration.apiurl + "/auth")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let body = try JSONEncoder().encode(["namespace": configuration.namespace, "key": configuration.key])
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await http.execute(request, timeout: .seconds(30))
        struct Token: Decodable { let access_token: String }
        let data = Data(buffer: try await response.body.collect(upTo: 64 << 10))
        guard response.status == .ok else {
            throw RemoteEventsError(
                "POST \(configuration.apiurl)/auth as \(configuration.namespace) answered \(response.status.code): \(String(decoding: data, as: UTF8.self))")
        }
        // Never the body itself in an error: it holds the token.
        guard let token = try? JSONDecoder().decode(Token.self, from: data) else {
            throw RemoteEventsError("POST \(configuration.apiurl)/auth answered 200 without an access_token")
        }
        return token.access_token
    }
}

/// An event as the API sends it.
struct RemoteEvent: Codable, Hashable {
    let type: String
    let timestamp: Double
    let fqdn: String
    let duration: Double?
    let message: String
}

/// The events printed at the latest timestamp seen: a reconnect's backlog repeats what came before
/// it, and only events not yet printed go out again. Bounded to one timestamp's events.
struct RecentlyPrinted {
    private var latest = -Double.infinity
    private var atLatest: Set<RemoteEvent> = []

    mutating func isNew(_ event: RemoteEvent) -> Bool {
        if event.timestamp < latest { return false }
        if event.timestamp > latest {
            latest = event.timestamp
            atLatest = []
        }
        return atLatest.insert(event).inserted
    }
}

struct RemoteEventsError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
