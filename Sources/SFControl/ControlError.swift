import Foundation
import SFStore

/// Why a use case (or a job carrying one out) did not do what was asked: one error type for the
/// command line, the REST API and the agent. Its ``code`` says what kind of failure it is, which the
/// API maps to an HTTP status and the agent to a retry decision; its message names what is wrong.
public struct ControlError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What kind of failure it is.
    public enum Code: String, Sendable, CaseIterable {
        /// The request is malformed or out of range; it will never succeed as given.
        case invalidArgument = "invalid-argument"
        /// What the request names does not exist (or is not the caller's to see).
        case notFound = "not-found"
        /// The object exists but its state (or an address already taken) forbids the request.
        case conflict
        /// Something the request depends on is still being made; the same request succeeds later.
        case notReady = "not-ready"
        /// No node, address or space is left for it.
        case insufficientResources = "insufficient-resources"
        /// A failure of sfnode or the host itself (the store, libvirt, the kernel).
        case `internal`
        /// The namespace's quota (or another per-tenant limit) refuses it.
        case quotaExceeded = "quota-exceeded"
        /// The request's data is larger than its limit.
        case tooLarge = "too-large"
        /// Too much is already queued or in flight; the same request succeeds later.
        case tooBusy = "too-busy"
        /// The caller may never do this, whatever the state: a reserved name, the system namespace.
        case forbidden
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Whether trying the same thing again can help: a dependency that is not ready yet, or a
    /// passing failure of the host. Everything else fails the same way every time.
    public var isRetryable: Bool { code == .notReady || code == .internal }

    public var description: String { message }

    /// An invalid argument.
    public static func invalid(_ message: String) -> ControlError { ControlError(.invalidArgument, message) }
    /// Something not found.
    public static func notFound(_ message: String) -> ControlError { ControlError(.notFound, message) }
    /// A state or resource conflict.
    public static func conflict(_ message: String) -> ControlError { ControlError(.conflict, message) }
    /// A dependency that is not ready yet.
    public static func notReady(_ message: String) -> ControlError { ControlError(.notReady, message) }
    /// A command sfnode ran on the host (qemu-img, dnsmasq, genisoimage) that failed: an internal,
    /// retryable failure whose message carries the command's own output.
    public static func commandFailed(_ command: String, _ output: String) -> ControlError {
        ControlError(.internal, "\(command) failed: \(output)")
    }

    /// Any error as a ControlError: store errors by their kind, errors that know their code
    /// (``ControlErrorConvertible``) by it, and anything else as an internal, retryable failure.
    public init(classifying error: any Error) {
        switch error {
        case let error as ControlError: self = error
        case let error as any ControlErrorConvertible: self = error.controlError
        case let error as StoreError: self = ControlError(store: error)
        case let error as DecodingError: self = .invalid(Self.describe(error))
        default: self = ControlError(.internal, "\(error)")
        }
    }

    private init(store error: StoreError) {
        switch error {
        case .notFound: self.init(.notFound, error.description)
        case .alreadyExists, .invalidTransition, .addressUnavailable, .notLeaseOwner, .jobNotRunning:
            self.init(.conflict, error.description)
        case .addressesExhausted: self.init(.insufficientResources, error.description)
        case .invalidTarget, .invalidArgument: self.init(.invalidArgument, error.description)
        case .corrupt, .backend: self.init(.internal, error.description)
        }
    }

    /// A decoding error as a sentence naming the field: `"instance_uuid" is missing`.
    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context, _ extra: (any CodingKey)? = nil) -> String {
            let keys = (context.codingPath + (extra.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the value" : "\"" + keys.joined(separator: ".") + "\""
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(path(context, key)) is missing"
        case .valueNotFound(_, let context): return "\(path(context)) is null"
        case .typeMismatch(let type, let context): return "\(path(context)) is not a \(type)"
        case .dataCorrupted(let context): return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// An error that knows which ``ControlError/Code`` it is (the agent's own errors, for example).
public protocol ControlErrorConvertible: Error {
    var controlError: ControlError { get }
}
