import Foundation

/// How long the store keeps what would otherwise grow for ever: events, finished jobs and deleted
/// objects. ``NodeStore/prune(_:now:)`` applies it.
///
/// Never pruned, whatever their age: a queued or running job; an object that is not deleted; a
/// deleted object that something still needs (a live job about it, a blob reference it holds or
/// that points at it, an interface on a network); an interface of an instance that is not pruned
/// with it.
public struct RetentionPolicy: Hashable, Sendable {
    /// Events older than this go, for every object alike (Shaken Fist prunes its event log by
    /// age too). There is deliberately no "keep the newest few" floor: an object's row carries its
    /// state and error, and an operator who sets a retention expects nothing older to remain.
    public var eventAge: Duration
    /// At most this many events are kept per object, the newest; one object's busy log cannot fill
    /// the store within ``eventAge``.
    public var eventsPerObject: Int
    /// Succeeded and failed jobs go this long after they finished.
    public var finishedJobAge: Duration
    /// Deleted instances (with their interfaces), networks, artifacts and blobs go this long after
    /// they were deleted, with their events and metadata; until then they stay readable by UUID.
    /// Instances and networks record when they were deleted; artifacts and blobs do not, so their
    /// period starts at the first prune that sees them deleted (at most one prune interval late,
    /// never early).
    public var deletedAge: Duration
    /// The most rows one prune transaction deletes, so that a prune never holds the store's write
    /// lock for long: other writers wait at most one batch.
    public var batchRows: Int

    /// Thirty days of events, at most 10,000 per object, a week of finished jobs and of deleted
    /// objects, 1000 rows per transaction.
    public init(
        eventAge: Duration = .seconds(30 * 86_400), eventsPerObject: Int = 10_000, finishedJobAge: Duration = .seconds(7 * 86_400),
        deletedAge: Duration = .seconds(7 * 86_400), batchRows: Int = 1000
    ) {
        self.eventAge = eventAge
        self.eventsPerObject = eventsPerObject
        self.finishedJobAge = finishedJobAge
        self.deletedAge = deletedAge
        self.batchRows = batchRows
    }

    /// ``StoreError/invalidArgument(_:)`` naming the first value that cannot be used.
    public func validate() throws {
        for (name, age) in [("event age", eventAge), ("finished job age", finishedJobAge), ("deleted object age", deletedAge)] {
            guard age >= .zero else { throw StoreError.invalidArgument("retention \(name) \(age) is negative") }
        }
        guard eventsPerObject >= 1 else {
            throw StoreError.invalidArgument("retention events per object \(eventsPerObject) is below 1")
        }
        // An object's last rows (its own and its address leftovers) go in one transaction; below 10
        // rows a batch might never have room for them.
        guard batchRows >= 10 else { throw StoreError.invalidArgument("retention batch of \(batchRows) rows is below 10") }
    }
}

/// What one ``NodeStore/prune(_:now:)`` removed, counted in rows.
public struct PruneReport: Hashable, Sendable, CustomStringConvertible {
    /// Events past their age or beyond their object's cap, and those of pruned objects.
    public var events = 0
    /// Succeeded and failed jobs.
    public var jobs = 0
    /// Deleted instances, with their interfaces (counted apart).
    public var instances = 0
    public var interfaces = 0
    /// Deleted networks, artifacts and blobs.
    public var networks = 0
    public var artifacts = 0
    public var blobs = 0
    /// Metadata rows and leftover address allocations of pruned objects.
    public var otherRows = 0
    /// How many write transactions the prune took.
    public var transactions = 0
    /// The most rows one of them deleted (at most the policy's ``RetentionPolicy/batchRows``).
    public var largestTransaction = 0

    /// Nothing removed yet.
    public init() {}

    /// Every row removed.
    public var total: Int { events + jobs + instances + interfaces + networks + artifacts + blobs + otherRows }

    /// Whether anything was removed.
    public var isEmpty: Bool { total == 0 }

    /// Every count, on one line for the log.
    public var description: String {
        "events \(events), jobs \(jobs), instances \(instances), interfaces \(interfaces), networks \(networks), "
            + "artifacts \(artifacts), blobs \(blobs), other rows \(otherRows) in \(transactions) transactions"
    }
}
