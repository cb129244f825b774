import Foundation
import SFSystem

/// Names for what tests create. Everything starts with ``prefix`` so that
/// `scripts/cleanup-test-leftovers` can remove what a killed run left behind, and carries a random
/// suffix so concurrent runs never collide. Names stay within the kernel's 15-byte device limit.
public enum TestNames {
    /// The prefix of every namespace, device, domain and file a test creates.
    public static let prefix = "sft"

    /// A fresh name: `sft` + 6 random hex digits + `role` (at most 6 characters).
    public static func unique(_ role: String) -> String {
        precondition(role.utf8.count <= 6, "role '\(role)' is longer than 6 characters")
        let random = String(UInt32.random(in: 0...0xff_ffff), radix: 16)
        return prefix + String(repeating: "0", count: 6 - random.count) + random + role
    }
}

/// Whether the process may create namespaces, devices and rules. Integration tests need root.
public let runningAsRoot: Bool = getuid() == 0

/// Creates a throwaway namespace, runs `body`, and deletes the namespace however `body` ends.
public func withTestNamespace<T>(
    _ role: String, _ body: (String) async throws -> T
) async throws -> T {
    let name = TestNames.unique(role)
    try NetworkNamespace.create(named: name)
    do {
        let result = try await body(name)
        try NetworkNamespace.delete(named: name)
        return result
    } catch {
        try? NetworkNamespace.delete(named: name)
        throw error
    }
}
