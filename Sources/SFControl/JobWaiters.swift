import Foundation
import Synchronization

/// The requests now waiting for their jobs (power operations, snapshots asked with a label), per
/// namespace: a request that waits holds a connection for up to a minute (an hour for a label), so
/// one tenant must not tie up the API with them. Shared by every copy of a ``Control``.
final class JobWaiters: Sendable {
    private let waiting = Mutex<[String: Int]>([:])

    /// Runs `body` holding one of `namespace`'s `limit` waiting places, or refuses at once (429,
    /// nothing queued) when they are all taken.
    func waiting<T: Sendable>(namespace: String, limit: Int, _ body: () async throws -> T) async throws -> T {
        let admitted = waiting.withLock { counts -> Int? in
            let now = counts[namespace, default: 0]
            guard now < limit else { return nil }
            counts[namespace] = now + 1
            return now + 1
        }
        guard admitted != nil else {
            throw ControlError(
                .tooBusy,
                "namespace \(namespace) has \(limit) requests waiting for their jobs; the limit is \(limit) (SFNODE_QUOTA_WAITING_REQUESTS): try again when one has finished")
        }
        defer {
            waiting.withLock { counts in
                let left = counts[namespace, default: 1] - 1
                counts[namespace] = left > 0 ? left : nil
            }
        }
        return try await body()
    }
}
