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
        case .missing: return .notFound(description)
        case .io: return ControlError(.internal, description)
        }
    }
}
