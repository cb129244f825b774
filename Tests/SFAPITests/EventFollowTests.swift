import Foundation
import Logging
import SFAPI
import SFStore
import SFSystem
import SFTestSupport
import Testing

@Suite("API events, followed live")
struct EventFollowTests {
    static let quiet: Logger = {
        var logger = Logger(label: "sfnode.test.api")
        logger.logLevel = .critical
        return logger
    }()

    @Test("two followers see each new event; one hangs up and its slot comes back; the namespace's limit and another's object are refused")
    func twoFollowersAndADisconnect() async throws {
        var limits = APILimits()
        limits.followHeartbeat = .milliseconds(200)
        limits.followsPerNamespace = 2
        let fixture = try await APIFixture(limits: limits)
        defer { fixture.cleanup() }
        let app = try await buildApplication(
            configuration: fixture.configuration, control: fixture.control, auth: fixture.store, storage: fixture.storage, logger: Self.quiet)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let api = APIClient(client: client)
            let admin = try await api.token()
            let tenant = try await api.tenant("followers", admin: admin)
            let other = try await api.tenant("nosy", admin: admin)
            let made = try await api.send(
                .post, "/networks", token: tenant, body: ["netblock": "10.78.0.0/24", "name": "followed", "provide_dhcp": false, "provide_nat": false])
            let network = try #require(made["uuid"]?.stringValue)
            let path = "/networks/\(network)/events?follow=true&limit=5"
            func record(_ message: String) async throws {
                try await fixture.store.record(Event(objectType: "network", objectUUID: network, type: .audit, fqdn: "hv1", message: message))
            }

            // A HEAD of a follow answers its head and holds no slot after: both followers below still fit.
            let head = try await runBlocking { () throws -> String in
                let connection = try RawHTTPConnection(port: port)
                try connection.send(Array("HEAD \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(tenant)\r\n\r\n".utf8))
                return try connection.readStream(until: "\r\n\r\n", seconds: 5)
            }
            #expect(head.hasPrefix("HTTP/1.1 200"), "\(head)")

            let (first, second) = try await runBlocking { () throws -> (RawHTTPConnection, RawHTTPConnection) in
                let first = try RawHTTPConnection(port: port)
                let second = try RawHTTPConnection(port: port)
                for connection in [first, second] { try connection.send(Self.get(path, token: tenant)) }
                return (first, second)
            }
            // Each starts with the backlog, as JSON lines, and hears the heartbeat.
            for connection in [first, second] {
                let start = try await runBlocking { try connection.readStream(until: "db record created", seconds: 10) }
                #expect(start.hasPrefix("HTTP/1.1 200") && start.lowercased().contains("content-type: application/x-ndjson"), "\(start)")
                #expect(try await runBlocking { try connection.readStream(until: "1\r\n\n\r\n", seconds: 5) }.contains("1\r\n\n\r\n"))
            }
            try await record("the first live event")
            for connection in [first, second] {
                let line = try await runBlocking { try connection.readStream(until: "the first live event", seconds: 10) }
                #expect(line.contains(#""type":"audit""#), "\(line)")
            }

            // A third follow of this namespace is over its limit; another namespace cannot follow at all.
            let third = try await runBlocking { try RawHTTPConnection(port: port).request("GET", path, token: tenant) }
            #expect(third.status == 429 && third.body.contains("follows 2 objects' events already"), "\(third)")
            let nosy = try await runBlocking { try RawHTTPConnection(port: port).request("GET", path, token: other) }
            #expect(nosy.status == 404, "\(nosy)")

            // The first hangs up: the next heartbeat finds it gone and frees its slot, while the
            // second goes on hearing events.
            first.hangUp()
            try await record("after the hang-up")
            #expect(try await runBlocking { try second.readStream(until: "after the hang-up", seconds: 10) }.contains("after the hang-up"))
            // The replacement's backlog holds the event; its first read may already have brought it.
            let backlog = try await runBlocking { () throws -> String? in
                for _ in 0..<50 {
                    let connection = try RawHTTPConnection(port: port)
                    try connection.send(Self.get(path, token: tenant))
                    let start = try connection.readStream(until: "\r\n\r\n", seconds: 5)
                    guard start.hasPrefix("HTTP/1.1 200") else {
                        Thread.sleep(forTimeInterval: 0.1)
                        continue
                    }
                    return start.contains("after the hang-up") ? start : start + (try connection.readStream(until: "after the hang-up", seconds: 10))
                }
                return nil
            }
            let replacement = try #require(backlog, "the slot of the follower who hung up never came back")
            #expect(replacement.contains("after the hang-up"), "\(replacement)")
        }
    }

    @Test("the events route's query is checked: a limit that is not a whole number, or out of range, and a follow or event type it does not know are refused by name")
    func hostileQueries() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let made = try await api.send(
                .post, "/networks", token: admin, body: ["netblock": "10.79.0.0/24", "name": "queried", "provide_dhcp": false, "provide_nat": false])
            let events = "/networks/\(try #require(made["uuid"]?.stringValue))/events"
            for (query, message) in [
                ("limit=99999999999999999999999", "is not a whole number"), ("limit=-5", "is not a positive number"),
                ("limit=0", "is not a positive number"), ("limit=1e3", "is not a whole number"), ("follow=maybe", "is not true or false"),
                ("event_type=bogus", "invalid event type bogus"), ("follow=true&limit=-1", "is not a positive number"),
            ] {
                let answer = try await api.send(.get, events + "?" + query, token: admin)
                #expect(answer.status == .badRequest && answer.text.contains(message), "\(query): \(answer.status) \(answer.text)")
            }
            // A limit past the store's is all of them, not an error.
            let all = try await api.send(.get, events + "?limit=\(Int.max)", token: admin)
            #expect(all.status == .ok, "\(all.text)")
        }
    }

    static func get(_ path: String, token: String) -> [UInt8] {
        Array("GET \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n\r\n".utf8)
    }
}
