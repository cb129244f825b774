import SFSystem

/// Which addresses an image fetch may connect to.
///
/// An image URL comes from a user, so without rules a fetch is a server-side request forgery: a URL
/// naming `169.254.169.254` would read the cloud's metadata service (credentials included) from the
/// hypervisor's own network position. Every address a URL's host resolves to, at every redirect
/// hop, is checked here before any connection is made.
///
/// Semantics: a deny entry always wins; when `allow` is non-empty, an address must also be inside
/// one of its entries. IPv4 only: the rules are IPv4 CIDRs, so IPv6 destinations are refused
/// (see ``FetchError/unsupportedAddressFamily(url:host:)``) rather than let through unchecked.
public struct DestinationRules: Sendable, Equatable, CustomStringConvertible {
    /// When non-empty, the only networks a fetch may reach (SFNODE_FETCH_ALLOW).
    public var allow: [IPv4Prefix]
    /// Networks a fetch may never reach, whatever `allow` says (SFNODE_FETCH_DENY plus the defaults).
    public var deny: [IPv4Prefix]

    /// Link-local 169.254.0.0/16 (the cloud metadata service lives there) and 0.0.0.0/8 ("this
    /// network": on Linux, connecting to 0.0.0.0 reaches the local host).
    public static let defaultDeny: [IPv4Prefix] = [
        // Literals that always parse; compactMap keeps this free of force unwraps.
        "169.254.0.0/16", "0.0.0.0/8",
    ].compactMap { IPv4Prefix($0) }

    /// The rules used when nothing is configured: deny ``defaultDeny``, allow everything else.
    public static let `default` = DestinationRules(allow: [], deny: defaultDeny)

    /// Rules with these entries. ``defaultDeny`` is not added here; ``parse(allow:deny:)`` adds it.
    public init(allow: [IPv4Prefix], deny: [IPv4Prefix]) {
        self.allow = allow
        self.deny = deny
    }

    /// Parses the settings SFNODE_FETCH_ALLOW and SFNODE_FETCH_DENY: CIDRs (a bare address means /32)
    /// separated by commas and/or spaces; nil or blank means none. The deny list always includes
    /// ``defaultDeny`` on top of what is configured: the metadata service is never reachable by
    /// accident of configuration.
    ///
    /// - Throws: ``FetchError/invalidRule(setting:entry:)`` naming the setting and the bad entry.
    public static func parse(allow: String?, deny: String?) throws -> DestinationRules {
        let allowed = try parseList(allow, setting: "SFNODE_FETCH_ALLOW")
        var denied = defaultDeny
        for prefix in try parseList(deny, setting: "SFNODE_FETCH_DENY") where !denied.contains(prefix) {
            denied.append(prefix)
        }
        return DestinationRules(allow: allowed, deny: denied)
    }

    private static func parseList(_ text: String?, setting: String) throws -> [IPv4Prefix] {
        // Entry by entry, so the error names the entry itself: IPv4Prefix.parseList's own error is
        // a sentence, which quoted inside this one read "''10.0.0.0/33' is not …' is not …".
        try (text ?? "").split(whereSeparator: { $0 == "," || $0.isWhitespace }).map { entry in
            guard let prefix = IPv4Prefix(String(entry)) else { throw FetchError.invalidRule(setting: setting, entry: String(entry)) }
            return prefix
        }
    }

    /// Checks one resolved address for `url`.
    ///
    /// - Throws: ``FetchError/refused(url:address:rule:)`` whose rule reads `deny 169.254.0.0/16` or
    ///   `not in SFNODE_FETCH_ALLOW 127.0.0.0/8`.
    public func check(_ address: IPv4Address, url: String) throws {
        if let rule = deny.first(where: { $0.contains(address) }) {
            throw FetchError.refused(url: url, address: address.description, rule: "deny \(rule.network)")
        }
        if !allow.isEmpty && !allow.contains(where: { $0.contains(address) }) {
            let list = allow.map { $0.network.description }.joined(separator: ",")
            throw FetchError.refused(url: url, address: address.description, rule: "not in SFNODE_FETCH_ALLOW \(list)")
        }
    }

    /// `allow=<list or any> deny=<list>`, for logs.
    public var description: String {
        let allowed = allow.isEmpty ? "any" : allow.map { $0.network.description }.joined(separator: ",")
        return "allow=\(allowed) deny=\(deny.map { $0.network.description }.joined(separator: ","))"
    }
}
