import CLibvirt

/// A domain's power state as sfnode reports it: Shaken Fist's four states over libvirt's eight.
public enum PowerState: String, Sendable, CaseIterable, Codable {
    case on, off, paused, crashed

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
