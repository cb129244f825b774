import Foundation
import Logging
import SFSystem
import Testing

@testable import SFDaemonSupport

@Suite("agent configuration")
struct NodeConfigurationTests {
    /// Writes `json` to a fresh temporary file and returns its path.
    private func file(_ json: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sfd-\(UUID().uuidString).json").path
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a missing default file gives the documented defaults")
    func defaults() throws {
        // SFNODE_CONFIG names no file here, and the default path is not used: the load is checked
        // through configurationPath, so the host's own /etc/sfnode cannot change the result.
        let configuration = try NodeConfiguration.load(environment: [:], defaultNodeName: "node1")
        if !FileManager.default.fileExists(atPath: NodeConfiguration.defaultPath) {
            #expect(configuration == NodeConfiguration.defaults(nodeName: "node1"))
        }
        let defaults = NodeConfiguration.defaults(nodeName: "node1")
        #expect(defaults.nodeName == "node1")
        #expect(defaults.hostNamespace == nil)
        #expect(defaults.virtualizationType == .auto)
        #expect(defaults.storePath == "/var/lib/sfnode/sfnode.sqlite")
        #expect(defaults.storagePath == "/var/lib/sfnode/instances")
        #expect(defaults.floatingRange.description == "192.168.20.0/24")
        #expect(defaults.egressInterface == nil)
        #expect(defaults.isNetworkNode)
        #expect(defaults.mtu == 1450)
        #expect(defaults.logLevel == .info)
        #expect(defaults.libvirtURI == "qemu:///system")
        #expect(NodeConfiguration.defaults().nodeName == NodeConfiguration.hostname())
        #expect(!NodeConfiguration.hostname().isEmpty)
    }

    @Test("the path comes from --config, then SFNODE_CONFIG, then the default")
    func path() {
        #expect(NodeConfiguration.configurationPath(commandLine: "/a.json", environment: ["SFNODE_CONFIG": "/b.json"]) == ("/a.json", true))
        #expect(NodeConfiguration.configurationPath(commandLine: nil, environment: ["SFNODE_CONFIG": "/b.json"]) == ("/b.json", true))
        #expect(NodeConfiguration.configurationPath(commandLine: nil, environment: [:]) == ("/etc/sfnode/agent.json", false))
    }

    @Test("a file sets what it names and leaves the rest at the defaults")
    func fromFile() throws {
        let path = try file(
            """
            {"nodeName": "hv1", "hostNamespace": "sftnode", "virtualizationType": "qemu", "floatingRange": "10.20.0.0/16",
             "egressInterface": "eth1", "isNetworkNode": false, "mtu": 9000, "logLevel": "debug",
             "meshAddress": "198.51.100.4", "meshInterface": "mesh0",
             "libvirtURI": "test:///default", "storagePath": "/srv/sfnode"}
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let configuration = try NodeConfiguration.load(commandLinePath: path, environment: [:], defaultNodeName: "node1")
        #expect(configuration.nodeName == "hv1")
        #expect(configuration.hostNamespace == "sftnode")
        #expect(configuration.virtualizationType == .qemu)
        #expect(configuration.floatingRange.description == "10.20.0.0/16")
        #expect(configuration.egressInterface == "eth1")
        #expect(!configuration.isNetworkNode)
        #expect(configuration.meshAddress?.description == "198.51.100.4")
        #expect(configuration.meshInterface == "mesh0")
        #expect(configuration.mtu == 9000)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.libvirtURI == "test:///default")
        #expect(configuration.storagePath == "/srv/sfnode")
        #expect(configuration.storePath == "/var/lib/sfnode/sfnode.sqlite")
    }

    @Test("environment variables override the file")
    func environmentOverrides() throws {
        let path = try file(#"{"mtu": 9000, "hostNamespace": "sftnode", "logLevel": "debug"}"#)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let configuration = try NodeConfiguration.load(
            environment: [
                "SFNODE_CONFIG": path, "SFNODE_MTU": "1400", "SFNODE_HOST_NAMESPACE": "", "SFNODE_NODE_NAME": "env-node",
                "SFNODE_FLOATING_RANGE": "172.16.5.0/24", "SFNODE_IS_NETWORK_NODE": "no", "SFNODE_VIRTUALIZATION_TYPE": "KVM",
                "SFNODE_STORE_PATH": "/tmp/s.sqlite", "SFNODE_EGRESS_INTERFACE": "bond0", "SFNODE_LIBVIRT_URI": "qemu+ssh://h/system",
                "SFNODE_MESH_ADDRESS": "198.51.100.9", "SFNODE_MESH_INTERFACE": "",
            ], defaultNodeName: "node1")
        #expect(configuration.mtu == 1400)
        #expect(configuration.hostNamespace == nil)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.nodeName == "env-node")
        #expect(configuration.floatingRange.description == "172.16.5.0/24")
        #expect(!configuration.isNetworkNode)
        #expect(configuration.virtualizationType == .kvm)
        #expect(configuration.storePath == "/tmp/s.sqlite")
        #expect(configuration.egressInterface == "bond0")
        #expect(configuration.libvirtURI == "qemu+ssh://h/system")
        #expect(configuration.meshAddress?.description == "198.51.100.9")
        #expect(configuration.meshInterface == nil)
    }

    @Test("a hypervisor that is not the network node needs a mesh address")
    func hypervisorNeedsMeshAddress() throws {
        let path = try file("{}")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = try #require(throws: ConfigurationError.self) {
            try NodeConfiguration.load(environment: ["SFNODE_CONFIG": path, "SFNODE_IS_NETWORK_NODE": "false"], defaultNodeName: "hv2")
        }
        #expect(error.description.hasPrefix("SFNODE_MESH_ADDRESS (meshAddress) must be set when SFNODE_IS_NETWORK_NODE is false"))
    }

    @Test("the metrics listener is on loopback by default, off when asked, and an IPv6 address loses its brackets")
    func metricsListen() throws {
        #expect(try NodeConfiguration.load(environment: [:], defaultNodeName: "node1").metricsListen == "127.0.0.1:13001")
        #expect(try NodeConfiguration.load(environment: ["SFNODE_METRICS_LISTEN": "off"], defaultNodeName: "node1").metricsListen == nil)
        let address = try #require(NodeConfiguration.hostAndPort("[::1]:13001"))
        #expect(address.host == "::1" && address.port == 13001)
        #expect(NodeConfiguration.hostAndPort(":13001") == nil && NodeConfiguration.hostAndPort("host:65536") == nil)
    }

    @Test(
        "bad environment values name the variable and quote the value",
        arguments: [
            ("SFNODE_FLOATING_RANGE", "10.0.0.0/33", "SFNODE_FLOATING_RANGE: '10.0.0.0/33' is not an IPv4 prefix"),
            ("SFNODE_FLOATING_RANGE", "10.0.0.0", "SFNODE_FLOATING_RANGE: '10.0.0.0' is not an IPv4 prefix"),
            ("SFNODE_FLOATING_RANGE", "10.0.0.1/24", "SFNODE_FLOATING_RANGE: '10.0.0.1/24' has host bits set"),
            ("SFNODE_FLOATING_RANGE", "10.0.0.0/31", "SFNODE_FLOATING_RANGE: '10.0.0.0/31' is too small"),
            ("SFNODE_MTU", "big", "SFNODE_MTU: 'big' is not an MTU"),
            ("SFNODE_MTU", "100", "SFNODE_MTU: '100' is not an MTU"),
            ("SFNODE_IS_NETWORK_NODE", "maybe", "SFNODE_IS_NETWORK_NODE: 'maybe' is not a boolean"),
            ("SFNODE_VIRTUALIZATION_TYPE", "xen", "SFNODE_VIRTUALIZATION_TYPE: 'xen' is not one of kvm, qemu, auto"),
            ("SFNODE_LOG_LEVEL", "loud", "SFNODE_LOG_LEVEL: 'loud' is not a log level"),
            ("SFNODE_STORE_PATH", "relative.sqlite", "SFNODE_STORE_PATH: 'relative.sqlite' is not an absolute path"),
            ("SFNODE_HOST_NAMESPACE", "a/b", "SFNODE_HOST_NAMESPACE: 'a/b' is not a network namespace name"),
            ("SFNODE_EGRESS_INTERFACE", "an-interface-name-too-long", "SFNODE_EGRESS_INTERFACE: 'an-interface-name-too-long' is not an interface name"),
            ("SFNODE_MESH_ADDRESS", "10.0.0.300", "SFNODE_MESH_ADDRESS: '10.0.0.300' is not an IPv4 address"),
            ("SFNODE_MESH_INTERFACE", "a b", "SFNODE_MESH_INTERFACE: 'a b' is not an interface name"),
            ("SFNODE_NODE_NAME", "has space", "SFNODE_NODE_NAME: 'has space' is not a node name"),
            ("SFNODE_LIBVIRT_URI", "system", "SFNODE_LIBVIRT_URI: 'system' is not a libvirt URI"),
            ("SFNODE_METRICS_LISTEN", "13001", "SFNODE_METRICS_LISTEN: '13001' is not HOST:PORT"),
            ("SFNODE_METRICS_LISTEN", "127.0.0.1:99999999999999999999", "SFNODE_METRICS_LISTEN: '127.0.0.1:99999999999999999999' is not HOST:PORT"),
            ("SFNODE_METRICS_LISTEN", "127.0.0.1:0", "SFNODE_METRICS_LISTEN: '127.0.0.1:0' is not HOST:PORT"),
            ("SFNODE_METRICS", "maybe", "SFNODE_METRICS: 'maybe' is not a boolean"),
        ])
    func badEnvironment(variable: String, value: String, message: String) throws {
        let error = try #require(throws: ConfigurationError.self) {
            try NodeConfiguration.load(
                environment: [variable: value],
                defaultNodeName: "node1")
        }
        #expect(error.description.hasPrefix(message), "\(error)")
    }

    @Test("bad file values name the file and the key; unknown keys and broken JSON are refused")
    func badFile() throws {
        let badRange = try file(#"{"floatingRange": "10.0.0.0/33"}"#)
        let unknown = try file(#"{"floatingrange": "10.0.0.0/24"}"#)
        let broken = try file(#"{"mtu": 1450,"#)
        let wrongType = try file(#"{"mtu": [1450]}"#)
        let nullRequired = try file(#"{"mtu": null, "egressInterface": null}"#)
        defer { for path in [badRange, unknown, broken, wrongType, nullRequired] { try? FileManager.default.removeItem(atPath: path) } }

        let range = try #require(throws: ConfigurationError.self) { try NodeConfiguration.load(commandLinePath: badRange, environment: [:]) }
        #expect(range.description.hasPrefix("\(badRange): floatingRange: '10.0.0.0/33' is not an IPv4 prefix"))

        let key = try #require(throws: ConfigurationError.self) { try NodeConfiguration.load(commandLinePath: unknown, environment: [:]) }
        #expect(key.description.hasPrefix("\(unknown): unknown setting 'floatingrange'"))

        let json = try #require(throws: ConfigurationError.self) { try NodeConfiguration.load(commandLinePath: broken, environment: [:]) }
        #expect(json.description.hasPrefix("\(broken): not valid JSON"))

        let type = try #require(throws: ConfigurationError.self) { try NodeConfiguration.load(commandLinePath: wrongType, environment: [:]) }
        #expect(type.description.contains("mtu"))

        let null = try #require(throws: ConfigurationError.self) { try NodeConfiguration.load(commandLinePath: nullRequired, environment: [:]) }
        #expect(null.description == "\(nullRequired): mtu: 'null' must not be null")
    }

    @Test("an explicitly named file that does not exist is an error, not a silent default")
    func missingExplicitFile() throws {
        let error = try #require(throws: ConfigurationError.self) {
            try NodeConfiguration.load(commandLinePath: "/nonexistent/sfnode.json", environment: [:])
        }
        #expect(error.description == "/nonexistent/sfnode.json: cannot read the configuration file: no such file")
    }

    @Test("encoding and decoding round-trip")
    func roundTrip() throws {
        var original = NodeConfiguration.defaults(nodeName: "hv9")
        original.hostNamespace = "sftx"
        original.floatingRange = try IPv4Prefix.parse("10.9.0.0/20")
        original.logLevel = .trace
        let data = try JSONEncoder().encode(original)
        let decoded = try NodeConfiguration.decode(json: data, source: "memory", defaults: .defaults(nodeName: "other"))
        #expect(decoded == original)
    }
}
