/// Work run once per key however many callers ask for it at the same time: a caller that comes
/// while it runs waits for the same result instead of starting it again. Held by an actor, whose
/// isolation orders the joins.
public struct SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private var running: [Key: Task<Value, any Error>] = [:]

    public init() {}

    /// The keys whose work runs now.
    public var keys: some Collection<Key> { running.keys }

    /// The work running for `key`, or `start`ed now; `started` says which. The caller that started
    /// it calls ``end(_:)`` once it is done (whatever the outcome), so that a later ask starts anew.
    public mutating func join(_ key: Key, start: () -> Task<Value, any Error>) -> (task: Task<Value, any Error>, started: Bool) {
        if let task = running[key] { return (task, false) }
        let task = start()
        running[key] = task
        return (task, true)
    }

    public mutating func end(_ key: Key) {
        running[key] = nil
    }
}
