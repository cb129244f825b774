/// Why a store operation was refused or failed. Every case names the object and the reason, so the
/// message can go straight into a job's `last_error` or an operator's terminal.
public enum StoreError: Error, CustomStringConvertible, Equatable, Sendable {
    /// No object of `type` (such as "instance") with identifier `id` exists.
    case notFound(type: String, id: String)
    /// An object of `type` with identifier `id` already exists.
    case alreadyExists(type: String, id: String)
    /// The state machine of `type` does not allow `from` → `to`.
    case invalidTransition(type: String, id: String, from: String, to: String)
    /// An address could not be given out; `reason` says which one and why.
    case addressUnavailable(String)
    /// Every address of `pool` (a network or floating range) is taken.
    case addressesExhausted(pool: String)
    /// Job `jobID` is not leased by `owner` (a ``JobLease/holder``): it was never claimed by it, its
    /// lease lapsed and the job was claimed again (by another agent or the same one), or it
    /// already finished. `actual` is the current holder, if any.
    case notLeaseOwner(jobID: Int64, owner: String, actual: String?)
    /// Job `jobID` is in `state`, where the operation does not apply.
    case jobNotRunning(jobID: Int64, state: String)
    /// A job target that is empty, malformed or names an unknown role.
    case invalidTarget(String)
    /// An argument is out of range or malformed; the message says which and why.
    case invalidArgument(String)
    /// A stored row could not be read back (a corrupted or foreign database).
    case corrupt(String)
    /// The backend itself failed (I/O, locking, SQL); the message is the backend's.
    case backend(String)

    /// A sentence naming what is wrong.
    public var description: String {
        switch self {
        case .notFound(let type, let id): return "\(type) \(id) not found"
        case .alreadyExists(let type, let id): return "\(type) \(id) already exists"
        case .invalidTransition(let type, let id, let from, let to):
            return "\(type) \(id): invalid state transition \(from) -> \(to)"
        case .addressUnavailable(let reason): return "address unavailable: \(reason)"
        case .addressesExhausted(let pool): return "no free address left in \(pool)"
        case .notLeaseOwner(let jobID, let owner, let actual):
            return "job \(jobID) is not leased by \(owner) (lease holder: \(actual ?? "none"))"
        case .jobNotRunning(let jobID, let state): return "job \(jobID) is \(state), not running"
        case .invalidTarget(let reason): return "invalid job target: \(reason)"
        case .invalidArgument(let reason): return "invalid argument: \(reason)"
        case .corrupt(let reason): return "corrupt store row: \(reason)"
        case .backend(let reason): return "store backend error: \(reason)"
        }
    }
}

extension StoreError {
    /// `error` itself when it is a StoreError, else the backend's failure with its message.
    init(backendFailure error: any Error) {
        self = error as? StoreError ?? .backend("\(error)")
    }
}
