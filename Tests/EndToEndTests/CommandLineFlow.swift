import Foundation
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

/// The world of a command-line test: a real `sfnode agent` whose host namespace is a test
/// namespace, its store and storage in a test directory, a loopback server with the test guest,
/// and a runner for `sfnode` commands with the same environment as the agent.
final class CommandLineFlow: Sendable {
    let id: String
    let hostNamespace: String
    let outsideNamespace: String
    let directory: String
    let storage: String
    let nodeName: String
    let executable: String
    let environment: [String: String]
    let server: LoopbackHTTPServer
    let teardown = Teardown()
    static let floatingRange = "192.0.2.0/24"

    /// Where `sfnode serve` listens when the flow serves the API (a free loopback port).
    let apiURL: String
    /// The client configuration `sfnode serve` writes.
    let clientConfig: String
    /// Where `sfnode agent` serves `/metrics` (a free loopback port).
    let metricsPort: Int

    private init(id: String, executable: String, server: LoopbackHTTPServer, apiPort: Int, metricsPort: Int, extra: [String: String]) {
        self.id = id
        self.metricsPort = metricsPort
        apiURL = "http://127.0.0.1:\(apiPort)"
        self.executable = executable
        self.server = server
        hostNamespace = id + "host"
        outsideNamespace = id + "out"
        directory = TestGuest.runDirectory + "/\(id)-cli"
        storage = directory + "/storage"
        nodeName = id + "-node"
        clientConfig = directory + "/shakenfist.json"
        environment = AgentProcess.environment(
            directory: directory, storage: storage, hostNamespace: hostNamespace, nodeName: nodeName, prefix: id,
            floatingRange: Self.floatingRange, leaseSeconds: 5
        ).merging([
            // Tests fetch only from loopback, whatever URL they are handed.
            "SFNODE_FETCH_ALLOW": "127.0.0.0/8", "SFNODE_IMAGE_DOWNLOAD_URL": server.baseURL,
            "SFNODE_API_LISTEN": "127.0.0.1:\(apiPort)", "SFNODE_CLIENT_CONFIG": clientConfig,
            "SFNODE_METRICS_LISTEN": "127.0.0.1:\(metricsPort)",
        ]) { _, added in added }.merging(extra) { _, given in given }
    }

    /// Makes the namespaces and directory, serves the guest image, and starts the agent.
    /// With `serving`, the agent is `sfnode serve`: the REST API and the agent in one process.
    /// `settings` are added to (or replace) the agent's environment.
    static func start(withAgent: Bool = true, serving: Bool = false, settings: [String: String] = [:]) async throws -> CommandLineFlow {
        let server = try LoopbackHTTPServer()
        server.register("/images/guest.qcow2", file: TestGuest.baseImage)
        let flow = CommandLineFlow(
            id: TestNames.unique(""), executable: try AgentProcess.executable(), server: server, apiPort: try freeLoopbackPort(),
            metricsPort: try freeLoopbackPort(), extra: settings)
        flow.teardown.add("image server") { server.stop() }
        try FileManager.default.createDirectory(atPath: flow.directory, withIntermediateDirectories: true)
        flow.teardown.add("test directory") { try? FileManager.default.removeItem(atPath: flow.directory) }
        try flow.teardown.createNamespaces([flow.hostNamespace, flow.outsideNamespace])
        if withAgent {
            let agent = try AgentProcess.start(
                executable: flow.executable, arguments: [serving ? "serve" : "agent"], environment: flow.environment,
                log: flow.directory + "/agent.log")
            // Whatever the test left: delete it through the agent, then stop it.
            flow.teardown.add("agent") {
                _ = try? flow.run(["instance", "delete", "web", "--timeout", "120"], allowFailure: true)
                _ = try? flow.run(["network", "delete", "net"], allowFailure: true)
                _ = await eventually(timeout: .seconds(60)) { flow.networksLeft() <= 0 }
                _ = await agent.stop(timeout: .seconds(20))
                await agent.kill()
                for pid in dnsmasqProcesses(mentioning: flow.storage) { kill(pid, SIGTERM) }
            }
            // Ready once it has made its store and checked in: placement only uses nodes that have.
            let ready = await eventually(timeout: .seconds(60)) {
                FileManager.default.fileExists(atPath: flow.directory + "/store.sqlite")
                    && ((try? flow.run(["state"], allowFailure: true))?.stdout.contains("node \(flow.nodeName) ") ?? false)
                    && (!serving || (FileManager.default.fileExists(atPath: flow.clientConfig) && isListening(flow.apiURL)))
            }
            guard ready else { throw AgentProcessError("the agent did not check in within 60 s: \(agent.logTail())") }
        }
        return flow
    }

    /// Runs `sfnode ARGS` with the agent's environment; a non-zero exit throws unless allowed.
    @discardableResult
    func run(_ arguments: [String], environment extra: [String: String] = [:], allowFailure: Bool = false) throws -> CommandOutput {
        let output = try ChildProcess.run(
            AgentProcess.command(executable, arguments, environment: environment.merging(extra) { _, given in given }))
        if output.status != 0 && !allowFailure {
            throw AgentProcessError("sfnode \(arguments.joined(separator: " ")) exited \(output.status): \(output.stderr)\(output.stdout)")
        }
        return output
    }

    /// Runs `sfnode ARGS --json` and parses its output, a JSON object.
    func json(_ arguments: [String]) throws -> [String: Any] {
        let output = try run(arguments + ["--json"])
        guard let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] else {
            throw AgentProcessError("sfnode \(arguments) printed no JSON object: \(output.stdout)")
        }
        return object
    }

    /// How many networks are not deleted yet (-1 when they cannot be listed).
    func networksLeft() -> Int {
        guard let output = try? run(["network", "list", "--json"]),
            let list = try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [Any]
        else { return -1 }
        return list.count
    }

    /// An "outside" host on the network node's egress bridge, to reach floating addresses from.
    func connectOutside() async throws {
        let host = try NetlinkSession(namespace: hostNamespace, logger: .init(label: "sfnode.test.cli"))
        // Not named with the test's prefix: that is the agent's tap prefix, and its reconciler removes
        // links with it that no interface stands for. The veth lives in the test's host namespace and
        // goes with it.
        try await host.createVethPair(name: "x" + id + "o", peer: "eth0", peerNamespace: outsideNamespace, master: "sfegress", up: true)
        let outside = try NetlinkSession(namespace: outsideNamespace, logger: .init(label: "sfnode.test.cli"))
        try await outside.addAddress(IPv4Prefix.parse("192.0.2.254/24"), to: "eth0")
        try await outside.setLinkUp("eth0", true)
    }

    func finish() async throws { try await teardown.run() }

    /// Runs a test's `steps`, then tears the flow down whether they threw or not, and expects that
    /// nothing of the test is left (the check runs once: it also removes what it finds).
    func finishing(_ steps: () async throws -> Void) async throws {
        do {
            try await steps()
        } catch {
            try await finish()
            throw error
        }
        try await finish()
        let left = leftovers()
        #expect(left.isEmpty, "leftovers: \(left)")
    }

    /// What `scripts/cleanup-test-leftovers --check` finds of this test.
    func leftovers() -> String {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/cleanup-test-leftovers").path
        guard let check = try? ChildProcess.run(["/bin/bash", script, "--check", "--prefix", id]) else { return "the check did not run" }
        if check.status == 0 { return "" }
        _ = try? ChildProcess.run(["/bin/bash", script, "--prefix", id])
        return check.stdout + check.stderr
    }
}
