#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 address, held in host byte order.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The address as a 32-bit number, most significant octet first (192.0.2.1 is 0xC000_0201).
    public let value: UInt32

    /// The address whose 32-bit number (host byte order) is `value`.
    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted-quad notation of four plain decimal octets; nil for anything else.
    ///
    /// A leading zero (`010.0.0.1`), a sign (`+1`) or any other spelling is refused rather than
    /// read as decimal: inet_aton, and so iproute2, read `010` as octal 8, and sfnode must never
    /// mean a different address than the kernel tools do for the same text.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard let number = plainDecimal(part, maxDigits: 3), number <= 255 else { return nil }
            value = value << 8 | UInt32(number)
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

    /// Dotted-quad notation, such as `192.0.2.1`: what the string initialiser parses back.
    public var description: String { octets.map(String.init).joined(separator: ".") }

    /// Orders addresses numerically, so 10.0.0.9 comes before 10.0.0.10.
    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

/// An IPv4 address with a prefix length: `10.0.0.1/24` names both an interface address and,
/// through ``network``, the network it is in.
public struct IPv4Prefix: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The address, host bits included: 10.0.0.1 in 10.0.0.1/24.
    public let address: IPv4Address
    /// How many leading bits name the network, 0...32.
    public let length: Int

    /// Fails with a message naming the bad part when `length` is outside 0...32.
    public init(address: IPv4Address, length: Int) throws {
        guard (0...32).contains(length) else {
            throw AddressError.invalid("prefix length \(length) is outside 0...32")
        }
        self.address = address
        self.length = length
    }

    /// Parses `a.b.c.d/n`; a bare address means /32. The address is read as ``IPv4Address`` reads
    /// it, and the length likewise only as plain decimal (`/24`, not `/024` or `/+24`).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPv4Address(String(parts[0])) else { return nil }
        var length = 32
        if parts.count == 2 {
            guard let parsed = plainDecimal(parts[1], maxDigits: 2), parsed <= 32 else { return nil }
            length = Int(parsed)
        }
        self.address = address
        self.length = length
    }

    /// Parses a list of prefixes separated by commas and/or white space (a bare address means /32);
    /// nil or blank is an empty list. The error quotes the first entry that is not a prefix.
    public static func parseList(_ text: String?) throws -> [IPv4Prefix] {
        let entries = (text ?? "").split(whereSeparator: { $0 == "," || $0.isWhitespace })
        return try entries.map { try parse(String($0)) }
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

    /// `a.b.c.d/n`, with the address as given (host bits kept).
    public var description: String { "\(address)/\(length)" }
}

/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The six octets, in the order they go on the wire.
    public let octets: [UInt8]

    /// The address of these six octets.
    public init(_ first: UInt8, _ second: UInt8, _ third: UInt8, _ fourth: UInt8, _ fifth: UInt8, _ sixth: UInt8) {
        octets = [first, second, third, fourth, fifth, sixth]
    }

    /// Fails unless given exactly six octets.
    public init(octets: [UInt8]) throws {
        guard octets.count == 6 else { throw AddressError.invalid("a MAC address has 6 octets, not \(octets.count)") }
        self.octets = octets
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (either case): exactly two hex digits per octet.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            // UInt8(_:radix:) alone would take a sign, as in "+f"; two UTF-8 bytes that are hex
            // digits can only be two ASCII ones.
            guard part.utf8.count == 2, part.allSatisfy(\.isHexDigit), let octet = UInt8(part, radix: 16) else {
                return nil
            }
            octets.append(octet)
        }
        self.octets = octets
    }

    /// The all-zeros address, which in a VXLAN forwarding database means "flood to this remote".
    public static let zero = MACAddress(unchecked: [0, 0, 0, 0, 0, 0])

    private init(unchecked octets: [UInt8]) { self.octets = octets }

    /// Lower-case `aa:bb:cc:dd:ee:ff`, as iproute2 prints it.
    public var description: String {
        octets.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

/// A malformed address, with a message that names what is wrong.
public enum AddressError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The address is malformed; the message says how, quoting it.
    case invalid(String)

    /// The message.
    public var description: String {
        switch self {
        case .invalid(let message): return message
        }
    }
}

/// The value of `text` when it is a plain decimal number of at most `maxDigits` ASCII digits with no
/// leading zero ("0" itself is fine); nil for anything else, signs and octal-looking forms included.
private func plainDecimal(_ text: Substring, maxDigits: Int) -> UInt32? {
    let digits = text.utf8
    guard (1...maxDigits).contains(digits.count), digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
    else { return nil }
    if digits.count > 1 && digits.first == UInt8(ascii: "0") { return nil }
    return digits.reduce(0) { $0 * 10 + UInt32($1 - UInt8(ascii: "0")) }
}

extension IPv4Address {
    /// The address with `port`, as `bind` and `connect` take them.
    public func socketAddress(port: UInt16) -> sockaddr_in {
        var result = sockaddr_in()
        result.sin_family = sa_family_t(AF_INET)
        result.sin_port = port.bigEndian
        result.sin_addr = in_addr(s_addr: networkOrder)
        return result
    }
}
