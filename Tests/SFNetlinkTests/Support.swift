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
struct CommandOutput {
    var status: Int32
    var output: String
}

/// Runs a read-only inspection command (`ip ... show`, `bridge fdb show`) and captures stdout + stderr.
func inspect(_ arguments: [String]) throws -> CommandOutput {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandOutput(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// `ip -n NS -d link show dev NAME`.
func ipLink(_ namespace: String, _ name: String) throws -> CommandOutput {
    try inspect(["ip", "-n", namespace, "-d", "link", "show", "dev", name])
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
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
