import Foundation
import HTTPTypes
import SFAPI
import SFControl
import SFStore
import Testing

/// Namespace and key names are ASCII: `café` is refused however it is written, and namespaces a
/// store already holds under two canonically equivalent names stay apart, byte for byte.
@Suite("API names in one normal form")
struct NameNormalFormTests {
    static let composed = "caf\u{E9}"
    static let decomposed = "cafe\u{301}"

    @Test("café is refused as a namespace and as a key name, written NFC or NFD")
    func refused() async throws {
        #expect(Self.composed == Self.decomposed, "Swift's == takes them for one name, which is the hazard")
        #expect(!Self.composed.utf8.elementsEqual(Self.decomposed.utf8))
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            for name in [Self.composed, Self.decomposed] {
                let namespace = try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": .string(name)])
                #expect(namespace.status == .badRequest && namespace.text.contains("ASCII"), "\(namespace.text)")
                let key = try await api.send(.post, "/auth/namespaces/system/keys", token: admin, body: ["key_name": .string(name), "key": "some-key-value"])
                #expect(key.status == .badRequest && key.text.contains("ASCII"), "\(key.text)")
            }
            #expect(try await api.send(.post, "/auth/namespaces", token: admin, body: ["namespace": "cafe.team_1-a"]).status == .ok)
        }
    }

    @Test("two namespaces a store holds as NFC and NFD café stay apart: neither sees nor keys the other")
    func legacyNamesStayApart() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        // Made before names were checked (straight in the store, as an older sfnode could have).
        for (name, secret) in [(Self.composed, "composed-key"), (Self.decomposed, "decomposed-key")] {
            try await fixture.store.createNamespace(name)
            try await fixture.control.addKey(namespace: name, name: "k", secret: secret, hasher: Authenticator.hash)
        }
        try await fixture.run { api in
            let nfd = try await api.token(namespace: Self.decomposed, key: "decomposed-key")
            let nfc = try await api.token(namespace: Self.composed, key: "composed-key")
            #expect(try await api.send(.post, "/auth", body: ["namespace": .string(Self.composed), "key": "decomposed-key"]).status == .unauthorized)
            let nfcPath = "/auth/namespaces/caf%C3%A9"
            let nfdPath = "/auth/namespaces/cafe%CC%81"
            #expect(try await api.send(.get, nfcPath, token: nfd).status == .notFound)
            #expect(try await api.send(.post, nfcPath + "/keys", token: nfd, body: ["key_name": "stolen", "key": "takeover-key"]).status == .notFound)
            #expect(try await api.send(.get, nfdPath + "/keys", token: nfd).json == ["k"])
            #expect(try await api.send(.get, nfcPath + "/keys", token: nfc).json == ["k"])
            let keys = try await fixture.store.keys(namespace: Self.composed)
            #expect(keys.map(\.name) == ["k"])
        }
    }
}
