import Foundation
import SFSystem
import Synchronization

/// Cleanup steps a test registers as it creates things, run in reverse order however the test
/// ends. Every step runs even when an earlier one fails; the first failure is rethrown at the end.
public final class Teardown: Sendable {
    private let steps = Mutex<[(String, @Sendable () async throws -> Void)]>([])

    public init() {}

    /// Registers `step`, named for the error message if it fails.
    public func add(_ name: String, _ step: @escaping @Sendable () async throws -> Void) {
        steps.withLock { $0.append((name, step)) }
    }

    /// Creates each named network namespace, registering its deletion.
    public func createNamespaces(_ names: [String]) throws {
        for name in names {
            try NetworkNamespace.create(named: name)
            add("namespace \(name)") { try NetworkNamespace.delete(named: name) }
        }
    }

    /// Runs every registered step once, newest first.
    public func run() async throws {
        let pending = steps.withLock { steps in
            defer { steps.removeAll() }
            return steps
        }
        var failures: [String] = []
        for (name, step) in pending.reversed() {
            do { try await step() } catch { failures.append("\(name): \(error)") }
        }
        if !failures.isEmpty { throw TeardownError(failures: failures) }
    }
}

/// One or more cleanup steps failed.
public struct TeardownError: Error, CustomStringConvertible {
    public let failures: [String]
    public var description: String { "teardown failed: " + failures.joined(separator: "; ") }
}
