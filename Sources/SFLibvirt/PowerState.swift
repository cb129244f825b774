import CLibvirt

/// A domain's power state as sfnode reports it: Shaken Fist's four states over libvirt's eight.
public enum PowerState: String, Sendable, CaseIterable, Codable {
    /// Running, or blocked, or shutting down: the guest is live.
    case on
    /// Not running (libvirt's SHUTOFF); a persistent domain can be started again.
    case off
    /// The virtual CPUs are stopped (by sfnode, libvirt or the guest's own ACPI sleep) and memory is kept.
    case paused
    /// The guest crashed and libvirt left it stopped in that state.
    case crashed

    /// Maps libvirt's `virDomainState`: SHUTOFF is off, CRASHED is crashed, PAUSED and PMSUSPENDED
    /// are paused, and everything else (running, blocked, shutting down, no state) is on.
    public init(libvirtState state: Int32) {
        switch UInt32(bitPattern: state) {
        case VIR_DOMAIN_SHUTOFF.rawValue: self = .off
        case VIR_DOMAIN_CRASHED.rawValue: self = .crashed
        case VIR_DOMAIN_PAUSED.rawValue, VIR_DOMAIN_PMSUSPENDED.rawValue: self = .paused
        default: self = .on
        }
    }
}
