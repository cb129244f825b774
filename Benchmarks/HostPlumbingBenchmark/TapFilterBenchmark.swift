import Foundation
import SFNetlink
import SFSystem

/// (m) TCP throughput from a "guest" through a filtered veth (sfnode's anti-spoofing filter on the
/// host end's ingress, standing in for a tap) against an unfiltered one, with iperf3 between
/// namespaces of the run's own, interleaved in the same run. The guest sends (iperf3's client), so
/// every data segment crosses the filter; the server's ACKs go the other way, unfiltered, as on a tap.
enum TapFilterBenchmark {
    static let iperf3 = "/usr/bin/iperf3"
    static let rounds = Int(ProcessInfo.processInfo.environment["SFNODE_BENCH_IPERF_ROUNDS"] ?? "") ?? 5
    static let secondsPerRun = Int(ProcessInfo.processInfo.environment["SFNODE_BENCH_IPERF_SECONDS"] ?? "") ?? 5

    struct Path {
        let name: String
        let clientNamespace: String
        let hostEnd: String
        let server: IPv4Address
        let client: IPv4Address
        let port: UInt16
    }

    static func report() async throws -> [String] {
        let server = "\(runID)tfs"
        let paths = [
            Path(name: "filtered", clientNamespace: "\(runID)tff", hostEnd: "\(runID)tfh", server: address(0x0a50_0101),
                 client: address(0x0a50_0102), port: 5301),
            Path(name: "unfiltered", clientNamespace: "\(runID)tfu", hostEnd: "\(runID)tuh", server: address(0x0a50_0201),
                 client: address(0x0a50_0202), port: 5302),
        ]
        for namespace in [server] + paths.map(\.clientNamespace) { try NetworkNamespace.create(named: namespace) }
        defer { for namespace in [server] + paths.map(\.clientNamespace) { try? NetworkNamespace.delete(named: namespace) } }
        let serverSession = try NetlinkSession(namespace: server, logger: logger)
        let serverThread = try await NamespaceExecutor.start(namespace: server)
        var servers: [ChildProcess] = []
        defer { for child in servers { child.terminate(); child.waitUntilExit() } }
        try await serverSession.setLinkUp("lo", true)
        for path in paths {
            let guestEnd = "\(path.hostEnd)g"
            try await serverSession.createVethPair(name: path.hostEnd, peer: guestEnd, peerNamespace: path.clientNamespace)
            try await serverSession.addAddress(try prefix(path.server, 24), to: path.hostEnd)
            try await serverSession.setLinkUp(path.hostEnd, true)
            let client = try NetlinkSession(namespace: path.clientNamespace, logger: logger)
            try await client.addAddress(try prefix(path.client, 24), to: guestEnd)
            for link in ["lo", guestEnd] { try await client.setLinkUp(link, true) }
            if path.name == "filtered", let mac = try await client.link(named: guestEnd)?.mac {
                try await serverSession.applyTapFilter(device: path.hostEnd, policy: TapFilterPolicy(mac: mac, address: path.client))
            }
            let argv = [iperf3, "--server", "--bind", path.server.description, "--port", "\(path.port)"]
            servers.append(try await serverThread.executor.run { try ChildProcess.spawn(argv, outputPath: nil) })
        }
        try await Task.sleep(for: .milliseconds(500))  // the servers bind

        var results: [String: [Double]] = [:]
        for _ in 0..<rounds {
            for path in paths {
                results[path.name, default: []].append(try await throughput(path))
            }
        }
        let filteredHost = paths[0].hostEnd
        let counters = try await serverSession.tapFilterCounters(device: filteredHost)
        let filtered = median(results["filtered"] ?? [])
        let unfiltered = median(results["unfiltered"] ?? [])
        let loss = (1 - filtered / unfiltered) * 100
        func gbit(_ values: [Double]) -> String { values.map { String(format: "%.2f", $0 / 1e9) }.joined(separator: ", ") }
        return [
            "## (m) Throughput through a filtered tap\n",
            "iperf3 TCP, guest → host, \(secondsPerRun) s per run, \(rounds) rounds alternating the two paths; a veth pair between"
                + " two namespaces of the run stands in for the tap. Gbit/s:\n",
            "| path | median | runs |",
            "| --- | --- | --- |",
            "| sfnode's anti-spoofing filter on the host end's ingress (clsact + classic BPF) | "
                + String(format: "%.2f", filtered / 1e9) + " | \(gbit(results["filtered"] ?? [])) |",
            "| no filter | " + String(format: "%.2f", unfiltered / 1e9) + " | \(gbit(results["unfiltered"] ?? [])) |",
            "",
            String(format: "The filter costs %.1f %% of the throughput (target: at most 5 %%).", loss)
                + " It saw \(counters?.packets ?? 0) frames (GSO super-frames count once) and dropped \(counters?.dropped ?? 0).",
            "",
        ]
    }

    /// One iperf3 run from the path's guest namespace; bits per second the server received.
    static func throughput(_ path: Path) async throws -> Double {
        let thread = try await NamespaceExecutor.start(namespace: path.clientNamespace)
        let argv = [
            iperf3, "--client", path.server.description, "--port", "\(path.port)", "--time", "\(secondsPerRun)", "--json",
        ]
        let output = try await thread.executor.run { try ChildProcess.run(argv) }
        guard output.status == 0, let data = output.stdout.data(using: .utf8),
            let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
            let bits = received["bits_per_second"] as? Double
        else {
            throw CommandFailed(argv: argv, status: output.status, stderr: output.stderr + output.stdout.prefix(400))
        }
        return bits
    }
}
