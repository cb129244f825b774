import SFSystem

/// Which addresses an image fetch may connect to.
///
/// An image URL comes from a tenant, so without rules a fetch is a server-side request forgery with
/// full read-back: the fetched file becomes a blob its owner can read. A URL naming the cloud's
/// metadata service, the node's loopback services or a private network would read them from the
/// node's own network position. Every address a URL's host resolves to, at every redirect hop, is
/// checked here before any connection is made.
///
/// How an address is judged:
/// 1. ``neverOpened`` (unspecified, link-local with the metadata service, multicast, reserved and
///    broadcast): refused; no allow entry opens them, since no image server lives there.
/// 2. Otherwise the most specific (longest) matching range decides, among ``allow``
///    (SFNODE_FETCH_ALLOW), ``deny`` (SFNODE_FETCH_DENY) and ``refusedByDefault`` (loopback, RFC
///    1918, shared and benchmarking space, documentation and unique-local ranges ...). At equal
///    length an allow entry opens a built-in range, and a deny entry closes an allow entry. No
///    matching range: allowed (the public internet).
///
/// So `SFNODE_FETCH_ALLOW=127.0.0.0/8` opens loopback (what the tests do), `SFNODE_FETCH_ALLOW=10.1.0.0/16`
/// opens part of 10/8 and `SFNODE_FETCH_DENY=10.1.2.0/24` closes part of that again, while
/// `SFNODE_FETCH_ALLOW=0.0.0.0/0` opens nothing the built-in ranges refuse: opening must be meant.
/// `SFNODE_FETCH_DENY=0.0.0.0/0,::/0` with an allow list makes the allow list the only ranges
/// reachable (the tests' agents fetch from loopback and nowhere else).
///
/// An IPv6 address that stands for an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96,
/// 6to4, Teredo) is checked as itself and as each IPv4 address it embeds, so `::ffff:127.0.0.1` is
/// loopback and `64:ff9b::169.254.169.254` is the metadata service.
public struct DestinationRules: Sendable, Equatable, CustomStringConvertible {
    /// A range and what it is, for messages.
    public struct NamedRange: Sendable, Equatable {
        /// The range.
        public let range: IPRange
        /// What it holds, such as `loopback`.
        public let name: String
    }

    /// Ranges SFNODE_FETCH_ALLOW opens (where no longer deny range or built-in range closes them).
    public var allow: [IPRange]
    /// Ranges SFNODE_FETCH_DENY refuses (where no longer allow range opens them).
    public var deny: [IPRange]

    /// Ranges no rule opens: a fetch there is either meaningless (unspecified, multicast,
    /// broadcast, reserved) or the cloud metadata service (link-local 169.254.169.254, fe80::).
    public static let neverOpened: [NamedRange] = named([
        ("0.0.0.0/8", "'this network' (0.0.0.0 reaches the local host)"),
        ("169.254.0.0/16", "link-local, where the cloud metadata service lives"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved, with the broadcast address 255.255.255.255"),
        ("::/128", "the unspecified address"),
        ("fe80::/10", "IPv6 link-local"),
        ("ff00::/8", "IPv6 multicast"),
    ])

    /// Ranges refused unless SFNODE_FETCH_ALLOW names them: the node's own and private networks,
    /// and ranges that are not the public internet (RFC 6890's special-purpose registries).
    public static let refusedByDefault: [NamedRange] = named([
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (RFC 6598), where some clouds keep metadata services"),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890), where some clouds keep metadata services"),
        ("192.0.2.0/24", "documentation (TEST-NET-1)"),
        ("198.51.100.0/24", "documentation (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation (TEST-NET-3)"),
        ("198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
        ("::1/128", "IPv6 loopback"),
        ("fc00::/7", "IPv6 unique-local"),
        ("fec0::/10", "IPv6 site-local (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
        ("100::/64", "IPv6 discard-only"),
        ("2001:db8::/32", "IPv6 documentation"),
    ])

    /// The rules used when nothing is configured: ``refusedByDefault`` and ``neverOpened`` refused,
    /// the rest allowed.
    public static let `default` = DestinationRules(allow: [], deny: [])

    /// Rules with these entries (the built-in ranges always apply; see the type's documentation).
    public init(allow: [IPRange], deny: [IPRange]) {
        self.allow = allow
        self.deny = deny
    }

    /// Parses the settings SFNODE_FETCH_ALLOW and SFNODE_FETCH_DENY: IPv4 or IPv6 CIDRs (a bare
    /// address is that address alone) separated by commas and/or spaces; nil or blank means none.
    ///
    /// - Throws: ``FetchError/invalidRule(setting:entry:)`` naming the setting and the bad entry.
    public static func parse(allow: String?, deny: String?) throws -> DestinationRules {
        DestinationRules(
            allow: try parseList(allow, setting: "SFNODE_FETCH_ALLOW"), deny: try parseList(deny, setting: "SFNODE_FETCH_DENY"))
    }

    /// Parses one setting's list of ranges, the error naming `setting` and the entry.
    public static func parseList(_ text: String?, setting: String) throws -> [IPRange] {
        try (text ?? "").split(whereSeparator: { $0 == "," || $0.isWhitespace }).map { entry in
            guard let range = IPRange(String(entry)) else { throw FetchError.invalidRule(setting: setting, entry: String(entry)) }
            return range
        }
    }

    /// Checks one resolved address of `host` for `url`.
    ///
    /// - Throws: ``FetchError/refused(url:host:address:rule:)`` whose rule names the range and why
    ///   it is refused, such as `127.0.0.0/8 (loopback), refused unless SFNODE_FETCH_ALLOW opens it`.
    public func check(_ address: IPAddress, host: String, url: String) throws {
        if let rule = verdict(address) {
            throw FetchError.refused(url: url, host: host, address: address.description, rule: rule)
        }
        guard case .v6(let v6) = address else { return }
        for (embedded, form) in v6.embeddedIPv4 {
            if let rule = verdict(.v4(embedded)) {
                throw FetchError.refused(
                    url: url, host: host, address: address.description, rule: "\(form) of \(embedded): \(rule)")
            }
        }
    }

    /// Why `address` itself is refused, or nil when it is allowed.
    private func verdict(_ address: IPAddress) -> String? {
        if let named = Self.neverOpened.first(where: { $0.range.contains(address) }) {
            return "\(named.range) (\(named.name)), which is never fetched from"
        }
        func longest(_ ranges: [IPRange]) -> IPRange? {
            ranges.filter { $0.contains(address) }.max { $0.length < $1.length }
        }
        let allowLength = longest(allow)?.length ?? -1
        if let denied = longest(deny), denied.length >= allowLength {
            return "\(denied) in SFNODE_FETCH_DENY"
        }
        if let named = Self.refusedByDefault.filter({ $0.range.contains(address) }).max(by: { $0.range.length < $1.range.length }),
            named.range.length > allowLength
        {
            return "\(named.range) (\(named.name)), refused unless SFNODE_FETCH_ALLOW opens it"
        }
        return nil
    }

    /// `allow=<list or none> deny=<list or none>`, for logs.
    public var description: String {
        func list(_ ranges: [IPRange]) -> String { ranges.isEmpty ? "none" : ranges.map(\.description).joined(separator: ",") }
        return "allow=\(list(allow)) deny=\(list(deny))"
    }

    private static func named(_ entries: [(String, String)]) -> [NamedRange] {
        // Literals that always parse; compactMap keeps this free of force unwraps.
        entries.compactMap { text, name in IPRange(text).map { NamedRange(range: $0, name: name) } }
    }
}
