
#if canImport(Glibc)
import Glibc
#endif

/// An IPv6 address, as two 64-bit halves in host byte order (the first half holds the first eight
/// bytes on the wire), so that prefix tests are two masks.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    /// Bytes 0-7, most significant first.
    public let high: UInt64
    /// Bytes 8-15, most significant first.
    public let low: UInt64

    /// The address whose halves are `high` and `low`.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses IPv6 text as the C library does (`inet_pton`, which takes `::`, embedded dotted
    /// quads and hex groups, and nothing else: no zone, no brackets); nil for anything else.
    public init?(_ text: String) {
        var raw = in6_addr()
        guard !text.utf8.contains(0), inet_pton(AF_INET6, text, &raw) == 1 else { return nil }
        self.init(raw)
    }

    /// The address in `raw` (as `sockaddr_in6.sin6_addr` holds it).
    public init(_ raw: in6_addr) {
        let bytes = withUnsafeBytes(of: raw) { Array($0) }
        self.init(bytes: bytes)
    }

    /// The address of sixteen bytes in wire order; the all-zero address for any other count.
    public init(bytes: [UInt8]) {
        guard bytes.count == 16 else {
            self.init(high: 0, low: 0)
            return
        }
        let high = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let low = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        self.init(high: high, low: low)
    }

    /// The sixteen bytes in wire order.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> UInt64(56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> UInt64(56 - 8 * $0)) }
    }

    /// The C library's spelling (`inet_ntop`): `::1`, `::ffff:127.0.0.1`, `2001:db8::1`.
    public var description: String {
        var raw = in6_addr()
        withUnsafeMutableBytes(of: &raw) { target in
            for (index, byte) in bytes.enumerated() { target[index] = byte }
        }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count)) != nil else { return "invalid IPv6" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The IPv4 addresses this address stands for, with the name of the form, because a packet to
    /// this IPv6 address ends up at that IPv4 address: the IPv4-mapped form `::ffff:a.b.c.d` (an
    /// AF_INET6 socket connects over IPv4), the deprecated IPv4-compatible `::a.b.c.d`, the NAT64
    /// well-known prefix `64:ff9b::a.b.c.d` (RFC 6052), 6to4 `2002:AABB:CCDD::` (RFC 3056) and
    /// Teredo `2001:0::/32`, whose client address is the last 32 bits inverted (RFC 4380).
    public var embeddedIPv4: [(address: IPv4Address, form: String)] {
        let last32 = UInt32(truncatingIfNeeded: low)
        var found: [(IPv4Address, String)] = []
        if high == 0 && low >> 32 == 0xffff { found.append((IPv4Address(last32), "IPv4-mapped ::ffff:0:0/96")) }
        // ::/96 beyond :: and ::1, which are checked as themselves.
        if high == 0 && low >> 32 == 0 && last32 > 1 { found.append((IPv4Address(last32), "IPv4-compatible ::/96")) }
        if high == 0x0064_ff9b_0000_0000 && low >> 32 == 0 { found.append((IPv4Address(last32), "NAT64 64:ff9b::/96")) }
        if high >> 48 == 0x2002 { found.append((IPv4Address(UInt32(truncatingIfNeeded: high >> 16)), "6to4 2002::/16")) }
        if high >> 32 == 0x2001_0000 { found.append((IPv4Address(~last32), "Teredo 2001::/32")) }
        return found
    }
}

/// An IP address of either family: what a fetch's host resolves to.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// An IPv4 address.
    case v4(IPv4Address)
    /// An IPv6 address.
    case v6(IPv6Address)

    /// Parses a dotted quad (four plain decimal octets, as ``IPv4Address`` reads them) or IPv6
    /// text (as ``IPv6Address`` reads it); nil for anything else.
    public init?(_ text: String) {
        if let address = IPv4Address(text) {
            self = .v4(address)
        } else if let address = IPv6Address(text) {
            self = .v6(address)
        } else {
            return nil
        }
    }

    /// The address as text: a dotted quad or the C library's IPv6 spelling.
    public var description: String {
        switch self {
        case .v4(let address): return address.description
        case .v6(let address): return address.description
        }
    }
}

/// A network of either family: `10.0.0.0/8`, `fc00::/7`, or one address (`/32`, `/128`).
public struct IPRange: Hashable, Sendable, CustomStringConvertible {
    /// The network's address, host bits cleared.
    public let network: IPAddress
    /// How many leading bits name the network.
    public let length: Int

    /// Parses `address/length` in either family; a bare address is the whole-address range. The
    /// length is plain decimal within the family's width; host bits are cleared (`10.1.2.3/8` is
    /// `10.0.0.0/8`). Nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPAddress(String(parts[0])) else { return nil }
        let width: Int
        switch address {
        case .v4: width = 32
        case .v6: width = 128
        }
        var length = width
        if parts.count == 2 {
            let digits = parts[1].utf8
            guard (1...3).contains(digits.count), digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                digits.count == 1 || digits.first != UInt8(ascii: "0"), let parsed = Int(parts[1]), parsed <= width
            else { return nil }
            length = parsed
        }
        self.init(address, length: length)
    }

    /// The range of `length` leading bits of `address`; the length is clamped to the family's width.
    public init(_ address: IPAddress, length: Int) {
        switch address {
        case .v4(let v4):
            let bits = min(max(length, 0), 32)
            network = .v4(IPv4Address(v4.value & Self.mask32(bits)))
            self.length = bits
        case .v6(let v6):
            let bits = min(max(length, 0), 128)
            let (highMask, lowMask) = Self.mask128(bits)
            network = .v6(IPv6Address(high: v6.high & highMask, low: v6.low & lowMask))
            self.length = bits
        }
    }

    /// Whether `address` is inside this range; an address of the other family never is.
    public func contains(_ address: IPAddress) -> Bool {
        switch (network, address) {
        case (.v4(let network), .v4(let candidate)):
            return candidate.value & Self.mask32(length) == network.value
        case (.v6(let network), .v6(let candidate)):
            let (highMask, lowMask) = Self.mask128(length)
            return candidate.high & highMask == network.high && candidate.low & lowMask == network.low
        default:
            return false
        }
    }

    /// `network/length`, such as `10.0.0.0/8` or `fc00::/7`.
    public var description: String { "\(network)/\(length)" }

    private static func mask32(_ bits: Int) -> UInt32 {
        bits == 0 ? 0 : UInt32.max << UInt32(32 - bits)
    }

    private static func mask128(_ bits: Int) -> (UInt64, UInt64) {
        if bits <= 64 { return (bits == 0 ? 0 : UInt64.max << UInt64(64 - bits), 0) }
        return (UInt64.max, bits == 128 ? UInt64.max : UInt64.max << UInt64(128 - bits))
    }
}
