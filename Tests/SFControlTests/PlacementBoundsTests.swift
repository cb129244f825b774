import Foundation
@testable import SFControl
import SFStore
import Testing

/// Affinity scores are bounded integers and every sum placement makes saturates: no metadata a
/// tenant writes can trap the process (issue 13's first crash was `{"affinity": {"x": 1e300}}`).
@Suite struct PlacementBoundsTests {
    /// Values that are not scores in -10000...10000, each as JSON would bring them.
    static let hostileScores: [JSONValue] = [
        .number(1e300), .number(-1e300), .number(1.5), .number(-0.5), .number(9.223372036854775807e18), .number(1.8446744073709552e19),
        .number(10_001), .number(-10_001), .string("9223372036854775807"), .string("-9223372036854775808"), .string("NaN"),
        .string("inf"), .string("-Infinity"), .string("1e3"), .string("1.5"), .string(" 5"), .string(""), .bool(true), .null,
        .array([.number(1)]), .object([:]),
    ]

    @Test("a create with an affinity score that is not an integer in -10000...10000 is refused naming the tag", arguments: hostileScores)
    func hostileScoreIsRefusedAtCreate(score: JSONValue) async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        var request = ControlFixture.request(network: nil)
        request.metadata = ["affinity": .object(["ok": .number(5), "web-tier": score])]
        let error = await controlError { _ = try await fixture.control.createInstance(request) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.hasPrefix("affinity dictionary values should be integers from -10000 to 10000: tag \"web-tier\" has ") == true, "\(error?.message ?? "accepted")")
        #expect(try await fixture.store.instances(node: nil).isEmpty)
        // The same value set later as instance metadata is refused the same way.
        var plain = ControlFixture.request("plain", network: nil)
        plain.metadata = [:]
        let (instance, _) = try await fixture.control.createInstance(plain)
        let later = await controlError {
            try await fixture.control.setMetadata(.instance, instance.uuid, key: "affinity", value: .object(["web-tier": score]))
        }
        #expect(later?.code == .invalidArgument && later?.message.contains("\"web-tier\"") == true)
    }

    @Test("the edges of the range, as numbers and as strings, are accepted")
    func edgesAreAccepted() async throws {
        let fixture = try await ControlFixture()
        defer { fixture.cleanup() }
        var request = ControlFixture.request(network: nil)
        request.metadata = ["affinity": .object(["a": .number(10_000), "b": .number(-10_000), "c": .string("-10000"), "d": .number(0)])]
        #expect(try await fixture.control.createInstance(request).0.node == "hv1")
    }

    @Test("duplicate tags on many instances add up, and the highest score wins")
    func duplicateTagsAddUp() async throws {
        let fixture = try await ControlFixture(nodes: [ControlFixture.hypervisor("hv1", cpus: 64), ControlFixture.hypervisor("hv2", cpus: 64)])
        defer { fixture.cleanup() }
        for index in 0..<3 {
            var tagged = ControlFixture.request("tagged\(index)", network: nil)
            tagged.metadata = ["tags": .array(Array(repeating: .string("a"), count: 50))]
            tagged.forcePlacement = "hv2"
            _ = try await fixture.control.createInstance(tagged)
        }
        var request = ControlFixture.request("follower", network: nil)
        request.metadata = ["affinity": .object(["a": .number(10_000)])]
        let (placed, _) = try await fixture.control.createInstance(request)
        #expect(placed.node == "hv2")
        let audit = try await fixture.store.events(objectType: "instance", objectUUID: placed.uuid.lowercasedString).map(\.message)
        #expect(audit.contains("schedule placed on hv2 (affinity score 1500000)"), "\(audit)")
    }

    @Test("sums saturate instead of trapping, and out-of-range stored scores are ignored")
    func sumsSaturate() {
        #expect(saturatingSum(Int.max, 10_000) == Int.max)
        #expect(saturatingSum(Int.min, -10_000) == Int.min)
        #expect(saturatingSum(Int.max - 5, 5) == Int.max)
        #expect(saturatingSum(-3, 5) == 2)
        var score = 0
        for _ in 0..<4 { score = saturatingSum(score, Int.max / 3) }
        #expect(score == Int.max)
        // Metadata stored before the range was checked (or written straight to the store) is read
        // without a trap: what is not a score in range is left out.
        let stored: [String: JSONValue] = ["affinity": .object(["x": .number(1e300), "y": .string("9223372036854775807"), "z": .number(7)])]
        #expect(Control.affinity(stored) == ["z": 7])
        #expect(Control.scaled(Int.max, by: 16) == Int.max)
        #expect(Control.scaled(4, by: .nan) == 0 && Control.scaled(4, by: -1) == 0 && Control.scaled(4, by: 1.5) == 6)
    }
}
