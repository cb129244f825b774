import SFBlobs

// The blob module's errors by their ControlError code, for the use cases, the agent's retry
// decision and (next) the API's statuses alike.

extension ImageError: ControlErrorConvertible {
    /// A refused or broken image fails the instance for good; a full disk too, with its own code,
    /// since retrying cannot make room.
    public var controlError: ControlError {
        switch self {
        case .diskFull: return ControlError(.insufficientResources, description)
        default: return ControlError(isRetryable ? .internal : .invalidArgument, description)
        }
    }
}

extension FetchError: ControlErrorConvertible {
    /// A passing network failure is retried; a 404, a wrong checksum or a refused address is not.
    public var controlError: ControlError {
        if case .notFound = self { return ControlError(.notFound, description) }
        return ControlError(isRetryable ? .internal : .invalidArgument, description)
    }
}

extension BlobError: ControlErrorConvertible {
    public var controlError: ControlError {
        switch self {
        case .diskFull: return ControlError(.insufficientResources, description)
        case .checksumMismatch, .invalidRange: return .invalid(description)
        case .missing, .uploadGone: return .notFound(description)
        case .io: return ControlError(.internal, description)
        }
    }
}

extension PeerError: ControlErrorConvertible {
    /// A node that could not be reached (or failed) may answer later: not ready, so a job waits
    /// rather than spends its attempts (unknown is not gone). A node without the data is not found;
    /// one that refuses this node's signature is a cluster set up wrongly.
    public var controlError: ControlError {
        switch self {
        case .status(_, 404, _): return .notFound(description)
        case .status(_, 403, _): return ControlError(.internal, description)
        default: return ControlError(isTransient ? .notReady : .internal, description)
        }
    }
}
