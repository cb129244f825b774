import Foundation
import SFSystem

/// Where and under which names the agent puts what it builds on a host.
///
/// Everything sfnode creates carries a name it can recognise as its own, because "remove only what
/// is provably yours" starts with telling yours apart. Devices live in the host namespace (the root
/// namespace in production, a test's namespace in tests) under short fixed prefixes; the two kinds of
/// object that are global to the machine, network namespaces and taps (libvirtd opens a tap by name
/// in the root namespace), use configurable prefixes so that a test run's objects are its own.
public struct HostLayout: Sendable, Equatable {
    /// The namespace that holds bridges, VXLANs and the outer ends of veths; nil for the root namespace.
    public var hostNamespace: String?
    /// The prefix of every network namespace and libvirt domain the agent creates (a UUID follows).
    public var namespacePrefix: String
    /// The prefix of every tap the agent creates (six hex digits of the interface UUID follow).
    public var tapPrefix: String
    /// The MTU of every link the agent creates for guests: the underlay's less VXLAN's 50 bytes.
    public var mtu: Int

    /// Production defaults: the root namespace, `sfnode-` namespaces, `sfi` taps.
    public init(hostNamespace: String? = nil, namespacePrefix: String = "sfnode-", tapPrefix: String = "sfi", mtu: Int = 1450) {
        self.hostNamespace = hostNamespace
        self.namespacePrefix = namespacePrefix
        self.tapPrefix = tapPrefix
        self.mtu = mtu
    }

    /// The network's namespace on the network node.
    public func namespace(of network: UUID) -> String { namespacePrefix + network.lowercasedString }

    /// The VXLAN device of a network, on every node that has it.
    public func vxlan(_ vxid: UInt32) -> String { "sfvx" + hex6(vxid) }
    /// The bridge the VXLAN, the router veth and the guests' taps are enslaved to.
    public func bridge(_ vxid: UInt32) -> String { "sfbr" + hex6(vxid) }
    /// The host end of the veth whose other end holds the router address in the network namespace.
    public func routerOuter(_ vxid: UInt32) -> String { "sfro" + hex6(vxid) }
    /// The network namespace end of that veth.
    public func routerInner(_ vxid: UInt32) -> String { "sfri" + hex6(vxid) }
    /// The host end of the egress veth, enslaved to the egress bridge.
    public func egressOuter(_ vxid: UInt32) -> String { "sfeo" + hex6(vxid) }

    /// The router's MAC address in the network: fixed by the VXLAN id, so that a namespace made again
    /// (after a reboot, or deleted by hand) answers with the MAC the guests' ARP caches already hold.
    /// Locally administered (06:…), so it never meets an instance's 02:00:00:… or a vendor's.
    public func routerMAC(_ vxid: UInt32) -> MACAddress { fixedMAC(role: 1, vxid) }
    /// The MAC address of the network's end of the egress veth, fixed for the same reason: the
    /// outside's ARP caches hold it for the floating gateway and every floating address.
    public func egressMAC(_ vxid: UInt32) -> MACAddress { fixedMAC(role: 2, vxid) }

    private func fixedMAC(role: UInt8, _ vxid: UInt32) -> MACAddress {
        MACAddress(
            0x06, 0x00, role, UInt8(truncatingIfNeeded: vxid >> 16), UInt8(truncatingIfNeeded: vxid >> 8), UInt8(truncatingIfNeeded: vxid))
    }

    /// The VXLAN id a per-network device in the host namespace is named for, or nil when `name` is
    /// not such a device.
    public func networkDeviceVXID(_ name: String) -> UInt32? {
        guard name.utf8.count > 6, let vxid = UInt32(name.suffix(6), radix: 16) else { return nil }
        return [vxlan(vxid), bridge(vxid), routerOuter(vxid), egressOuter(vxid)].contains(name) ? vxid : nil
    }

    /// Whether a link in the host namespace is one the agent makes: a network's device, the egress
    /// bridge or a tap.
    public func isAgentLink(_ name: String) -> Bool {
        networkDeviceVXID(name) != nil || name == egressBridge || name.hasPrefix(tapPrefix)
    }
    /// The network namespace end of the egress veth, holding the floating gateway and floats.
    public func egressInner(_ vxid: UInt32) -> String { "sfei" + hex6(vxid) }
    /// The bridge in the host namespace that every network's egress veth joins.
    public var egressBridge: String { "sfegress" }

    /// The tap of one interface: the prefix and as many hex digits of its UUID as fit in the kernel's
    /// 15 bytes (12 with the production prefix, so collisions need about 16 million interfaces).
    public func tap(of interface: UUID) -> String {
        let digits = max(6, min(12, 15 - tapPrefix.utf8.count))
        return tapPrefix + String(interface.lowercasedString.replacingOccurrences(of: "-", with: "").prefix(digits))
    }

    private func hex6(_ value: UInt32) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 6 - text.count)) + text
    }
}
