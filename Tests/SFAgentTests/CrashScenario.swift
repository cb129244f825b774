import Foundation
import Logging
import SFAgent
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The world of ``CrashTests``: a test namespace as the agent's host namespace and another outside
/// it, a store holding what the API would store (a network with NAT and DHCP, an instance with one
/// interface) and the three jobs that create them, and the runs of `sfnode agent` against that store.
/// Every name starts with `id`; cleanup is registered in `teardown` as things are made.
///
/// The steps, methods of this type, are in CrashTests.swift. Those that throw are gates: the later
/// steps need what they make. The others record their failures
/// (``independentStep(_:sourceLocation:_:)``) and the scenario goes on.
final class CrashScenario {
    static let floatingRange = IPv4Prefix("192.0.2.0/24")!
    /// How long a killed agent's job stays leased (SFNODE_JOB_LEASE_SECONDS).
    static let leaseSeconds = 2
    /// The jobs the test runs, in queue order.
    static let jobKinds = ["network.create", "instance.create", "interface.float"]
    /// Every crash point of those jobs, in the order they pass them: each agent run dies at the next one.
    static let crashPoints = CrashPoint.all.filter { point in jobKinds.contains { point.hasPrefix($0 + ".") } }

    let id: String
    let teardown: Teardown
    let logger: Logger
    let executable: String
    let layout: HostLayout
    let outsideNamespace: String
    /// `<run directory>/<id>-agent`: the store, the agents' storage path and their logs.
    let directory: String
    let storage: String
    let nodeName: String
    /// The agent's whole configuration (the crash point apart).
    let environment: [String: String]
    let store: SQLStore
    let libvirt: LibvirtConnection
    let host: NetlinkSession
    let root: NetlinkSession
    let network: Network
    let instance: Instance
    let interface: Interface
    /// network.create, instance.create and interface.float, in queue order.
    let jobs: [Job]
    /// The agent run started last.
    private var agent: AgentProcess?
    private var runs = 0

    init(id: String, teardown: Teardown) async throws {
        let logger = Logger.testWarnings("sfnode.test.crash")
        self.id = id
        self.teardown = teardown
        self.logger = logger
        executable = try AgentProcess.executable()
        let hostNamespace = id + "host"
        outsideNamespace = id + "out"
        layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let directory = TestGuest.runDirectory + "/\(id)-agent"
        self.directory = directory
        storage = directory + "/instances"
        nodeName = id + "-node"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        teardown.add("agent directory") { try? FileManager.default.removeItem(atPath: directory) }
        store = try SQLStore(path: directory + "/store.sqlite", fqdn: nodeName, logger: logger)
        let libvirt = try LibvirtConnection(logger: logger)
        self.libvirt = libvirt
        // Closed before the test returns: a connection left to its deinit may close while the
        // process exits, which has ended the test process with a double free in libvirt.
        teardown.add("libvirt connection") { await libvirt.close() }
        environment = AgentProcess.environment(
            directory: directory, storage: storage, hostNamespace: hostNamespace, nodeName: nodeName, prefix: id,
            floatingRange: Self.floatingRange.description, leaseSeconds: Self.leaseSeconds)
            // A job here dies at each of its crash points, up to three times, and must still finish.
            .merging(["SFNODE_JOB_MAX_DEATHS": "4"]) { _, new in new }
        try teardown.createNamespaces([hostNamespace, outsideNamespace])
        host = try NetlinkSession(namespace: hostNamespace, logger: logger)
        root = try NetlinkSession(namespace: nil, logger: logger)
        let objects = try await GuestObjects.create(in: store, netblock: IPv4Prefix("10.98.0.0/24")!)
        (network, instance, interface) = (objects.network, objects.instance, objects.interface)
        jobs = try await Self.enqueueCreates(objects, in: store, nodeName: nodeName)
        registerInProcessCleanup()
    }

    /// network.create, instance.create and interface.float for `objects`, in that order. They share
    /// one object key, so the agent runs them one after another in queue order (it would run them at
    /// once otherwise), and each crash point is reached with the jobs before it done.
    private static func enqueueCreates(_ objects: GuestObjects, in store: SQLStore, nodeName: String) async throws -> [Job] {
        [
            try await store.enqueue(
                kind: "network.create", payload: jobPayload("network_uuid", objects.network.uuid), target: .networkNode,
                objectKey: "crash-scenario"),
            try await store.enqueue(
                kind: "instance.create", payload: jobPayload("instance_uuid", objects.instance.uuid), target: .node(nodeName),
                objectKey: "crash-scenario"),
            try await store.enqueue(
                kind: "interface.float", payload: jobPayload("interface_uuid", objects.interface.uuid), target: .networkNode,
                objectKey: "crash-scenario"),
        ]
    }

    /// Only matters when the test failed half-way: the agent's delete handlers, run in this process.
    private func registerInProcessCleanup() {
        let agent = makeTestAgent(
            nodeName: nodeName, store: store, layout: layout, host: host, root: root, libvirt: libvirt, storage: storage,
            instances: storage, floatingRange: Self.floatingRange, logger: logger)
        let (instance, network, storage) = (instance.uuid, network.uuid, storage)
        teardown.add("in-process cleanup") {
            try? await agent.instanceJobs.delete(instance)
            try? await agent.networkJobs.delete(network)
            for pid in dnsmasqProcesses(mentioning: storage) { Glibc.kill(pid, SIGTERM) }
        }
    }

    // MARK: What the agent makes, by name

    var namespace: String { layout.namespace(of: network.uuid) }
    var domainName: String { layout.namespacePrefix + instance.uuid.lowercasedString }
    var tap: String { layout.tap(of: interface.uuid) }
    var bridge: String { layout.bridge(UInt32(network.vxid)) }
    var dhcpDirectory: String { storage + "/dhcp/" + network.uuid.lowercasedString }

    /// The `-A` lines of the network namespace's nat table.
    func natRules() throws -> [String] {
        try runInNamespace(namespace, command: ["iptables-legacy-save", "-t", "nat"]).stdout
            .split(separator: "\n").map(String.init).filter { $0.hasPrefix("-A") }
    }

    /// The whole nat table, without the dated comments and the packet counters, which traffic moves.
    func natTable() throws -> String {
        try runInNamespace(namespace, command: ["iptables-legacy-save", "-t", "nat"]).stdout
            .split(separator: "\n").filter { !$0.hasPrefix("#") }
            .map { $0.replacingOccurrences(of: #"\[\d+:\d+\]"#, with: "[]", options: .regularExpression) }
            .joined(separator: "\n")
    }

    /// The network's dnsmasq processes.
    func dnsmasqs() -> [Int32] { dnsmasqProcesses(mentioning: "--dhcp-hostsfile=\(dhcpDirectory)/hosts") }

    /// The pid in the network's dnsmasq pid file, if there is one.
    func dhcpPIDFile() -> Int32? {
        (try? String(contentsOfFile: dhcpDirectory + "/pid", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The running domain's id, which a restart of the domain changes.
    func domainID() throws -> String {
        try ChildProcess.run(["/usr/bin/virsh", "-r", "-c", "qemu:///system", "domid", domainName]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: Agent runs

    /// Starts the next run of the agent, armed with `point` if given; teardown kills it.
    @discardableResult func startAgent(crashAt point: String? = nil) throws -> AgentProcess {
        runs += 1
        var variables = environment
        if let point { variables["SFNODE_CRASH_AT"] = point }
        let agent = try AgentProcess.start(executable: executable, environment: variables, log: directory + "/agent-\(runs).log")
        teardown.add("agent run \(runs)") { await agent.kill() }
        self.agent = agent
        return agent
    }

    /// Stops the run started last with SIGTERM, which must end it with status 0.
    func stopAgent(_ context: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async {
        guard let agent else {
            Issue.record("no agent run to stop", sourceLocation: sourceLocation)
            return
        }
        #expect(
            await agent.stop(timeout: .seconds(20)) == 0,
            "\(context.map { $0 + ": " } ?? "")SIGTERM did not stop the agent with status 0: \(agent.logTail())",
            sourceLocation: sourceLocation)
    }
}

/// The parent of process `pid`, from /proc (0 when it cannot be read).
func parentPID(_ pid: Int32) -> Int32 {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.range(of: ")", options: .backwards)
    else { return 0 }
    // After "pid (comm)": the state, then the parent's pid.
    let fields = stat[close.upperBound...].split(separator: " ")
    return fields.count > 1 ? Int32(fields[1]) ?? 0 : 0
}
