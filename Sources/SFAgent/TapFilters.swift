import SFNetlink
import SFSystem

extension InstancePlan.Interface {
    /// What the interface's guest may send through its tap; nil when its network turned the
    /// anti-spoofing filter off.
    public var tapFilterPolicy: TapFilterPolicy? {
        spoofFilter ? TapFilterPolicy(mac: mac, address: address) : nil
    }
}

extension NetlinkSession {
    /// Gives the interface's tap `device` the filter its network asks for: the anti-spoofing filter
    /// (replacing one that is there), or none when the network's admin turned it off.
    ///
    /// Called where taps are made, before the domain starts, and again wherever a tap arrives in
    /// another namespace, since the kernel drops a device's filters when it changes namespace.
    func ensureTapFilter(_ interface: InstancePlan.Interface, device: String) throws {
        if let policy = interface.tapFilterPolicy {
            try applyTapFilter(device: device, policy: policy)
        } else {
            try removeTapFilter(device: device)
        }
    }
}
