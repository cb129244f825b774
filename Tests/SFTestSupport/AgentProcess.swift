import Foundation
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// The real `sfnode agent` executable run as a child process, configured by its environment alone,
/// for tests that must kill the agent (SIGKILL at a crash point, or in the middle of a download)
/// and start it again against the same store.
///
/// Every run's output goes to its own log file, whose end ``logTail()`` adds to failure messages.
/// The test owns the process: it must ``kill()`` or ``stop(timeout:)`` it in its teardown.
public final class AgentProcess: Sendable {
    /// The child process (for its pid, say).
    public let process: ChildProcess
    /// The file the agent's standard output and error go to.
    public let log: String

    private init(process: ChildProcess, log: String) {
        self.process = process
        self.log = log
    }

    /// The `sfnode` that `swift build` put beside this test bundle (the same scratch path), or
    /// `$SFNODE_TEST_AGENT`.
    public static func executable() throws -> String {
        if let path = ProcessInfo.processInfo.environment["SFNODE_TEST_AGENT"], !path.isEmpty { return path }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let candidates = [bundle + "/sfnode", Bundle.main.bundlePath + "/sfnode"]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw AgentProcessError(
                "the sfnode executable is not beside the test bundle (looked at \(candidates.joined(separator: ", "))): "
                    + "build it with the tests, `swift build --build-tests` with the same --scratch-path, or set SFNODE_TEST_AGENT")
        }
        return found
    }

    /// Starts `sfnode agent` (or `sfnode ARGUMENTS`, such as `serve`) with exactly `environment` (and a PATH): nothing of the test's own
    /// environment, so no configuration file, notify socket or crash point leaks in. Its output goes
    /// to the file `log`.
    public static func start(executable: String, arguments: [String] = ["agent"], environment: [String: String], log: String) throws -> AgentProcess {
        let process = try ChildProcess.spawn(command(executable, arguments, environment: environment), outputPath: log)
        return AgentProcess(process: process, log: log)
    }

    /// `sfnode ARGUMENTS` run with exactly `environment` (and a PATH), as an argv for
    /// ``ChildProcess``: the agent and the commands a test runs beside it see the same settings.
    public static func command(_ executable: String, _ arguments: [String], environment: [String: String]) -> [String] {
        let variables = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] + environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return ["/usr/bin/env", "-i"] + variables + [executable] + arguments
    }

    /// The settings of a test's agent: its store in `directory`, its instances and blobs in
    /// `storage`, its host namespace a test namespace, guests under TCG, the network node's role,
    /// every machine-global name it makes starting with `prefix`, and a short lease so that a killed
    /// agent's job is taken again quickly, and fetches allowed from loopback (refused by default),
    /// where the tests' image servers listen, and from nowhere else (the network safety rule).
    /// Tests add what they need on top.
    public static func environment(
        directory: String, storage: String, hostNamespace: String, nodeName: String, prefix: String, floatingRange: String,
        leaseSeconds: Int
    ) -> [String: String] {
        [
            "SFNODE_STORE_PATH": directory + "/store.sqlite", "SFNODE_HOST_NAMESPACE": hostNamespace,
            "SFNODE_STORAGE_PATH": storage, "SFNODE_NODE_NAME": nodeName, "SFNODE_VIRTUALIZATION_TYPE": "qemu",
            "SFNODE_FLOATING_RANGE": floatingRange, "SFNODE_IS_NETWORK_NODE": "true", "SFNODE_LOG_LEVEL": "debug",
            "SFNODE_JOB_LEASE_SECONDS": "\(leaseSeconds)", "SFNODE_NAME_PREFIX": prefix + "-", "SFNODE_TAP_PREFIX": prefix,
            "SFNODE_FETCH_ALLOW": "127.0.0.0/8", "SFNODE_FETCH_DENY": "0.0.0.0/0,::/0",
            // Agents of several tests would all want the default port: a test that scrapes gives one.
            "SFNODE_METRICS_LISTEN": "off",
        ]
    }

    /// The settings of one node of a test cluster: ``environment(directory:storage:hostNamespace:nodeName:prefix:floatingRange:leaseSeconds:)``
    /// with the shared PostgreSQL store of `storeURL` (`SFNODE_STORE_URL`) in place of a SQLite
    /// file, this node's mesh address on `meshInterface` in its host namespace, and the network
    /// node's role only when `networkNode`. Nodes of one cluster share `prefix`: each keeps its
    /// links in its own host namespace, and a node removes only domains whose instance the shared
    /// store says is gone.
    public static func clusterEnvironment(
        storeURL: String, storage: String, hostNamespace: String, nodeName: String, prefix: String, floatingRange: String,
        leaseSeconds: Int, meshAddress: String, meshInterface: String, networkNode: Bool
    ) -> [String: String] {
        var settings = environment(
            directory: storage, storage: storage, hostNamespace: hostNamespace, nodeName: nodeName, prefix: prefix,
            floatingRange: floatingRange, leaseSeconds: leaseSeconds)
        settings["SFNODE_STORE_PATH"] = nil
        settings["SFNODE_STORE_URL"] = storeURL
        settings["SFNODE_MESH_ADDRESS"] = meshAddress
        settings["SFNODE_MESH_INTERFACE"] = meshInterface
        settings["SFNODE_IS_NETWORK_NODE"] = networkNode ? "true" : "false"
        return settings
    }

    /// Whether the agent still runs.
    public var isRunning: Bool { process.isRunning }

    /// The exit status (137 for SIGKILL), or nil if it still runs after `timeout`.
    public func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// SIGTERM, then the exit status, or nil if it did not exit within `timeout` (then it is killed).
    public func stop(timeout: Duration) async -> Int32? {
        process.terminate()
        let status = await waitForExit(timeout: timeout)
        if status == nil { await kill() }
        return status
    }

    /// SIGKILL unless it has ended; reaps it. Idempotent, so teardown can always call it.
    public func kill() async {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        _ = await waitForExit(timeout: .seconds(10))
    }

    /// Waits until every job in `ids` succeeded; fails at once when one failed or the agent exited.
    public func waitForJobs(_ ids: [Int64], in store: any NodeStore, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            var pending: [String] = []
            for id in ids {
                let job = try await store.job(id: id)
                if job.state == .failed {
                    throw AgentProcessError("job \(job.kind) failed: \(job.lastError ?? "?"); agent log: \(logTail())")
                }
                if job.state != .succeeded { pending.append("\(job.kind) \(job.state.rawValue) (attempt \(job.attempts))") }
            }
            if pending.isEmpty { return }
            if !process.isRunning {
                throw AgentProcessError("the agent exited (\(process.terminationStatus ?? -1)) with \(pending) unfinished: \(logTail())")
            }
            if ContinuousClock.now >= deadline {
                throw AgentProcessError("jobs unfinished after \(timeout): \(pending); agent log: \(logTail())")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The last 3000 characters of the agent's output, headed by the log's path, for failure messages.
    public func logTail() -> String {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return "\n--- \(log) ---\n" + String(text.suffix(3000))
    }
}

/// Why an ``AgentProcess`` helper gave up: the executable is missing, a job failed, the agent
/// exited or time ran out. The message says which, with the end of the agent's log.
public struct AgentProcessError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
