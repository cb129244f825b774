import Foundation
import Logging
import PostgresNIO
import SFNetlink
import SFStore
import SFSystem
import Synchronization

/// One node of a test cluster: a separate `sfnode` process (`serve` or `agent`) whose host
/// namespace is a test namespace on the cluster's mesh, configured by its environment alone
/// (``AgentProcess/clusterEnvironment(storeURL:storage:hostNamespace:nodeName:prefix:floatingRange:leaseSeconds:meshAddress:meshInterface:networkNode:)``).
/// It can be stopped and started again, as an operator restarts an agent: each run logs to a file
/// of its own (`log`, then `log.2`, `log.3`...). The process runs in the test's own namespace, where it
/// reaches the store on loopback; everything it builds for guests is in its host namespace.
public final class ClusterNode: Sendable {
    /// The node's name (`SFNODE_NODE_NAME`).
    public let name: String
    public let hostNamespace: String
    public let meshAddress: IPv4Address
    /// `["serve"]` or `["agent"]`.
    public let arguments: [String]
    public let environment: [String: String]
    /// The first run's log file.
    public let log: String
    private let executable: String
    private let state = Mutex<(process: AgentProcess?, runs: Int)>((nil, 0))

    public init(
        name: String, hostNamespace: String, meshAddress: IPv4Address, arguments: [String], environment: [String: String],
        executable: String, log: String
    ) {
        self.name = name
        self.hostNamespace = hostNamespace
        self.meshAddress = meshAddress
        self.arguments = arguments
        self.environment = environment
        self.executable = executable
        self.log = log
    }

    /// Starts a run of the node's process, with `extra` settings on top of its own (a crash point, say).
    @discardableResult public func start(extra: [String: String] = [:]) throws -> AgentProcess {
        let run = state.withLock { state in
            state.runs += 1
            return state.runs
        }
        // In the test process's own network namespace (its main thread's), where the store listens
        // on loopback: a child inherits the namespace of the thread that spawns it, and a test's
        // threads also enter its namespaces. nsenter execs sfnode, so the pid is sfnode's.
        let process = try AgentProcess.start(
            executable: "/usr/bin/nsenter", arguments: ["--net=/proc/\(getpid())/ns/net", "--", executable] + arguments,
            environment: environment.merging(extra) { _, given in given }, log: run == 1 ? log : log + ".\(run)")
        state.withLock { $0.process = process }
        return process
    }

    /// The run started last.
    public var process: AgentProcess? { state.withLock { $0.process } }

    /// How many runs were started.
    public var runs: Int { state.withLock { $0.runs } }

    /// Whether the run started last still runs.
    public var isRunning: Bool { process?.isRunning ?? false }

    /// The end of the last run's log, for failure messages.
    public func logTail() -> String { process?.logTail() ?? "(\(name) never ran)" }

    /// SIGTERM to the last run, then SIGKILL if it has not ended within `timeout`; its exit status
    /// (nil if it had to be killed or never ran).
    @discardableResult public func stop(timeout: Duration = .seconds(20)) async -> Int32? {
        guard let process else { return nil }
        if !process.isRunning { return process.process.terminationStatus }
        return await process.stop(timeout: timeout)
    }
}

/// The mesh of a test cluster: a bridge in a switch namespace of the test's and one veth from it to
/// each host namespace, whose host end (``interface``) holds the host's mesh address. VXLANs between
/// the nodes run over it. Everything is inside namespaces the test made and goes with them.
public enum ClusterMesh {
    /// The mesh interface in every host namespace (`SFNODE_MESH_INTERFACE`).
    public static let interface = "mesh0"
    static let bridge = "meshbr"

    /// Joins every host namespace in `hosts` to the switch, each with its address on a /24.
    public static func join(switchNamespace: String, hosts: [(namespace: String, address: IPv4Address)], logger: Logger) async throws {
        let hub = try NetlinkSession(namespace: switchNamespace, logger: logger)
        try await hub.createBridge(name: bridge, up: true)
        for (index, host) in hosts.enumerated() {
            try await hub.createVethPair(name: "meshp\(index)", peer: interface, peerNamespace: host.namespace, master: bridge, up: true)
            let session = try NetlinkSession(namespace: host.namespace, logger: logger)
            try await session.addAddress(try IPv4Prefix(address: host.address, length: 24), to: interface)
            try await session.setLinkUp(interface, true)
        }
    }

    /// Sets a host's mesh link down (cut from the cluster) or up again.
    public static func setLink(of hostNamespace: String, up: Bool, logger: Logger) async throws {
        try await NetlinkSession(namespace: hostNamespace, logger: logger).setLinkUp(interface, up)
    }
}

/// The tests' PostgreSQL server, the throwaway one `scripts/test-postgres` starts.
public enum TestPostgresServer {
    /// Its data directory (`scripts/test-postgres`'s).
    public static let dataDirectory = "/var/lib/sfnode/test/postgres"

    /// Restarts the server with a fast shutdown, which ends every connection at once, as a database
    /// failover does. Every test using the server sees it: run it last, and wait for
    /// ``waitUntilAnswering(timeout:)``.
    public static func restart() throws {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.compactMap(Int.init).max() else {
            throw AgentProcessError("no PostgreSQL under /usr/lib/postgresql: run scripts/test-postgres")
        }
        // -l: the restarted server must not inherit this command's output pipes, or running the
        // command would wait for the server to end.
        let restarted = try ChildProcess.run(
            [
                "/usr/sbin/runuser", "-u", "postgres", "--", "/usr/lib/postgresql/\(version)/bin/pg_ctl", "-D", dataDirectory,
                "-l", dataDirectory + "/server.log", "-m", "fast", "-w", "-t", "60", "restart",
            ], timeLimit: .seconds(90))
        guard restarted.status == 0 else {
            throw AgentProcessError("pg_ctl restart exited \(restarted.status): \(restarted.stdout)\(restarted.stderr)")
        }
    }

    /// Whether the server answers a query within `timeout`.
    public static func waitUntilAnswering(timeout: Duration) async -> Bool {
        guard let url = PostgresTestDatabase.serverURL, let server = try? PostgresStoreConfiguration(url: url) else { return false }
        return await eventually(timeout: timeout) { (try? PostgresTestDatabase.administer(server, "SELECT 1")) != nil }
    }
}

extension PostgresTestDatabase {
    /// Whether the database is still on the server (after ``drop()``, it must not be).
    public func exists() throws -> Bool {
        guard let url = Self.serverURL, let server = try PostgresStoreConfiguration(url: url) else {
            throw StoreError.invalidArgument("SFNODE_TEST_POSTGRES_URL is not set")
        }
        // administer returns no rows: a database that is still there is told by an error.
        do {
            try Self.administer(
                server, "DO $$ BEGIN IF EXISTS (SELECT FROM pg_database WHERE datname = '\(name)') THEN RAISE EXCEPTION 'still there'; END IF; END $$")
            return false
        } catch let error as PSQLError where error.serverInfo?[.message] == "still there" {
            return true
        }
    }
}
