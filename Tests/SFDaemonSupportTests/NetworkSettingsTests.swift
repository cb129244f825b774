import Foundation
import SFSystem
import Testing

@testable import SFDaemonSupport

/// The network DNS and ping settings: defaults, what each accepts, and the message for what not.
@Suite("network DNS and ping settings")
struct NetworkSettingsTests {
    @Test func defaultsAndGoodValues() throws {
        let defaults = NodeConfiguration.defaults(nodeName: "n")
        #expect(defaults.dnsZone == "shakenfist" && defaults.dnsServer == "auto" && defaults.pingsAtOnce == 8)
        let set = try NodeConfiguration.load(
            environment: ["SFNODE_DNS_ZONE": "Cloud.Example", "SFNODE_DNS_SERVER": "192.0.2.53", "SFNODE_PINGS_AT_ONCE": "256"],
            defaultNodeName: "n")
        #expect(set.dnsZone == "cloud.example" && set.resolvedDNSServer() == IPv4Address("192.0.2.53") && set.pingsAtOnce == 256)
        for none in ["", "none", "NONE"] {
            #expect(try NodeConfiguration.load(environment: ["SFNODE_DNS_SERVER": none], defaultNodeName: "n").resolvedDNSServer() == nil)
        }
        // The file form round-trips through the same parsing.
        let decoded = try NodeConfiguration.decode(json: try JSONEncoder().encode(set), source: "test", defaults: defaults)
        #expect(decoded == set)
    }

    @Test(
        "bad values name the setting",
        arguments: [
            ("SFNODE_DNS_ZONE", "", "SFNODE_DNS_ZONE: '' is not a DNS zone"),
            ("SFNODE_DNS_ZONE", "a..b", "SFNODE_DNS_ZONE: 'a..b' is not a DNS zone"),
            ("SFNODE_DNS_ZONE", "-a", "SFNODE_DNS_ZONE: '-a' is not a DNS zone"),
            ("SFNODE_DNS_ZONE", "a_b", "SFNODE_DNS_ZONE: 'a_b' is not a DNS zone"),
            ("SFNODE_DNS_ZONE", "a/b\nc", "SFNODE_DNS_ZONE: 'a/b\nc' is not a DNS zone"),
            ("SFNODE_DNS_ZONE", String(repeating: "a.", count: 60) + "a", "SFNODE_DNS_ZONE: '" + String(repeating: "a.", count: 60) + "a' is not a DNS zone"),
            ("SFNODE_DNS_SERVER", "8.8.8", "SFNODE_DNS_SERVER: '8.8.8' is not auto, none or an IPv4 address"),
            ("SFNODE_DNS_SERVER", "2001:db8::1", "SFNODE_DNS_SERVER: '2001:db8::1' is not auto, none or an IPv4 address"),
            ("SFNODE_PINGS_AT_ONCE", "0", "SFNODE_PINGS_AT_ONCE: '0' is not a whole number of pings from 1 to 256"),
            ("SFNODE_PINGS_AT_ONCE", "257", "SFNODE_PINGS_AT_ONCE: '257' is not a whole number of pings from 1 to 256"),
        ])
    func badValues(variable: String, value: String, message: String) throws {
        let error = try #require(throws: ConfigurationError.self) {
            try NodeConfiguration.load(environment: [variable: value], defaultNodeName: "n")
        }
        #expect(error.description.hasPrefix(message), "\(error)")
    }

    /// `auto` takes the first nameserver a namespace can reach: never a loopback stub resolver.
    @Test func theAutomaticUpstreamSkipsLoopbackAndGarbage() throws {
        let text = """
            # systemd-resolved's stub first
            nameserver 127.0.0.53
            nameserver fe80::1
            nameserver   not-an-address
            search example.com
            nameserver\t192.0.2.1
            nameserver 192.0.2.2
            """
        #expect(NodeConfiguration.firstNameserver(in: text) == IPv4Address("192.0.2.1"))
        #expect(NodeConfiguration.firstNameserver(in: "nameserver 127.0.0.1\n") == nil)
        #expect(NodeConfiguration.firstNameserver(in: "") == nil)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resolv-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(NodeConfiguration.defaults(nodeName: "n").resolvedDNSServer(resolvConf: path) == IPv4Address("192.0.2.1"))
        #expect(NodeConfiguration.defaults(nodeName: "n").resolvedDNSServer(resolvConf: path + ".missing") == nil)
    }
}
