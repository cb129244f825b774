/// An IPv4 address, held in host byte order.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The address as a 32-bit number, most significant octet first (192.0.2.1 is 0xC000_0201).
    public let value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted-quad notation; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCII), let octet = UInt8(part) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        self.value = value
    }

    /// The four octets, most significant first: the order of `in_addr` in memory.
    public var octets: [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    /// The address in network byte order, as `in_addr.s_addr` holds it.
    public var networkOrder: UInt32 { value.bigEndian }

    /// Builds an address from `in_addr.s_addr` (network byte order).
    public init(networkOrder: UInt32) { self.value = UInt32(bigEndian: networkOrder) }

    public var description: String { octets.map(String.init).joined(separator: ".") }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

/// An IPv4 address with a prefix length: `10.0.0.1/24` names both an interface address and,
/// through ``network``, the network it is in.
public struct IPv4Prefix: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public let address: IPv4Address
    public let length: Int

    /// Fails with a message naming the bad part when `length` is outside 0...32.
    public init(address: IPv4Address, length: Int) throws {
        guard (0...32).contains(length) else {
            throw AddressError.invalid("prefix length \(length) is outside 0...32")
        }
        self.address = address
        self.length = length
    }

    /// Parses `a.b.c.d/n`; a bare address means /32.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPv4Address(String(parts[0])) else { return nil }
        var length = 32
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...32).contains(parsed), parts[1].allSatisfy(\.isASCII) else { return nil }
            length = parsed
        }
        self.address = address
        self.length = length
    }

    /// Parses `text`, or throws an error that quotes it.
    public static func parse(_ text: String) throws -> IPv4Prefix {
        guard let prefix = IPv4Prefix(text) else {
            throw AddressError.invalid("'\(text)' is not an IPv4 address with a prefix length (a.b.c.d/n)")
        }
        return prefix
    }

    /// The netmask, such as 255.255.255.0 for /24.
    public var netmask: IPv4Address { IPv4Address(length == 0 ? 0 : UInt32.max << UInt32(32 - length)) }

    /// The network this address is in, with host bits cleared: 10.0.0.1/24 → 10.0.0.0/24.
    public var network: IPv4Prefix {
        // Safe: length is already known to be valid.
        (try? IPv4Prefix(address: IPv4Address(address.value & netmask.value), length: length)) ?? self
    }

    /// The broadcast address of the network.
    public var broadcast: IPv4Address { IPv4Address(address.value | ~netmask.value) }

    /// Whether `other` falls inside this prefix's network.
    public func contains(_ other: IPv4Address) -> Bool {
        other.value & netmask.value == address.value & netmask.value
    }

    /// The address at `index` within the network: index 1 of 10.0.0.0/24 is 10.0.0.1.
    public func host(_ index: UInt32) -> IPv4Address { IPv4Address(network.address.value &+ index) }

    public var description: String { "\(address)/\(length)" }
}

/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public let octets: [UInt8]

    /// Fails unless given exactly six octets.
    public init(octets: [UInt8]) throws {
        guard octets.count == 6 else { throw AddressError.invalid("a MAC address has 6 octets, not \(octets.count)") }
        self.octets = octets
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (either case).
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard part.count == 2, let octet = UInt8(part, radix: 16) else { return nil }
            octets.append(octet)
        }
        self.octets = octets
    }

    /// The all-zeros address, which in a VXLAN forwarding database means "flood to this remote".
    public static let zero = MACAddress(unchecked: [0, 0, 0, 0, 0, 0])

    private init(unchecked octets: [UInt8]) { self.octets = octets }

    public var description: String {
        octets.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

/// A malformed address, with a message that names what is wrong.
public enum AddressError: Error, CustomStringConvertible, Equatable, Sendable {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let message): return message
        }
    }
}
