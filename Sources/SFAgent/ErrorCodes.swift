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
