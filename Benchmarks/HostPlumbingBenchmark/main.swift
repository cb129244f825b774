// Host plumbing benchmarks: sfnode's modules against the same steps as `ip` and `iptables-legacy`
// commands, side by side in the same run, inside throwaway namespaces only (nothing in the root
// namespace). Prints a Markdown report on stdout; scripts/bench writes it into BENCHMARKS.md.
//
// The commands side shells out on purpose: it is the alternative being measured.
import Foundation
import Logging
import SFFirewall
import SFNetlink
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

let logger = {
    var logger = Logger(label: "sfnode.bench")
    logger.logLevel = .warning
    return logger
}()
let runID = "sfb" + String(format: "%05x", UInt32.random(in: 0...0xfffff))
let networkCount = Int(ProcessInfo.processInfo.environment["SFNODE_BENCH_NETWORKS"] ?? "") ?? 100
let floatCounts = ProcessInfo.processInfo.environment["SFNODE_BENCH_SKIP_FLOATS"] != nil ? [] : [0, 100, 1000]
let floatRepetitions = Int(ProcessInfo.processInfo.environment["SFNODE_BENCH_FLOAT_REPS"] ?? "") ?? 30

struct CommandFailed: Error, CustomStringConvertible {
    let argv: [String]
    let status: Int32
    let stderr: String
    var description: String { "\(argv.joined(separator: " ")) exited \(status): \(stderr)" }
}

/// Runs one command and fails on a non-zero exit, as a shell script with `set -e` would. Spawned with
/// posix_spawn (``ChildProcess``), the cheapest way a shell-out agent can run a command, so the
/// comparison charges the commands for what they cost and not for a heavy process wrapper.
func run(_ argv: [String]) throws {
    let result = try ChildProcess.run(argv)
    if result.status != 0 {
        throw CommandFailed(argv: argv, status: result.status, stderr: result.stderr)
    }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func formatMilliseconds(_ value: Double) -> String { String(format: "%.3f ms", value * 1000) }

/// The peak RSS of one command, in MiB, as GNU time measures it.
func commandPeakRSS(_ argv: [String]) throws -> String {
    let result = try ChildProcess.run(["/usr/bin/time", "-f", "%M"] + argv)
    guard result.status == 0, let kib = result.stderr.split(separator: "\n").last.flatMap({ Double($0) }) else {
        throw CommandFailed(argv: argv, status: result.status, stderr: result.stderr)
    }
    return String(format: "%.1f", kib / 1024)
}

/// Maximum resident set size in KiB, of this process or of its waited-for children.
func peakRSS(_ who: Int32) -> Int {
    var usage = rusage()
    getrusage(who, &usage)
    return usage.ru_maxrss
}

/// Addresses built from numbers, so the benchmark has no parsing to fail.
func address(_ value: UInt32) -> IPv4Address { IPv4Address(value) }
func prefix(_ address: IPv4Address, _ length: Int) throws -> IPv4Prefix {
    try IPv4Prefix(address: address, length: length)
}

/// Per-network names and addresses; `side` keeps the two runs' names apart.
struct NetworkPlan {
    let index: Int
    let side: String
    var namespace: String { "\(runID)\(side)n\(index)" }
    var bridge: String { "\(runID)\(side)b\(index)" }
    var vxlan: String { "\(runID)\(side)x\(index)" }
    var vethBridge: String { "\(runID)\(side)o\(index)" }
    var vethRouter: String { "\(runID)\(side)i\(index)" }
    var egressOuter: String { "\(runID)\(side)e\(index)" }
    var egressInner: String { "\(runID)\(side)g\(index)" }
    var vxid: UInt32 { UInt32(1000 + index) }
    var router: IPv4Prefix { get throws { try prefix(address(10 << 24 | UInt32(index / 250) << 16 | UInt32(index % 250) << 8 | 1), 24) } }
    var subnet: IPv4Prefix { get throws { try router.network } }
    var floatingGateway: IPv4Prefix {
        get throws { try prefix(address(198 << 24 | 18 << 16 | UInt32(index / 250) << 8 | UInt32(index % 250 + 2)), 16) }
    }
    static let floatingRouter = address(198 << 24 | 18 << 16 | 255 << 8 | 1)
}

extension NetlinkSession {
    /// The node side of one network, as one isolated call: every step runs on the node namespace's
    /// thread without a hop per step (the way the agent drives a session).
    func realizeNodeSide(_ plan: NetworkPlan) throws {
        try createBridge(name: plan.bridge, mtu: 1450, up: true)
        try createVXLAN(name: plan.vxlan, id: plan.vxid, underlay: nil, local: nil, mtu: 1450, master: plan.bridge, up: true)
        try createVethPair(
            name: plan.vethBridge, peer: plan.vethRouter, peerNamespace: plan.namespace, mtu: 1450, master: plan.bridge,
            up: true)
        try createVethPair(name: plan.egressOuter, peer: plan.egressInner, peerNamespace: plan.namespace, mtu: 1500, up: true)
    }

    /// The network namespace's side: addresses, links up, default route, forwarding.
    func realizeNetworkSide(_ plan: NetworkPlan) throws {
        try addAddress(plan.router, to: plan.vethRouter)
        try addAddress(plan.floatingGateway, to: plan.egressInner)
        for link in ["lo", plan.vethRouter, plan.egressInner] { try setLinkUp(link, true) }
        try replaceRoute(.defaultRoute(via: NetworkPlan.floatingRouter, device: plan.egressInner))
        try setSysctl("net/ipv4/ip_forward", "1")
    }
}

/// (a) sfnode's modules: namespace, bridge, VXLAN, two veth pairs, addresses, default route, NAT.
/// One thread per network namespace, created by that thread itself and shared by the netlink
/// session and the firewall there.
func realizeWithModules(_ plan: NetworkPlan, node: NetlinkSession) async throws {
    let thread = try NamespaceExecutor(namespace: plan.namespace, creating: true)
    let network = NetlinkSession(thread: thread, logger: logger)
    try await node.realizeNodeSide(plan)
    try await network.realizeNetworkSide(plan)
    try await Firewall(thread: thread, logger: logger).apply(
        FirewallState(rules: [
            .masquerade(source: plan.subnet, outInterface: plan.egressInner),
            .forwardAccept(inInterface: plan.vethRouter, outInterface: plan.egressInner),
            .forwardAccept(inInterface: plan.egressInner, outInterface: plan.vethRouter),
        ]))
}

/// (a) The same steps as commands, the way a shell-out agent does them.
func realizeWithCommands(_ plan: NetworkPlan, node: String) throws {
    let ip = "/usr/sbin/ip"
    let ipt = ["/usr/sbin/ip", "netns", "exec", plan.namespace, "/usr/sbin/iptables-legacy", "-w"]
    try run([ip, "netns", "add", plan.namespace])
    try run([ip, "-n", node, "link", "add", plan.bridge, "mtu", "1450", "type", "bridge", "forward_delay", "0", "stp_state", "0"])
    try run([ip, "-n", node, "link", "add", plan.vxlan, "mtu", "1450", "type", "vxlan", "id", "\(plan.vxid)", "dstport", "4789"])
    try run([ip, "-n", node, "link", "set", plan.vxlan, "master", plan.bridge])
    try run([ip, "-n", node, "link", "add", plan.vethBridge, "mtu", "1450", "type", "veth", "peer", "name", plan.vethRouter, "mtu", "1450", "netns", plan.namespace])
    try run([ip, "-n", node, "link", "set", plan.vethBridge, "master", plan.bridge])
    try run([ip, "-n", node, "link", "add", plan.egressOuter, "mtu", "1500", "type", "veth", "peer", "name", plan.egressInner, "mtu", "1500", "netns", plan.namespace])
    for link in [plan.bridge, plan.vxlan, plan.vethBridge, plan.egressOuter] { try run([ip, "-n", node, "link", "set", link, "up"]) }
    try run([ip, "-n", plan.namespace, "addr", "add", "\(plan.router)", "dev", plan.vethRouter])
    try run([ip, "-n", plan.namespace, "addr", "add", "\(plan.floatingGateway)", "dev", plan.egressInner])
    for link in ["lo", plan.vethRouter, plan.egressInner] { try run([ip, "-n", plan.namespace, "link", "set", link, "up"]) }
    try run([ip, "-n", plan.namespace, "route", "replace", "default", "via", "\(NetworkPlan.floatingRouter)", "dev", plan.egressInner])
    try run([ip, "netns", "exec", plan.namespace, "/usr/sbin/sysctl", "-qw", "net.ipv4.ip_forward=1"])
    try run(ipt + ["-t", "nat", "-A", "POSTROUTING", "-s", "\(plan.subnet)", "-o", plan.egressInner, "-j", "MASQUERADE"])
    try run(ipt + ["-A", "FORWARD", "-i", plan.vethRouter, "-o", plan.egressInner, "-j", "ACCEPT"])
    try run(ipt + ["-A", "FORWARD", "-i", plan.egressInner, "-o", plan.vethRouter, "-j", "ACCEPT"])
}

func floatingAddress(_ index: Int) -> IPv4Address { address(198 << 24 | 19 << 16 + UInt32(index) + 10) }
func privateAddress(_ index: Int) -> IPv4Address { address(10 << 24 | 200 << 16 + UInt32(index) + 10) }
func floatRules(_ count: Int) -> [FirewallRule] {
    (0..<count).flatMap { i in
        [FirewallRule.dnat(floating: floatingAddress(i), to: privateAddress(i)), .snat(source: privateAddress(i), to: floatingAddress(i))]
    }
}

var report: [String] = []
var failures: [String] = []
let egressDevice = "\(runID)fl"

func cleanup() {
    for name in NetworkNamespace.list() where name.hasPrefix(runID) {
        try? NetworkNamespace.delete(named: name)
    }
}

/// The kernel dismantles deleted namespaces later, in a worker that holds the locks creating and
/// changing devices needs; a run started right after another one (or after (a)) would measure that.
func settle() {
    sleep(UInt32(ProcessInfo.processInfo.environment["SFNODE_BENCH_SETTLE_SECONDS"] ?? "") ?? 10)
}

// `HostPlumbingBenchmark tap-filter` runs only (m), the anti-spoofing filter's throughput.
if CommandLine.arguments.dropFirst().first == "tap-filter" {
    do {
        print(try await TapFilterBenchmark.report().joined(separator: "\n"))
        exit(0)
    } catch {
        cleanup()
        FileHandle.standardError.write(Data("benchmark failed: \(error)\n".utf8))
        exit(1)
    }
}

do {
    defer { cleanup() }
    settle()
    let node = "\(runID)node"
    try NetworkNamespace.create(named: node)
    let nodeSession = try NetlinkSession(namespace: node, logger: logger)
    // Commands node namespace, separate so the two runs never see each other's devices.
    let commandNode = "\(runID)cnode"
    try NetworkNamespace.create(named: commandNode)

    // (a) 100 networks: sfnode one at a time (the same sequence of steps as the commands), then sfnode
    // four at a time (what its one-thread-per-namespace design allows an agent to do), then the commands.
    let clock = ContinuousClock()
    let moduleTime = try await clock.measure {
        for index in 0..<networkCount { try await realizeWithModules(NetworkPlan(index: index, side: "m"), node: nodeSession) }
    }
    let concurrentNode = "\(runID)pnode"
    try NetworkNamespace.create(named: concurrentNode)
    let concurrentNodeSession = try NetlinkSession(namespace: concurrentNode, logger: logger)
    let concurrentTime = try await clock.measure {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<networkCount {
                if index >= 4 { try await group.next() }
                group.addTask { try await realizeWithModules(NetworkPlan(index: index, side: "p"), node: concurrentNodeSession) }
            }
            try await group.waitForAll()
        }
    }
    let commandTime = try clock.measure {
        for index in 0..<networkCount { try realizeWithCommands(NetworkPlan(index: index, side: "c"), node: commandNode) }
    }
    let ratio = seconds(commandTime) / seconds(moduleTime)
    let concurrentRatio = seconds(commandTime) / seconds(concurrentTime)
    func row(_ label: String, _ time: Duration) -> String {
        "| \(label) | \(formatMilliseconds(seconds(time))) | \(formatMilliseconds(seconds(time) / Double(networkCount))) | \(String(format: "%.1f", seconds(commandTime) / seconds(time)))× |"
    }
    report.append("## (a) Host side of \(networkCount) networks\n")
    report.append("Each network: a namespace; a bridge (STP off, forward delay 0) and a VXLAN in the node namespace; a veth pair")
    report.append("bridge↔router and an egress veth pair, both peers created in the network namespace; router and floating-gateway")
    report.append("addresses; links up; a default route; ip_forward; MASQUERADE and two FORWARD accepts.\n")
    report.append("| implementation | total | per network | speed-up |")
    report.append("| --- | --- | --- | --- |")
    report.append(row("sfnode modules, one network at a time", moduleTime))
    report.append(row("sfnode modules, four networks at a time", concurrentTime))
    report.append(row("`ip` + `iptables-legacy` + `sysctl` commands (posix_spawn)", commandTime))
    report.append("\nTarget: at least 20× faster than the commands.\n")
    if ratio < 20 { failures.append("(a) one network at a time is \(String(format: "%.1f", ratio))×, below the 20× target") }
    if concurrentRatio < 20 { failures.append("(a) four at a time is \(String(format: "%.1f", concurrentRatio))×, below the 20× target") }

    // Tear the networks down before (b), so (b) measures one namespace's table alone.
    for name in NetworkNamespace.list() where name.hasPrefix(runID) && name != node { try NetworkNamespace.delete(named: name) }
    settle()

    // (b) Float and defloat one address with N floats already present, in one network namespace.
    report.append("## (b) Float and defloat one address with N floats present\n")
    report.append("Float = add the /32 to the egress device + DNAT + SNAT; defloat removes all three. Median of \(floatRepetitions) each.")
    report.append("sfnode applies the network's whole declared state (one libiptc commit); the commands append or delete two rules.\n")
    report.append("| N present | sfnode float | sfnode defloat | commands float | commands defloat |")
    report.append("| --- | --- | --- | --- | --- |")
    var moduleFloatMedians: [Int: Double] = [:]
    var commandFloatMedians: [Int: Double] = [:]
    for count in floatCounts {
        let moduleNS = "\(runID)fm\(count)"
        let commandNS = "\(runID)fc\(count)"
        try NetworkNamespace.create(named: commandNS)
        let thread = try NamespaceExecutor(namespace: moduleNS, creating: true)
        let session = NetlinkSession(thread: thread, logger: logger)
        try await session.createVethPair(name: egressDevice, peer: egressDevice + "p", mtu: 1500)
        try run(["/usr/sbin/ip", "-n", commandNS, "link", "add", egressDevice, "type", "veth", "peer", "name", egressDevice + "p"])
        let firewall = Firewall(thread: thread, logger: logger)
        let present = floatRules(count)
        try await firewall.apply(FirewallState(rules: present))
        // Populate the commands side in one iptables-legacy-restore, which is fast; only the measured
        // float/defloat use per-rule commands.
        var restore = "*nat\n"
        for i in 0..<count {
            restore += "-A PREROUTING -d \(floatingAddress(i))/32 -j DNAT --to-destination \(privateAddress(i))\n"
            restore += "-A POSTROUTING -s \(privateAddress(i))/32 -j SNAT --to-source \(floatingAddress(i))\n"
        }
        restore += "COMMIT\n"
        let restoreFile = NSTemporaryDirectory() + "\(runID)-restore"
        try restore.write(toFile: restoreFile, atomically: true, encoding: .utf8)
        try run(["/bin/sh", "-c", "/usr/sbin/ip netns exec \(commandNS) /usr/sbin/iptables-legacy-restore -w < \(restoreFile)"])
        try? FileManager.default.removeItem(atPath: restoreFile)

        let extraFloating = floatingAddress(count + 1)
        let extraPrivate = privateAddress(count + 1)
        let withExtra = FirewallState(rules: present + [.dnat(floating: extraFloating, to: extraPrivate), .snat(source: extraPrivate, to: extraFloating)])
        let withoutExtra = FirewallState(rules: present)
        let extraPrefix = try IPv4Prefix(address: extraFloating, length: 32)
        var moduleFloat: [Double] = []
        var moduleDefloat: [Double] = []
        var commandFloat: [Double] = []
        var commandDefloat: [Double] = []
        let ipt = ["/usr/sbin/ip", "netns", "exec", commandNS, "/usr/sbin/iptables-legacy", "-w", "-t", "nat"]
        for _ in 0..<floatRepetitions {
            moduleFloat.append(seconds(try await clock.measure {
                try await session.addAddress(extraPrefix, to: egressDevice)
                try await firewall.apply(withExtra)
            }))
            moduleDefloat.append(seconds(try await clock.measure {
                try await firewall.apply(withoutExtra)
                try await session.deleteAddress(extraPrefix, from: egressDevice)
            }))
            commandFloat.append(seconds(try clock.measure {
                try run(["/usr/sbin/ip", "-n", commandNS, "addr", "add", "\(extraPrefix)", "dev", egressDevice])
                try run(ipt + ["-A", "PREROUTING", "-d", "\(extraFloating)/32", "-j", "DNAT", "--to-destination", "\(extraPrivate)"])
                try run(ipt + ["-A", "POSTROUTING", "-s", "\(extraPrivate)/32", "-j", "SNAT", "--to-source", "\(extraFloating)"])
            }))
            commandDefloat.append(seconds(try clock.measure {
                try run(ipt + ["-D", "PREROUTING", "-d", "\(extraFloating)/32", "-j", "DNAT", "--to-destination", "\(extraPrivate)"])
                try run(ipt + ["-D", "POSTROUTING", "-s", "\(extraPrivate)/32", "-j", "SNAT", "--to-source", "\(extraFloating)"])
                try run(["/usr/sbin/ip", "-n", commandNS, "addr", "del", "\(extraPrefix)", "dev", egressDevice])
            }))
        }
        moduleFloatMedians[count] = median(moduleFloat)
        commandFloatMedians[count] = median(commandFloat)
        report.append("| \(count) | \(formatMilliseconds(median(moduleFloat))) | \(formatMilliseconds(median(moduleDefloat))) | \(formatMilliseconds(median(commandFloat))) | \(formatMilliseconds(median(commandDefloat))) |")
        try NetworkNamespace.delete(named: moduleNS)
        try NetworkNamespace.delete(named: commandNS)
    }
    // "Growing with N": the extra time per float that 1000 present floats add, in milliseconds.
    let moduleGrowth = (moduleFloatMedians[1000] ?? .nan) - (moduleFloatMedians[0] ?? .nan)
    let commandGrowth = (commandFloatMedians[1000] ?? .nan) - (commandFloatMedians[0] ?? .nan)
    report.append("\nWhat 1000 present floats add to one float: sfnode +\(formatMilliseconds(moduleGrowth)), commands +\(formatMilliseconds(commandGrowth)).")
    report.append("Targets: sfnode's median float under 2 ms with 1000 present; growth no faster than the commands'.\n")
    if !floatCounts.isEmpty {
        if (moduleFloatMedians[1000] ?? .infinity) >= 0.002 { failures.append("(b) median float with 1000 present is not under 2 ms") }
        if moduleGrowth > commandGrowth { failures.append("(b) sfnode's float time grows faster with N than the commands'") }
    }

    // (c) Peak memory.
    report.append("## (c) Peak memory\n")
    report.append("| process | peak RSS |")
    report.append("| --- | --- |")
    report.append("| this benchmark process: sfnode's side of everything above, in-process | \(peakRSS(RUSAGE_SELF.rawValue) / 1024) MiB |")
    report.append("| one `ip -n NS link add … type veth` | \(try commandPeakRSS(["/usr/sbin/ip", "-n", node, "link", "add", "\(runID)rss", "type", "veth", "peer", "name", "\(runID)rsp"])) MiB |")
    report.append("| one `iptables-legacy -t nat -A` in a namespace | \(try commandPeakRSS(["/usr/sbin/ip", "netns", "exec", node, "/usr/sbin/iptables-legacy", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "10.9.9.9/32", "-j", "MASQUERADE"])) MiB |")
    report.append("")

    report += try await TapFilterBenchmark.report()
} catch {
    cleanup()
    FileHandle.standardError.write(Data("benchmark failed: \(error)\n".utf8))
    exit(1)
}

print(report.joined(separator: "\n"))
if !failures.isEmpty {
    print("**Targets missed:** " + failures.joined(separator: "; "))
}
