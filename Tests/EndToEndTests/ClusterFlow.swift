import Foundation
import Logging
import SFLibvirt
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// The world of ``ClusterTests``: three hosts as test namespaces joined by a mesh, each with its own
/// `sfnode` process on one PostgreSQL database of its own: `sfnode serve` (the API and the network
/// node) on host A, `sfnode agent` hypervisors on hosts B and C. The ``CommandLineFlow`` underneath
/// (without its agent) gives host A's namespace, the outside namespace, the test directory, the
/// loopback image server and the leftover check; ``RealClient`` drives the API. The test reads the
/// shared store itself only to check what the API cannot show (jobs).
final class ClusterFlow: Sendable {
    let flow: CommandLineFlow
    let database: PostgresTestDatabase
    let store: SQLStore
    let libvirt: LibvirtConnection
    let logger: Logger
    /// `sfnode serve`: the API and the network node, on the flow's host namespace.
    let api: ClusterNode
    let hypervisorB: ClusterNode
    let hypervisorC: ClusterNode
    let client: RealClient

    var id: String { flow.id }
    var nodes: [ClusterNode] { [api, hypervisorB, hypervisorC] }

    static let meshAddresses = ["198.51.100.1", "198.51.100.2", "198.51.100.3"].compactMap { IPv4Address($0) }
    /// How long a killed agent's job stays leased before its restarted agent takes it again.
    static let leaseSeconds = 5

    private init(
        flow: CommandLineFlow, database: PostgresTestDatabase, store: SQLStore, libvirt: LibvirtConnection, logger: Logger,
        nodes: [ClusterNode], client: RealClient
    ) {
        self.flow = flow
        self.database = database
        self.store = store
        self.libvirt = libvirt
        self.logger = logger
        (api, hypervisorB, hypervisorC) = (nodes[0], nodes[1], nodes[2])
        self.client = client
    }

    /// Makes the hosts, the mesh and the database, and starts the three processes; hypervisor C's
    /// first run gets `firstRunOfC` on top of its settings (a crash point). Returns once every node
    /// has checked in and the API answers.
    static func start(firstRunOfC: [String: String] = [:]) async throws -> ClusterFlow {
        let logger = Logger.testWarnings("sfnode.test.cluster")
        let flow = try await CommandLineFlow.start(withAgent: false)
        do {
            return try await make(flow, firstRunOfC: firstRunOfC, logger: logger)
        } catch {
            try? await flow.finish()
            _ = flow.leftovers()
            throw error
        }
    }

    private static func make(_ flow: CommandLineFlow, firstRunOfC: [String: String], logger: Logger) async throws -> ClusterFlow {
        let id = flow.id
        let teardown = flow.teardown
        let hosts = [flow.hostNamespace, id + "hb", id + "hc"]
        try teardown.createNamespaces([id + "sw", hosts[1], hosts[2]])
        try await ClusterMesh.join(
            switchNamespace: id + "sw", hosts: zip(hosts, meshAddresses).map { (namespace: $0, address: $1) }, logger: logger)

        let database = try PostgresTestDatabase.create()
        teardown.add("database") { database.drop() }
        let store = try SQLStore.open(location: database.url, fqdn: id + "-test", logger: logger)
        teardown.add("the test's store connections") { store.close() }
        let libvirt = try LibvirtConnection(logger: logger)
        teardown.add("libvirt connection") { await libvirt.close() }

        let executable = try AgentProcess.executable()
        let apiListen = flow.apiURL.replacingOccurrences(of: "http://", with: "")
        let nodes = ["a", "b", "c"].enumerated().map { index, letter -> ClusterNode in
            let networkNode = index == 0
            let storage = networkNode ? flow.storage : flow.directory + "/storage-\(letter)"
            var environment = AgentProcess.clusterEnvironment(
                storeURL: database.url, storage: storage, hostNamespace: hosts[index], nodeName: "\(id)-\(letter)", prefix: id,
                floatingRange: CommandLineFlow.floatingRange, leaseSeconds: leaseSeconds, meshAddress: meshAddresses[index].description,
                meshInterface: ClusterMesh.interface, networkNode: networkNode)
            // The missing grace period at its least (60 s), and images from the loopback server only.
            environment.merge(["SFNODE_NODE_MISSING_SECONDS": "60", "SFNODE_IMAGE_DOWNLOAD_URL": flow.server.baseURL]) { _, given in given }
            if networkNode {
                environment.merge(["SFNODE_API_LISTEN": apiListen, "SFNODE_CLIENT_CONFIG": flow.clientConfig]) { _, given in given }
            } else {
                // Two hypervisors on one machine would both offer consoles on the same loopback
                // ports (each reserves its own); on separate machines they would not meet.
                environment["SFNODE_CONSOLE_LISTEN"] = "none"
            }
            return ClusterNode(
                name: "\(id)-\(letter)", hostNamespace: hosts[index], meshAddress: meshAddresses[index],
                arguments: [networkNode ? "serve" : "agent"], environment: environment, executable: executable,
                // RealClient quotes agent.log, the API's, when a client call fails.
                log: flow.directory + (networkNode ? "/agent.log" : "/agent-\(letter).log"))
        }
        // Whatever the test left is removed by the leftover check; here the processes end.
        teardown.add("sfnode processes") {
            for node in nodes.reversed() { await node.stop() }
            for pid in dnsmasqProcesses(mentioning: flow.directory) { kill(pid, SIGTERM) }
        }

        // The API's node first: it migrates the new database.
        try nodes[0].start()
        try await waitForCheckIn(nodes[0], store: store)
        // Asked from the test's own namespace, where the API listens on loopback.
        let home = try await NamespaceExecutor.start(namespace: nil)
        let ready = await eventually(timeout: .seconds(60)) {
            guard FileManager.default.fileExists(atPath: flow.clientConfig) else { return false }
            return (try? await home.executor.run { isListening(flow.apiURL) }) ?? false
        }
        guard ready else {
            let written = FileManager.default.fileExists(atPath: flow.clientConfig)
            throw AgentProcessError("the API did not listen within 60 s (client configuration written: \(written)): \(nodes[0].logTail())")
        }
        try nodes[1].start()
        try nodes[2].start(extra: firstRunOfC)
        try await waitForCheckIn(nodes[1], store: store)
        try await waitForCheckIn(nodes[2], store: store)
        return ClusterFlow(
            flow: flow, database: database, store: store, libvirt: libvirt, logger: logger, nodes: nodes, client: try RealClient(flow: flow))
    }

    /// Waits until `node` has checked in (placement takes only nodes that have).
    static func waitForCheckIn(_ node: ClusterNode, store: SQLStore) async throws {
        let seen = await eventually(timeout: .seconds(90)) {
            guard node.isRunning else { return false }
            return (try? await store.node(named: node.name))??.lastSeen != nil
        }
        guard seen else { throw AgentProcessError("node \(node.name) did not check in within 90 s: \(node.logTail())") }
    }

    /// Runs the test's `steps`, then tears everything down whether they threw or not. After steps
    /// that passed, nothing of the test may be left on any host (the leftover check, which also
    /// removes what it finds) nor on the database server.
    func finishing(_ steps: () async throws -> Void) async throws {
        do {
            try await steps()
        } catch {
            try? await flow.finish()
            _ = flow.leftovers()
            throw error
        }
        try await flow.finish()
        let left = flow.leftovers()
        #expect(left.isEmpty, "leftovers: \(left)")
        #expect(try database.exists() == false, "the database \(database.name) was not dropped")
    }

    // MARK: - Through the client

    /// `sf-client --async continue instance create NAME 1 256 -d 1@BASE -f net -p NODE`: one
    /// floating interface on the network `net`, forced onto `node`, booting `base` (the guest image
    /// on the loopback server by default). Returns its uuid at once, without waiting for the
    /// instance (its node may be about to die).
    func createInstance(_ name: String, on node: ClusterNode, base: String? = nil) throws -> String {
        let base = base ?? flow.server.url("/images/guest.qcow2")
        let created = try client.sfClient(
            ["--async", "continue", "instance", "create", name, "1", "256", "-d", "1@\(base)", "-f", "net", "-p", node.name])
        guard let uuid = (created as? [String: Any])?["uuid"] as? String else {
            throw AgentProcessError("instance create printed no uuid: \(created)")
        }
        return uuid
    }

    /// The instance as the API shows it.
    func instance(_ uuid: String) throws -> [String: Any] {
        guard let shown = try client.python(["show-instance", uuid]) as? [String: Any] else {
            throw AgentProcessError("show-instance \(uuid) printed no object")
        }
        return shown
    }

    /// A guest the test reaches: its uuid, private address and floating address.
    struct Guest {
        let uuid: String
        let name: String
        let address: IPv4Address
        let floating: IPv4Address
    }

    /// Waits until the instance is created, running and floating, as the API shows it.
    func waitForGuest(_ uuid: String, name: String, on node: ClusterNode) async throws -> Guest {
        let shown = try await client.waitForInstance(uuid, timeout: .seconds(300)) {
            $0["state"] as? String == "created" && $0["power_state"] as? String == "on" && firstInterface($0)?["floating"] is String
        }
        #expect(shown["node"] as? String == node.name, "\(shown)")
        guard let interface = firstInterface(shown), let address = (interface["ipv4"] as? String).flatMap(IPv4Address.init),
            let floating = (interface["floating"] as? String).flatMap(IPv4Address.init)
        else { throw AgentProcessError("instance \(uuid) has no addresses: \(shown)") }
        return Guest(uuid: uuid, name: name, address: address, floating: floating)
    }

    /// Asks the API for the instance every 2 s (each ask starts the client: asking without pause
    /// would keep a core busy through a wait of minutes) until its power state is `state`;
    /// whether it was, and the instance as last shown.
    func waitForPowerState(_ guest: Guest, _ state: String, timeout: Duration) async -> (Bool, [String: Any]) {
        let deadline = ContinuousClock.now + timeout
        var last: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            if let shown = try? instance(guest.uuid) {
                last = shown
                if shown["power_state"] as? String == state { return (true, shown) }
            }
            try? await Task.sleep(for: .seconds(2))
        }
        return (false, last)
    }

    // MARK: - Guests

    /// Whether the guest's web server answers on its floating address from the outside namespace
    /// within `timeout`.
    func answers(_ guest: Guest, within timeout: Duration = .seconds(240)) async -> Bool {
        await eventually(timeout: timeout) {
            let body = try? await NamespaceSockets.httpGet(from: flow.outsideNamespace, host: guest.floating, timeoutSeconds: 3)
            return body?.trimmingCharacters(in: .whitespacesAndNewlines) == TestGuest.bodyText
        }
    }

    /// Whether `from` reaches `to`'s web server by its private address (across the VXLAN when they
    /// are on different hypervisors) within `timeout`: the outside asks `from` to connect there.
    func reaches(_ from: Guest, _ to: Guest, within timeout: Duration = .seconds(60)) async -> Bool {
        await eventually(timeout: timeout) {
            let body = try? await NamespaceSockets.httpGet(
                from: flow.outsideNamespace, host: from.floating, path: TestGuest.probePath(to: to.address, port: 80), timeoutSeconds: 15)
            return body?.trimmingCharacters(in: .whitespacesAndNewlines) == "probed"
        }
    }

    /// The console log of a guest, for failure messages.
    func console(of guest: Guest) -> String {
        let found = (try? FileManager.default.subpathsOfDirectory(atPath: flow.directory))?.first {
            $0.hasSuffix("console.log") && $0.contains(guest.uuid)
        }
        return found.flatMap { try? String(contentsOfFile: flow.directory + "/" + $0, encoding: .utf8) }.map { String($0.suffix(2000)) }
            ?? "no console log of \(guest.uuid)"
    }

    /// The power state of the instance's domain, as libvirt has it (nil: no such domain).
    func domainState(_ guest: Guest) async throws -> SFLibvirt.PowerState? {
        guard let uuid = UUID(uuidString: guest.uuid) else { return nil }
        return try await libvirt.state(of: .uuid(uuid))
    }

    // MARK: - The shared store

    /// Every job about the object `type:uuid` of kind `kind`.
    func jobs(kind: String, about type: String, _ uuid: String) async throws -> [Job] {
        try await store.jobs(states: JobState.allCases, limit: 100_000).filter {
            $0.kind == kind && $0.objectKey == "\(type):\(uuid.lowercased())"
        }
    }
}
