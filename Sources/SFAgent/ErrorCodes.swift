import SFBlobs
import SFControl
import SFLibvirt

// The agent's own errors by their ControlError code, which the job runner's retry decision reads.

extension AgentError: ControlErrorConvertible {
    public var controlError: ControlError {
        switch self {
        case .invalid(let message): return .invalid(message)
        case .commandFailed: return ControlError(.internal, description)
        }
    }
}

extension DomainSpecError: ControlErrorConvertible {
    /// A domain that libvirt would refuse as specified is refused for good: retrying cannot fix it.
    public var controlError: ControlError { .invalid("\(self)") }
}

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
