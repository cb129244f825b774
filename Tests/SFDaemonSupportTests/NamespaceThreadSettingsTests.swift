import Foundation
import Testing

@testable import SFDaemonSupport

/// SFNODE_NAMESPACE_THREADS: the network namespaces' threads the agent keeps between uses.
@Suite("namespace thread setting")
struct NamespaceThreadSettingsTests {
    @Test func defaultAndGoodValues() throws {
        #expect(NodeConfiguration.defaults(nodeName: "n").namespaceThreads == 64)
        for value in [1, 100_000] {
            let set = try NodeConfiguration.load(environment: ["SFNODE_NAMESPACE_THREADS": "\(value)"], defaultNodeName: "n")
            #expect(set.namespaceThreads == value)
        }
    }

    @Test("bad values name the setting", arguments: ["0", "100001", "-1", "sixty"])
    func badValues(value: String) throws {
        let error = try #require(throws: ConfigurationError.self) {
            try NodeConfiguration.load(environment: ["SFNODE_NAMESPACE_THREADS": value], defaultNodeName: "n")
        }
        #expect(error.description.hasPrefix("SFNODE_NAMESPACE_THREADS: '\(value)' is not a whole number of threads from 1 to 100000"), "\(error)")
    }
}
