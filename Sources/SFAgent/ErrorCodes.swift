import SFControl
import SFLibvirt

// Errors of the libraries under the agent by their ControlError code, which the job runner's retry
// decision reads. The agent's own errors are ControlErrors already.

extension DomainSpecError: ControlErrorConvertible {
    /// A domain that libvirt would refuse as specified is refused for good: retrying cannot fix it.
    public var controlError: ControlError { .invalid("\(self)") }
}
