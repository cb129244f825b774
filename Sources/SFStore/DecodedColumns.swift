import Foundation
import Synchronization

/// The values of JSON columns (an instance's disks, video and config, metadata values, a node's
/// roles), decoded once per distinct text.
///
/// Decoding is a pure function of the text, so a value found here is exactly what decoding would
/// give, with nothing to invalidate when rows change. `JSONDecoder` was a tenth of the CPU time of
/// `GET /instances/<uuid>` (BENCHMARKS.md (j)); looking the text up costs a hash of a few hundred
/// bytes. At most `limit` texts of at most ``longestKept`` bytes are kept, and all are dropped when it is reached: a busy store
/// decodes again, never grows without bound.
final class DecodedColumns: Sendable {
    private struct Key: Hashable {
        let type: ObjectIdentifier
        let text: String
    }

    private let values = Mutex<[Key: any Sendable]>([:])
    private let limit: Int

    init(limit: Int = 4096) {
        self.limit = limit
    }

    static let shared = DecodedColumns()

    /// Longer texts (a large metadata value, say) are decoded each time rather than kept.
    static let longestKept = 4096

    /// A JSON column's `text` decoded as `type` through ``shared``; a failure is
    /// ``StoreError/corrupt(_:)`` naming `what` (the table and column), spelled only then: a list
    /// reads thousands of JSON columns.
    static func jsonValue<T: Decodable & Sendable>(_ type: T.Type, _ text: String, _ what: @autoclosure () -> String) throws -> T {
        do {
            return try shared.value(type, text)
        } catch {
            throw StoreError.corrupt("\(what()): \(error)")
        }
    }

    /// `text` decoded as `type`, from memory when it was decoded before.
    func value<T: Decodable & Sendable>(_ type: T.Type, _ text: String) throws -> T {
        let key = Key(type: ObjectIdentifier(type), text: text)
        if let known = values.withLock({ $0[key] }) as? T { return known }
        let decoded = try JSONDecoder().decode(type, from: Data(text.utf8))
        guard text.utf8.count <= Self.longestKept else { return decoded }
        values.withLock { values in
            if values.count >= limit { values.removeAll(keepingCapacity: true) }
            values[key] = decoded
        }
        return decoded
    }
}
