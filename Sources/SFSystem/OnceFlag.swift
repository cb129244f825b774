import Synchronization

/// True for the first caller of ``claim()`` only: decides which of two racing outcomes (an answer
/// and a timer, say) gets to resume a continuation.
public final class OnceFlag: Sendable {
    private let taken = Atomic<Bool>(false)

    public init() {}

    public func claim() -> Bool { !taken.exchange(true, ordering: .acquiringAndReleasing) }

    /// Whether ``claim()`` was called.
    public var isClaimed: Bool { taken.load(ordering: .acquiring) }
}
