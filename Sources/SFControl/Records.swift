import Foundation
import SFStore

extension Control {
    /// An object's events (of `eventType` only, when given), newest first, at most `limit` (1 to 1000).
    public func events(_ type: ObjectType, _ uuid: UUID, eventType: EventType? = nil, limit: Int = 100) async throws -> [Event] {
        try await events(ObjectKey(type, uuid), eventType: eventType, limit: limit)
    }

    /// An object's events (of `eventType` only, when given), newest first, at most `limit` (1 to 1000).
    public func events(_ key: ObjectKey, eventType: EventType? = nil, limit: Int = 100) async throws -> [Event] {
        guard (1...1000).contains(limit) else { throw ControlError.invalid("limit \(limit) is outside 1...1000") }
        return try await controlled { try await store.events(objectType: key.type.rawValue, objectUUID: key.id, type: eventType, limit: limit) }
    }

    /// Follows an object's events as they are recorded, oldest first, starting with the last
    /// `backlog` ones; the stream ends when the consuming task is cancelled. The store is polled
    /// every `interval` (events come from other processes too, so there is nothing to wait on).
    public func followEvents(_ type: ObjectType, _ uuid: UUID, backlog: Int = 10, interval: Duration = .milliseconds(250))
        -> AsyncThrowingStream<Event, any Error>
    {
        followEvents(ObjectKey(type, uuid), backlog: backlog, interval: interval)
    }

    /// ``followEvents(_:_:backlog:interval:)`` of any object, nodes (by name) too.
    public func followEvents(_ key: ObjectKey, backlog: Int = 10, interval: Duration = .milliseconds(250))
        -> AsyncThrowingStream<Event, any Error>
    {
        AsyncThrowingStream { continuation in
            let task = Task {
                var seen = Set<Event>()
                var first = true
                do {
                    while !Task.isCancelled {
                        // The first read seeds what was seen with every event the store returns
                        // (a backlog-sized read would let the next, wider read yield older ones);
                        // after it, a window of 200 holds everything since the last look unless
                        // more than 200 events came within one interval.
                        let recent = try await events(key, limit: first ? 1000 : 200)
                        let fresh = recent.reversed().filter { !seen.contains($0) }
                        for event in first ? Array(fresh.suffix(backlog)) : fresh { continuation.yield(event) }
                        // Only what the next read can return again: an event older than this
                        // read's oldest never comes back, so a long follow holds a bounded set.
                        seen = Set(recent)
                        first = false
                        try await Task.sleep(for: interval)
                    }
                    continuation.finish()
                } catch is CancellationError {
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// An object's metadata.
    public func metadata(_ type: ObjectType, _ uuid: UUID) async throws -> [String: JSONValue] {
        try await metadata(ObjectKey(type, uuid))
    }

    /// An object's metadata.
    public func metadata(_ key: ObjectKey) async throws -> [String: JSONValue] {
        try await controlled { try await store.metadata(objectType: key.type.rawValue, objectUUID: key.id) }
    }

    /// Sets one metadata key; `tags` and `affinity` of an instance are checked as placement reads them.
    public func setMetadata(_ type: ObjectType, _ uuid: UUID, key: String, value: JSONValue) async throws {
        try await setMetadata(ObjectKey(type, uuid), key: key, value: value)
    }

    /// Sets one metadata key; `tags` and `affinity` of an instance are checked as placement reads them.
    public func setMetadata(_ object: ObjectKey, key: String, value: JSONValue) async throws {
        try checkMetadataKey(key)
        if object.type == .instance { try checkPlacementMetadata([key: value]) }
        try Self.checkMetadataValue(key, value)
        try await checkMetadataCount(object, key: key)
        try await controlled { try await store.setMetadata(objectType: object.type.rawValue, objectUUID: object.id, key: key, value: value) }
    }

    /// Removes one metadata key; removing an absent key changes nothing.
    public func deleteMetadata(_ object: ObjectKey, key: String) async throws {
        try checkMetadataKey(key)
        try await controlled { try await store.deleteMetadata(objectType: object.type.rawValue, objectUUID: object.id, key: key) }
    }

    func checkMetadataKey(_ key: String) throws {
        guard !key.isEmpty, key.utf8.count <= Names.metadataKeyLimit,
            !key.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == "/" })
        else {
            throw ControlError.invalid("metadata key '\(key.prefix(40))' must be 1 to \(Names.metadataKeyLimit) bytes with no '/' or control characters")
        }
    }

    /// Submits a job given as text (an operator's `sfnode job submit`), refusing an unknown kind or a
    /// payload that does not decode, by name, before anything is queued.
    public func submit(kind: String, payload: JSONValue, target: JobTarget, maxAttempts: Int = 5) async throws -> Job {
        let order = try JobOrder.decode(kind: kind, payload: payload)
        return try await controlled {
            guard let job = try await store.enqueue([order.job(for: target, maxAttempts: maxAttempts)]).first else {
                throw ControlError(.internal, "the store queued no job")
            }
            return job
        }
    }
}
