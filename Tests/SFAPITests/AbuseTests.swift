import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SFAPI
import SFControl
import SFStore
import SFSystem
import SFTestSupport
import Synchronization
import Testing

/// The API under abuse: bodies too large or too deep, slow clients, and uploads that must not
/// stall everyone else.
@Suite("API under abuse")
struct AbuseTests {
    @Test("POST /auth takes at most 4 KiB (413), other JSON bodies their own limit (413), and deep nesting is 400")
    func bodyLimits() async throws {
        var limits = APILimits()
        limits.jsonBodyBytes = 64 << 10
        let fixture = try await APIFixture(limits: limits)
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let padding = JSONValue.string(String(repeating: "p", count: 5000))
            let auth = try await api.send(.post, "/auth", body: ["namespace": "system", "key": padding])
            #expect(auth.status == .contentTooLarge && auth.text.contains("4096"), "\(auth.text)")
            let token = try await api.token()
            let large = JSONValue.string(String(repeating: "n", count: 70 << 10))
            let network = try await api.send(.post, "/networks", token: token, body: ["netblock": "10.0.0.0/24", "name": large])
            #expect(network.status == .contentTooLarge && network.text.contains("65536"), "\(network.text)")
            let deep = ByteBuffer(string: "{\"namespace\": " + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "}")
            let nested = try await api.send(.post, "/auth", raw: deep, headers: [.contentType: "application/json"])
            #expect(nested.status == .badRequest && nested.text.contains("deeper than 32"), "\(nested.text)")
            // Brackets inside strings are data, not nesting.
            let quoted = JSONValue.string(String(repeating: "[", count: 100))
            #expect(try await api.send(.post, "/auth", body: ["namespace": quoted, "key": "guess-guess"]).status == .unauthorized)
        }
    }

    @Test("a live server closes a connection that does not finish its request head in time")
    func slowHeadIsClosed() async throws {
        var limits = APILimits()
        limits.headerTimeout = .seconds(1)
        let fixture = try await APIFixture(limits: limits)
        defer { fixture.cleanup() }
        let app = try await buildApplication(
            configuration: fixture.configuration, control: fixture.control, auth: fixture.store, storage: fixture.storage, logger: Self.quiet)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let closed = try await runBlocking { () throws -> Bool in
                let connection = try RawHTTPConnection(port: port)
                try connection.send(Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8))
                // Never finished: the server must hang up within the timeout (and the test's 10 s bound).
                return connection.waitForClose(seconds: 10)
            }
            #expect(closed)
            // A client that sends its head in time is answered (on a connection of its own: the
            // test client's idle one was closed by the same timeout).
            let answered = try await runBlocking { try RawHTTPConnection(port: port).request("GET", "/").status }
            #expect(answered == 200)
        }
    }

    @Test("two large uploads run while GET / still answers")
    func uploadsDoNotStallTheAPI() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        let app = try await buildApplication(
            configuration: fixture.configuration, control: fixture.control, auth: fixture.store, storage: fixture.storage, logger: Self.quiet)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let api = APIClient(client: client)
            let token = try await api.token()
            let uploads = try await (0..<2).asyncMap { _ in try #require(try await api.send(.post, "/upload", token: token)["uuid"]?.stringValue) }
            let chunks = 24
            let finished = FinishedCount()
            let running = uploads.map { upload in
                Task {
                    defer { finished.add() }
                    return try await runBlocking { try RawHTTPConnection.upload(port: port, token: token, uuid: upload, chunks: chunks) }
                }
            }
            var answered = 0
            // Each GET on a fresh loopback connection, from a blocking thread like the uploads.
            while finished.value < running.count {
                let status = try await runBlocking { try RawHTTPConnection(port: port).request("GET", "/").status }
                #expect(status == 200)
                answered += 1
            }
            for upload in running { #expect(try await upload.value == Int64(chunks) << 22) }
            #expect(answered > 0)
        }
    }

    static var quiet: Logger {
        var logger = Logger(label: "sfnode.test.api")
        logger.logLevel = .critical
        return logger
    }
}

/// How many of a test's background jobs have finished.
final class FinishedCount: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
