import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// dnsmasq serving DHCP only (no DNS: `--port=0 --no-resolv`) inside a test's network namespace.
/// It is spawned from a thread that has entered the namespace, so no `ip netns exec` is involved.
public final class TestDHCPServer: Sendable {
    private let process: ChildProcess
    /// The lease and pid files, removed on stop.
    private let files: [String]

    private init(process: ChildProcess, files: [String]) {
        self.process = process
        self.files = files
    }

    /// Starts dnsmasq on `interface` in `namespace`, handing each MAC its fixed address and `router` as
    /// the gateway, and waits until it has bound its DHCP socket.
    public static func start(
        in namespace: String, interface: String, router: IPv4Prefix, hosts: [(MACAddress, IPv4Address)], runID: String
    ) async throws -> TestDHCPServer {
        try FileManager.default.createDirectory(atPath: TestGuest.runDirectory, withIntermediateDirectories: true)
        let leases = TestGuest.runDirectory + "/\(runID).leases"
        let pidFile = TestGuest.runDirectory + "/\(runID).dnsmasq.pid"
        var arguments = [
            "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0",
            "--bind-interfaces", "--interface=\(interface)", "--except-interface=lo",
            "--dhcp-range=\(router.host(2)),static,\(router.netmask),1h",
            "--dhcp-option=3,\(router.address)", "--dhcp-leasefile=\(leases)", "--pid-file=\(pidFile)",
            "--dhcp-authoritative", "--log-facility=-", "--log-dhcp",
        ]
        arguments += hosts.map { "--dhcp-host=\($0.0),\($0.1)" }
        let argv = arguments
        let thread = try NamespaceExecutor(namespace: namespace)
        let log = TestGuest.runDirectory + "/\(runID).dnsmasq.log"
        let process = try await thread.executor.run {
            try ChildProcess.spawn(["/usr/sbin/dnsmasq"] + argv, outputPath: log)
        }
        let server = TestDHCPServer(process: process, files: [leases, pidFile, log])
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: pidFile) && process.isRunning {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard process.isRunning else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            server.stop()
            throw TestSocketError.timedOut(
                "dnsmasq in \(namespace) exited at start with status \(process.terminationStatus ?? -1): \(output)")
        }
        return server
    }

    /// Stops dnsmasq and removes its files.
    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        for file in files { try? FileManager.default.removeItem(atPath: file) }
    }

    /// The pids of running dnsmasq processes whose command line mentions `text`.
    public static func runningProcesses(mentioning text: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry in
            guard let pid = Int32(entry),
                let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { return nil }
            let command = String(decoding: raw, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
            return command.contains("dnsmasq") && command.contains(text) ? pid : nil
        }
    }
}
