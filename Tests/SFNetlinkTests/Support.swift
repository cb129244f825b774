import Foundation
import Logging
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

let testLogger = Logger(label: "sfnode.test.netlink")

/// Runs `body` with a throwaway namespace and a session inside it.
func withSession<T>(_ role: String, _ body: (String, NetlinkSession) async throws -> T) async throws -> T {
    try await withTestNamespace(role) { namespace in
        let session = try NetlinkSession(namespace: namespace, logger: testLogger)
        return try await body(namespace, session)
    }
}

/// The result of a read-only iproute2 command used to cross-check the bindings.
struct InspectionOutput {
    var status: Int32
    /// Standard output and standard error together.
    var output: String
}

/// Runs a read-only inspection command (`ip ... show`, `bridge fdb show`) and captures stdout + stderr.
func inspect(_ arguments: [String]) throws -> InspectionOutput {
    let result = try ChildProcess.run(["/usr/bin/env"] + arguments)
    return InspectionOutput(status: result.status, output: result.stdout + result.stderr)
}

/// `ip -n NS -d link show dev NAME`.
func ipLink(_ namespace: String, _ name: String) throws -> InspectionOutput {
    try inspect(["ip", "-n", namespace, "-d", "link", "show", "dev", name])
}


/// Names of this process's threads, from `/proc/self/task/*/comm`.
func threadNames() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { task in
        (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Reads a file from the test process's own thread, which never leaves the root namespace.
func readRootFile(_ path: String) throws -> String {
    try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// The flags `ip` prints between `<` and `>` for a link, such as `["BROADCAST", "MULTICAST", "UP"]`.
func linkFlags(_ namespace: String, _ name: String) throws -> [String] {
    let output = try inspect(["ip", "-n", namespace, "-o", "link", "show", "dev", name]).output
    guard let open = output.firstIndex(of: "<"), let close = output.firstIndex(of: ">"), open < close else { return [] }
    return output[output.index(after: open)..<close].split(separator: ",").map(String.init)
}
