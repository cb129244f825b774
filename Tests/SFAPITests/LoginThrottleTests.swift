import Foundation
import HTTPTypes
import NIOCore
import Testing

@testable import SFAPI

/// Logins under attack: failures throttled per namespace and per address, the bcrypt gate fair
/// and bounded, unknown namespaces indistinguishable from wrong keys, keys bounded in number,
/// length and content.
@Suite("API login throttling and keys")
struct LoginThrottleTests {
    static func fixture(perNamespace: Int = 100, perAddress: Int = 100, keys: Int = 32) async throws -> APIFixture {
        var limits = APILimits()
        limits.loginFailuresPerNamespace = perNamespace
        limits.loginFailuresPerAddress = perAddress
        limits.keysPerNamespace = keys
        return try await APIFixture(limits: limits)
    }

    static func makeNamespace(_ api: APIClient, _ admin: String, _ name: String, key: String) async throws {
        let made = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": .string(name), "key_name": "k", "key": .string(key)])
        #expect(made.status == .ok, "\(made.text)")
    }

    @Test("a login flood on one namespace is 429 with Retry-After, its real key too, while another namespace still logs in")
    func floodPerNamespace() async throws {
        let fixture = try await Self.fixture(perNamespace: 3)
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            try await Self.makeNamespace(api, admin, "victim", key: "victim-key-1")
            try await Self.makeNamespace(api, admin, "bystander", key: "bystander-key")
            for _ in 0..<3 {
                #expect(try await api.send(.post, "/auth", body: ["namespace": "victim", "key": "guess-guess"]).status == .unauthorized)
            }
            let throttled = try await api.send(.post, "/auth", body: ["namespace": "victim", "key": "guess-guess"])
            #expect(throttled.status == .tooManyRequests && throttled.text.contains("victim"), "\(throttled.text)")
            #expect(Int(throttled.headers[.retryAfter] ?? "") ?? 0 >= 1)
            #expect(try await api.send(.post, "/auth", body: ["namespace": "victim", "key": "victim-key-1"]).status == .tooManyRequests)
            _ = try await api.token(namespace: "bystander", key: "bystander-key")
        }
    }

    @Test("failures from one address across namespaces are 429 too")
    func floodPerAddress() async throws {
        let fixture = try await Self.fixture(perAddress: 3)
        defer { fixture.cleanup() }
        try await fixture.run { api in
            for name in ["a", "b", "c"] {
                #expect(try await api.send(.post, "/auth", body: ["namespace": .string(name), "key": "guess-guess"]).status == .unauthorized)
            }
            let throttled = try await api.send(.post, "/auth", body: ["namespace": "system", "key": .string(APIFixture.adminKey)])
            #expect(throttled.status == .tooManyRequests && throttled.text.contains("address"), "\(throttled.text)")
        }
    }

    @Test("an unknown namespace answers exactly as a wrong key does: 401 unauthorized")
    func noEnumeration() async throws {
        let fixture = try await Self.fixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let unknown = try await api.send(.post, "/auth", body: ["namespace": "nowhere", "key": "guess-guess"])
            let wrong = try await api.send(.post, "/auth", body: ["namespace": "system", "key": "guess-guess"])
            #expect(unknown.status == .unauthorized && wrong.status == .unauthorized)
            #expect(unknown.text == wrong.text)
        }
    }

    @Test("keys with NUL or control characters, shorter than 8 or longer than 72 bytes are refused; a NUL login is 401")
    func keyContent() async throws {
        let fixture = try await Self.fixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            for bad in ["abcdefgh\u{0}ijk", "abc\tdefghij", "short", String(repeating: "k", count: 73)] {
                let refused = try await api.send(.post, "/auth/namespaces/system/keys", token: admin, body: ["key_name": "bad", "key": .string(bad)])
                #expect(refused.status == .badRequest, "\(bad.debugDescription): \(refused.text)")
            }
            let longest = String(repeating: "k", count: 72)
            #expect(try await api.send(.post, "/auth/namespaces/system/keys", token: admin, body: ["key_name": "long", "key": .string(longest)]).status == .ok)
            _ = try await api.token(key: longest)
            // bcrypt would stop at the NUL and compare "admin-secret-for-tests" alone.
            let smuggled = try await api.send(.post, "/auth", body: ["namespace": "system", "key": .string(APIFixture.adminKey + "\u{0}tail")])
            #expect(smuggled.status == .unauthorized)
        }
    }

    @Test("keys per namespace are capped (403 naming the setting); replacing a key is not a new one")
    func keyCount() async throws {
        let fixture = try await Self.fixture(keys: 2)
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            #expect(try await api.send(.post, "/auth/namespaces/system/keys", token: admin, body: ["key_name": "second", "key": "second-key"]).status == .ok)
            let third = try await api.send(.post, "/auth/namespaces/system/keys", token: admin, body: ["key_name": "third", "key": "third-key-x"])
            #expect(third.status == .forbidden && third.text.contains("SFNODE_KEYS_PER_NAMESPACE"), "\(third.text)")
            #expect(try await api.send(.post, "/auth/namespaces/system/keys", token: admin, body: ["key_name": "second", "key": "replaced-key"]).status == .ok)
            // Adding or replacing another key did not revoke this token.
            #expect(try await api.send(.get, "/instances", token: admin).status == .ok)
        }
    }

    @Test("the bcrypt gate bounds each namespace's waiters (429 past them) while another namespace still gets a place")
    func gateBounds() async throws {
        let gate = FairGate(limit: 1, queueLimit: 2)
        let (entered, enter) = AsyncStream.makeStream(of: Void.self)
        let (held, release) = AsyncStream.makeStream(of: Void.self)
        let holder = Task {
            try await gate.run(queue: "a") {
                enter.yield()
                for await _ in held { break }
            }
        }
        for await _ in entered { break }
        let waiters = (0..<2).map { _ in Task { try await gate.run(queue: "a") { 1 } } }
        while await gate.waiting("a") < 2 { try await Task.sleep(for: .milliseconds(5)) }
        await #expect(throws: APIError.self) { try await gate.run(queue: "a") { 1 } }
        let other = Task { try await gate.run(queue: "b") { 2 } }
        while await gate.waiting("b") < 1 { try await Task.sleep(for: .milliseconds(5)) }
        release.yield()
        try await holder.value
        #expect(try await other.value == 2)
        for waiter in waiters { #expect(try await waiter.value == 1) }
    }

    @Test("the throttle window ends: after it, the namespace may try again")
    func windowEnds() throws {
        let throttle = LoginThrottle(perNamespace: 2, perAddress: 100, window: .seconds(60))
        let start = ContinuousClock.now
        throttle.recordFailure(namespace: "n", address: "1.2.3.4", now: start)
        throttle.recordFailure(namespace: "n", address: "1.2.3.4", now: start)
        #expect(throws: APIError.self) { try throttle.check(namespace: "n", address: "5.6.7.8", now: start + .seconds(59)) }
        try throttle.check(namespace: "n", address: "5.6.7.8", now: start + .seconds(61))
        try throttle.check(namespace: "other", address: "1.2.3.4", now: start)
    }
}
