import Foundation
import SFTestSupport
import Testing

/// The real client's namespace, trust, metadata, node and lock calls against `sfnode serve`, as a
/// Shaken Fist user makes them (issue 14); no guest is booted.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root and libvirtd"))
struct ParityClientTests {
    @Test func theRealClientManagesTrustsMetadataNodesLocksAndDeletesANode() async throws {
        let flow = try await CommandLineFlow.start(serving: true)
        try await flow.finishing {
            let admin = try RealClient(flow: flow)
            for (name, key) in [("alpha", "alpha-key-1"), ("beta", "beta-key-12")] {
                try admin.sfClientText(["namespace", "create", name])
                try admin.sfClientText(["namespace", "add-key", name, "deploy", key])
            }
            let alpha = admin.acting(as: "alpha", key: "alpha-key-1")
            let beta = admin.acting(as: "beta", key: "beta-key-12")
            let image = flow.directory + "/alpha.img"
            try Data(repeating: 0x5a, count: 1 << 20).write(to: URL(fileURLWithPath: image))
            let artifact = try #require(try alpha.python(["upload-artifact", "img", image]) as? [String: Any])
            let artifactUUID = try #require(artifact["uuid"] as? String)
            #expect((try? beta.python(["call", "get_artifact", artifactUUID])) == nil, "beta saw alpha's private artifact")

            let trusted = try #require(try alpha.sfClient(["namespace", "add-trust", "alpha", "beta"]) as? [String: Any])
            #expect((trusted["trust"] as? [String: [String]])?["full"] == ["system", "beta"], "\(trusted)")
            let seen = try #require(try beta.python(["call", "get_artifact", artifactUUID]) as? [String: Any])
            #expect(seen["namespace"] as? String == "alpha")
            // sf-client's namespace list reads every namespace's trust.
            #expect(try admin.sfClientText(["namespace", "list"]).contains("beta"))
            _ = try alpha.sfClient(["namespace", "remove-trust", "alpha", "beta"])
            #expect((try? beta.python(["call", "get_artifact", artifactUUID])) == nil, "beta still sees alpha's artifact")

            _ = try alpha.sfClient(["namespace", "set-metadata", "alpha", "team", "blue"])
            #expect(try alpha.python(["call", "get_namespace_metadata", "alpha"]) as? [String: String] == ["team": "blue"])

            _ = try admin.python(["call", "set_node_metadata_item", flow.nodeName, "rack", "r12"])
            let node = try #require(try admin.sfClient(["node", "show", flow.nodeName]) as? [String: Any])
            #expect(node["metadata"] as? [String: String] == ["rack": "r12"], "\(node)")
            #expect(try admin.sfClient(["admin", "lock", "list"]) is [String: Any])

            try admin.sfClientText(["namespace", "delete", "alpha"])
            let gone = try #require(try admin.python(["call", "get_artifact", artifactUUID]) as? [String: Any])
            #expect(gone["state"] as? String == "deleted", "\(gone)")

            // Last, since the node then takes no more work: the operator says it is gone.
            let deleted = try #require(try admin.sfClient(["node", "delete", flow.nodeName]) as? [String: Any])
            #expect(deleted["state"] as? String == "deleted", "\(deleted)")
            #expect(try admin.sfClientText(["node", "list"]).contains("deleted"))
        }
    }
}
