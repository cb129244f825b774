#if canImport(Glibc)
import Glibc
#endif

/// A failed system call, carrying errno and the C library's own text for it.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What was being attempted, such as `setns(/run/netns/x)`.
    public let operation: String
    /// The errno value the call left.
    public let code: Int32

    /// An error for `operation` that failed with errno `code` (or a pthread function's return value).
    public init(_ operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    /// Captures the calling thread's current errno.
    public static func fromErrno(_ operation: String) -> SystemError {
        SystemError(operation, code: errno)
    }

    /// `<operation>: <strerror text> (errno <code>)`.
    public var description: String {
        "\(operation): \(String(cString: strerror(code))) (errno \(code))"
    }
}
