/// SFNetlink: typed, documented access to rtnetlink through libnl-3 and libnl-route-3.
///
/// One ``NetlinkSession`` owns one `NETLINK_ROUTE` socket, opened inside one network namespace by a
/// thread that lives in that namespace. It creates and deletes bridges, VXLANs, veth pairs and taps,
/// sets link state, manages IPv4 addresses and main-table routes, the VXLAN flood list (the
/// all-zeros forwarding entries that give head-end replication), per-namespace `net/` sysctls, and
/// streams link changes.
///
/// ## Inspecting what it did
///
/// Everything it does is visible to iproute2 (sfnode itself never runs these; they are for people):
///
/// - Links, with kind-specific details (bridge `forward_delay`/`stp_state`, VXLAN `id`/`dstport`,
///   veth peers): `ip -n NS -d link show [dev NAME]` (drop `-n NS` for the process's own namespace).
/// - Addresses: `ip -n NS -4 addr show [dev NAME]`.
/// - Routes: `ip -n NS route show table main`.
/// - VXLAN flood list: `bridge -n NS fdb show dev VXLAN` (entries `00:00:00:00:00:00 dst REMOTE self permanent`).
/// - Sysctls: `ip netns exec NS sysctl net.ipv4.ip_forward`.
/// - Live link events: `ip -n NS monitor link`.
/// - Which namespaces exist: `ip netns list`.
import CNetlink
import Logging
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// What kind of device a link is, from its rtnetlink `IFLA_INFO_KIND`.
public enum LinkKind: Sendable, Hashable, CustomStringConvertible {
    /// A Linux bridge (`bridge`).
    case bridge
    /// A VXLAN tunnel device (`vxlan`).
    case vxlan
    /// One end of a veth pair (`veth`).
    case veth
    /// A tun or tap device (the kernel reports both as `tun`).
    case tun
    /// Any other kind, by the kernel's name for it (`dummy`, `macvlan`, ...).
    case other(String)
    /// No kind at all: physical NICs and `lo`.
    case none

    /// Maps the kernel's kind string; nil means the link carries no kind.
    public init(kernelName: String?) {
        switch kernelName {
        case nil: self = .none
        case "bridge": self = .bridge
        case "vxlan": self = .vxlan
        case "veth": self = .veth
        case "tun": self = .tun
        case let name?: self = .other(name)
        }
    }

    /// The kernel's name for the kind, as `ip -d link` prints it; `none` for a link without one.
    public var description: String {
        switch self {
        case .bridge: return "bridge"
        case .vxlan: return "vxlan"
        case .veth: return "veth"
        case .tun: return "tun"
        case .other(let name): return name
        case .none: return "none"
        }
    }
}

/// A network device as rtnetlink reports it.
public struct LinkInfo: Sendable, Equatable {
    /// The device name, such as `br0`.
    public var name: String
    /// The ifindex, unique within the namespace while the link exists.
    public var index: Int32
    /// The device kind, from `IFLA_INFO_KIND`.
    public var kind: LinkKind
    /// The MTU in bytes.
    public var mtu: Int
    /// The hardware address; nil for devices without a 6-byte one.
    public var mac: MACAddress?
    /// Administratively up (`IFF_UP`), which is what `setLinkUp` controls; carrier is not considered.
    public var isUp: Bool
    /// The ifindex of the bridge this link is enslaved to, if any.
    public var masterIndex: Int32?
    /// A VXLAN's VNI; nil for every other kind.
    public var vxlanID: UInt32?

    /// A link with the given fields, for building the value a caller expects rtnetlink to report.
    public init(
        name: String, index: Int32, kind: LinkKind, mtu: Int, mac: MACAddress?, isUp: Bool, masterIndex: Int32?,
        vxlanID: UInt32? = nil
    ) {
        self.name = name
        self.index = index
        self.kind = kind
        self.mtu = mtu
        self.mac = mac
        self.isUp = isUp
        self.masterIndex = masterIndex
        self.vxlanID = vxlanID
    }

    /// Reads a libnl `rtnl_link` (or `nl_object` holding one). The object stays owned by the caller.
    init(link: OpaquePointer) {
        name = rtnl_link_get_name(link).map { String(cString: $0) } ?? ""
        index = rtnl_link_get_ifindex(link)
        kind = LinkKind(kernelName: rtnl_link_get_type(link).map { String(cString: $0) })
        mtu = Int(rtnl_link_get_mtu(link))
        mac = rtnl_link_get_addr(link).flatMap(macAddress(of:))
        isUp = rtnl_link_get_flags(link) & UInt32(IFF_UP) != 0
        let master = rtnl_link_get_master(link)
        masterIndex = master > 0 ? master : nil
        var id: UInt32 = 0
        vxlanID = kind == .vxlan && rtnl_link_vxlan_get_id(link, &id) >= 0 ? id : nil
    }
}

/// The links of a namespace as one dump read them (``NetlinkSession/links()``), by name: what a
/// reconciliation pass reads once and checks each network's devices against, rather than asking
/// the kernel about each device in turn.
public struct LinkListing: Sendable {
    private let byName: [String: LinkInfo]
    /// Every listed link's name, in the listing's order (ifindex order from ``NetlinkSession/links()``),
    /// so that what is done to them, and logged, comes in the same order each time.
    public let names: [String]

    /// The listing of `links`.
    public init(_ links: [LinkInfo]) {
        byName = Dictionary(links.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        names = links.map(\.name)
    }

    /// The link called `name`, if it was listed.
    public subscript(name: String) -> LinkInfo? { byName[name] }

    /// Whether `name` was listed as the create call for it would leave it: of `kind` (with
    /// `vxlanID` for a VXLAN), enslaved to `master` (itself listed), and up when `up` is set. When
    /// it holds, that create would change nothing; when not, the create is what converges it.
    public func holds(_ name: String, kind: LinkKind, vxlanID: UInt32? = nil, master: String? = nil, up: Bool) -> Bool {
        guard let link = byName[name], link.kind == kind, vxlanID == nil || link.vxlanID == vxlanID else { return false }
        if let master, link.masterIndex == nil || byName[master]?.index != link.masterIndex { return false }
        return !up || link.isUp
    }
}

/// One event on a ``NetlinkSession/linkChanges()`` stream.
public enum LinkChange: Sendable, Equatable {
    /// A link the stream had not seen before appeared.
    case added(LinkInfo)
    /// A link went away.
    case removed(name: String, index: Int32)
    /// A known link changed: up/down, MTU, master, address, name.
    case changed(LinkInfo)
}

/// An IPv4 route in the main table.
public struct Route: Sendable, Hashable, CustomStringConvertible {
    /// Where the route leads; `0.0.0.0/0` is the default route. Host bits are ignored by the kernel,
    /// so routes read back carry the network address.
    public var destination: IPv4Prefix
    /// The next hop; nil for a route straight onto ``device``'s link.
    public var gateway: IPv4Address?
    /// The outgoing device; nil lets the kernel pick it from the gateway.
    public var device: String?

    /// A route to `destination` through `gateway`, out of `device`, or both.
    public init(destination: IPv4Prefix, gateway: IPv4Address? = nil, device: String? = nil) {
        self.destination = destination
        self.gateway = gateway
        self.device = device
    }

    /// The default route (`0.0.0.0/0`) through `gateway`.
    public static func defaultRoute(via gateway: IPv4Address, device: String? = nil) -> Route {
        Route(destination: IPv4Prefix.anyAddress, gateway: gateway, device: device)
    }

    /// Whether this is the default route.
    public var isDefault: Bool { destination.length == 0 }

    /// In `ip route` notation: `default via 10.0.0.1 dev br0`.
    public var description: String {
        var text = isDefault ? "default" : destination.network.description
        if let gateway { text += " via \(gateway)" }
        if let device { text += " dev \(device)" }
        return text
    }
}

extension IPv4Prefix {
    /// `0.0.0.0/0`.
    static let anyAddress: IPv4Prefix = {
        guard let prefix = IPv4Prefix("0.0.0.0/0") else { preconditionFailure("0.0.0.0/0 failed to parse") }
        return prefix
    }()
}

/// A failed netlink operation: what was being done, to what, and libnl's own word on why.
public struct NetlinkError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What was being attempted, such as `set MTU`.
    public let operation: String
    /// What it was being done to, such as a device name or `10.0.0.1/24 on br0`.
    public let object: String
    /// The libnl error code (`NLE_*`, positive), such as ``NetlinkError/exists``.
    public let code: Int32
    /// `nl_geterror(code)` for errors that came from libnl or the kernel; sfnode's own text for
    /// refusals it makes itself (a link of the wrong kind, an invalid name).
    public let message: String

    /// An error with sfnode's own `message`, for refusals that never reached libnl; `code` is the
    /// positive `NLE_*` code that fits best.
    public init(operation: String, object: String, code: Int32, message: String) {
        self.operation = operation
        self.object = object
        self.code = code
        self.message = message
    }

    /// An error for a negative (or positive) libnl return code, with `nl_geterror`'s text.
    public init(operation: String, object: String, libnlCode: Int32) {
        let code = libnlCode < 0 ? -libnlCode : libnlCode
        self.init(operation: operation, object: object, code: code, message: String(cString: nl_geterror(code)))
    }

    /// An error for a failed system call, mapping errno to its libnl code but keeping `strerror`'s
    /// more precise text.
    init(operation: String, object: String, errno code: Int32) {
        self.init(
            operation: operation, object: object, code: nl_syserr2nlerr(code),
            message: String(cString: strerror(code)) + " (errno \(code))")
    }

    /// `operation object: message (libnl error code)`.
    public var description: String { "\(operation) \(object): \(message) (libnl error \(code))" }

    /// `NLE_EXIST`: the object exists (or, for a link, exists with another kind).
    public static let exists = Int32(NLE_EXIST)
    /// `NLE_INVAL`: an argument was refused, by sfnode or the kernel.
    public static let invalid = Int32(NLE_INVAL)
    /// `NLE_NODEV`: no such device.
    public static let noDevice = Int32(NLE_NODEV)
    /// `NLE_OBJ_NOTFOUND`: no such object.
    public static let notFound = Int32(NLE_OBJ_NOTFOUND)
}

/// A 6-byte `nl_addr` as a MAC address; nil for anything else.
func macAddress(of address: OpaquePointer) -> MACAddress? {
    guard nl_addr_get_len(address) == 6, let bytes = nl_addr_get_binary_addr(address) else { return nil }
    return try? MACAddress(octets: Array(UnsafeRawBufferPointer(start: bytes, count: 6)))
}

/// A 4-byte `nl_addr` as an IPv4 prefix (its prefix length included); nil for anything else.
/// A zero-length address, which libnl uses for the default route's destination, is `0.0.0.0/0`.
func ipv4Prefix(of address: OpaquePointer) -> IPv4Prefix? {
    let length = Int(nl_addr_get_prefixlen(address))
    if nl_addr_get_len(address) == 0 { return try? IPv4Prefix(address: IPv4Address(0), length: length) }
    guard nl_addr_get_len(address) == 4, let bytes = nl_addr_get_binary_addr(address) else { return nil }
    let octets = UnsafeRawBufferPointer(start: bytes, count: 4)
    let value = octets.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    return try? IPv4Prefix(address: IPv4Address(value), length: length)
}

/// Builds an `AF_INET` `nl_addr` for `address/length`. The caller owns it (`nl_addr_put`).
func makeNLAddress(_ address: IPv4Address, length: Int = 32) -> OpaquePointer? {
    var octets = address.octets
    guard let result = nl_addr_build(AF_INET, &octets, 4) else { return nil }
    nl_addr_set_prefixlen(result, Int32(length))
    return result
}

/// Builds an `AF_LLC` `nl_addr` for a MAC address. The caller owns it (`nl_addr_put`).
func makeNLAddress(_ mac: MACAddress) -> OpaquePointer? {
    var octets = mac.octets
    return nl_addr_build(AF_LLC, &octets, 6)
}
