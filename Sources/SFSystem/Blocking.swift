import Dispatch

/// Runs blocking work (getaddrinfo, qemu-img, xorriso, a gunzip of gigabytes, fsync, reading a file)
/// on a Dispatch worker thread and awaits it, so that it never occupies one of the few
/// cooperative-pool threads that every other task in the agent (or the API server) needs.
public func runBlocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try work() })
        }
    }
}
