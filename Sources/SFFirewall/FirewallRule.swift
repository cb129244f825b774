import SFSystem

/// One rule sfnode wants in the kernel. A ``FirewallState`` lists all of them for one namespace.
public enum FirewallRule: Hashable, Sendable, CustomStringConvertible {
    /// Traffic to `floating` goes to `to` instead: nat `SFNODE-PREROUTING`. Traffic from inside the
    /// network arrives through PREROUTING too; only the namespace's own processes (dnsmasq) would need
    /// OUTPUT, and a second copy of every dnat would cost a third more rules on every commit.
    /// `-d floating/32 -j DNAT --to-destination to`.
    case dnat(floating: IPv4Address, to: IPv4Address)
    /// Traffic from `source` leaves as `to`: nat `SFNODE-POSTROUTING`,
    /// `-s source/32 -j SNAT --to-source to`.
    case snat(source: IPv4Address, to: IPv4Address)
    /// Traffic from the network `source` leaving through `outInterface` takes that interface's
    /// address: nat `SFNODE-POSTROUTING`, `-s source -o outInterface -j MASQUERADE`.
    case masquerade(source: IPv4Prefix, outInterface: String)
    /// Traffic from the network `network` to an address in it that the router forwards (which only
    /// happens after a DNAT: an instance reaching a floating address of its own network) leaves as
    /// `to`, the router's address, so the reply comes back through the router to be un-NATed instead
    /// of going straight to the sender, which would drop it: nat `SFNODE-POSTROUTING`,
    /// `-s network -d network -j SNAT --to-source to`. Hairpin NAT.
    case hairpin(network: IPv4Prefix, to: IPv4Address)
    /// Forwarded traffic matching every given field is accepted: filter `SFNODE-FORWARD`,
    /// `[-i in] [-o out] [-d destination] -j ACCEPT`. A nil field matches anything.
    case forwardAccept(inInterface: String?, outInterface: String?, destination: IPv4Prefix? = nil)

    /// The rule in words, as errors and logs name it.
    public var description: String {
        switch self {
        case .dnat(let floating, let to): return "dnat \(floating) to \(to)"
        case .snat(let source, let to): return "snat \(source) to \(to)"
        case .masquerade(let source, let out): return "masquerade \(source) out '\(out)'"
        case .hairpin(let network, let to): return "hairpin \(network) to \(to)"
        case .forwardAccept(let inInterface, let outInterface, let destination):
            var words = ["forward accept"]
            if let inInterface { words.append("in '\(inInterface)'") }
            if let outInterface { words.append("out '\(outInterface)'") }
            if let destination { words.append("to \(destination)") }
            return words.joined(separator: " ")
        }
    }

    /// The same rule with prefixes reduced to their networks: the kernel compares
    /// `address & mask` with the stored address, so a stored address with host bits never matches.
    var normalized: FirewallRule {
        switch self {
        case .dnat, .snat: return self
        case .masquerade(let source, let out): return .masquerade(source: source.network, outInterface: out)
        case .hairpin(let network, let to): return .hairpin(network: network.network, to: to)
        case .forwardAccept(let inInterface, let outInterface, let destination):
            // 0.0.0.0/0 matches every destination: the same rule as no destination.
            let network = destination.flatMap { $0.length == 0 ? nil : $0.network }
            return .forwardAccept(inInterface: inInterface, outInterface: outInterface, destination: network)
        }
    }

    /// The owned chain the rule is written to.
    var chain: OwnedChain {
        switch self {
        case .dnat: return .prerouting
        case .snat, .masquerade, .hairpin: return .postrouting
        case .forwardAccept: return .forward
        }
    }
}

/// The complete set of rules sfnode wants in one namespace. Anything in sfnode's chains that is not
/// listed here is removed by ``Firewall/apply(_:)``.
///
/// Rules keep the order given (the kernel evaluates each chain in order); a repeated rule is kept once,
/// at its first position. Prefixes are stored as their networks (`10.0.0.1/24` becomes `10.0.0.0/24`),
/// because that is the rule the kernel can actually match.
public struct FirewallState: Sendable, Equatable, CustomStringConvertible {
    private var storage: [FirewallRule] = []

    /// The rules, in order, without duplicates.
    public var rules: [FirewallRule] {
        get { storage }
        set { storage = Self.normalize(newValue) }
    }

    /// A state holding `rules` (normalised as described on the type).
    public init(rules: [FirewallRule] = []) {
        storage = Self.normalize(rules)
    }

    /// Two states are equal when they put the same rules in the same order into each chain. The
    /// relative order of rules in different chains (a dnat listed before or after a snat) does not
    /// change what the kernel does, so it does not count.
    public static func == (lhs: FirewallState, rhs: FirewallState) -> Bool {
        OwnedChain.all.allSatisfy { lhs.rules(in: $0) == rhs.rules(in: $0) }
    }

    /// The rules in words, in order.
    public var description: String { "[" + storage.map(\.description).joined(separator: ", ") + "]" }

    /// The rules that belong in `chain`, in order.
    func rules(in chain: OwnedChain) -> [FirewallRule] {
        storage.filter { $0.chain == chain }
    }

    private static func normalize(_ rules: [FirewallRule]) -> [FirewallRule] {
        var seen = Set<FirewallRule>()
        var result: [FirewallRule] = []
        for rule in rules.map(\.normalized) where seen.insert(rule).inserted {
            result.append(rule)
        }
        return result
    }
}

/// What ``Firewall/apply(_:)`` did.
public enum FirewallChange: Sendable, Equatable, CustomStringConvertible {
    /// The kernel already matched the state; nothing was committed.
    case unchanged
    /// At least one table was rewritten and committed. The counts are kernel rules in sfnode's chains
    /// (one per ``FirewallRule``); a rule that could not be
    /// read back as one of sfnode's counts as removed. Restoring a missing hook jump or reordering
    /// rules may report `.updated(added: 0, removed: 0)`.
    case updated(added: Int, removed: Int)

    /// The change in words, for logs.
    public var description: String {
        switch self {
        case .unchanged: return "unchanged"
        case .updated(let added, let removed): return "updated (\(added) added, \(removed) removed)"
        }
    }
}

/// Why a firewall operation failed. Every case names what was being done to what.
public enum FirewallError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A rule in the requested state cannot be programmed. Raised before any table is touched.
    case invalidRule(rule: String, reason: String)
    /// The legacy x_tables table could not be opened: missing kernel module (`ip_tables`,
    /// `iptable_nat`, `iptable_filter`) or missing privilege.
    case tableUnavailable(table: String, namespace: String, code: Int32, message: String)
    /// A libiptc call failed; `message` is `iptc_strerror`'s text.
    case operationFailed(
        operation: String, table: String, chain: String, rule: String?, namespace: String, code: Int32,
        message: String)

    /// The message, naming the operation, namespace, table, chain and rule, with the C library's text.
    public var description: String {
        switch self {
        case .invalidRule(let rule, let reason):
            return "invalid firewall rule '\(rule)': \(reason)"
        case .tableUnavailable(let table, let namespace, let code, let message):
            return
                "cannot open legacy iptables table '\(table)' in namespace \(namespace): \(message) (errno \(code));"
                + " the kernel needs the ip_tables and iptable_\(table) modules, and the caller CAP_NET_ADMIN"
        case .operationFailed(let operation, let table, let chain, let rule, let namespace, let code, let message):
            let what = rule.map { " rule '\($0)'" } ?? ""
            return
                "\(operation) failed in namespace \(namespace), table \(table), chain \(chain)\(what): \(message) (errno \(code))"
        }
    }
}

/// A chain sfnode owns, and the built-in chain that jumps to it.
struct OwnedChain: Hashable, Sendable {
    let table: String
    let name: String
    let hook: String

    static let prerouting = OwnedChain(table: "nat", name: "SFNODE-PREROUTING", hook: "PREROUTING")
    static let postrouting = OwnedChain(table: "nat", name: "SFNODE-POSTROUTING", hook: "POSTROUTING")
    static let forward = OwnedChain(table: "filter", name: "SFNODE-FORWARD", hook: "FORWARD")

    /// Every owned chain, in the order ``Firewall/currentState()`` reports their rules.
    static let all: [OwnedChain] = [.prerouting, .postrouting, .forward]

    /// The tables, each with its owned chains, in the order they are committed.
    static let tables: [(name: String, chains: [OwnedChain])] = [
        ("nat", [.prerouting, .postrouting]),
        ("filter", [.forward]),
    ]
}

/// Checks everything about a state that the kernel or libiptc would otherwise refuse half-way.
enum FirewallValidation {

    static func validate(_ state: FirewallState) throws {
        // Sized up front: a network with a thousand floats otherwise spends more time growing these
        // than the kernel spends on the commit's lookup.
        var dnatTargets: [IPv4Address: IPv4Address] = Dictionary(minimumCapacity: state.rules.count)
        var snatTargets: [IPv4Address: IPv4Address] = Dictionary(minimumCapacity: state.rules.count)
        for rule in state.rules {
            switch rule {
            case .dnat(let floating, let to):
                if let other = dnatTargets[floating], other != to {
                    throw FirewallError.invalidRule(
                        rule: rule.description, reason: "floating address \(floating) is already DNATed to \(other)")
                }
                dnatTargets[floating] = to
            case .snat(let source, let to):
                if let other = snatTargets[source], other != to {
                    throw FirewallError.invalidRule(
                        rule: rule.description, reason: "source \(source) is already SNATed to \(other)")
                }
                snatTargets[source] = to
            case .masquerade(_, let out):
                try validateInterface(out, role: "outInterface", of: rule)
            case .hairpin(let network, _):
                guard network.length > 0 else {
                    throw FirewallError.invalidRule(rule: rule.description, reason: "a hairpin needs a network, not 0.0.0.0/0")
                }
            case .forwardAccept(let inInterface, let outInterface, _):
                if let inInterface { try validateInterface(inInterface, role: "inInterface", of: rule) }
                if let outInterface { try validateInterface(outInterface, role: "outInterface", of: rule) }
            }
        }
    }

    /// Accepts a device name by the kernel's rule (``LinkName``), plus iptables' final `+` for "any
    /// interface starting with" what precedes it.
    static func validateInterface(_ name: String, role: String, of rule: FirewallRule) throws {
        func refuse(_ reason: String) -> FirewallError {
            .invalidRule(rule: rule.description, reason: "\(role) '\(name)' \(reason)")
        }
        if name.isEmpty { throw refuse("is empty (use nil in forwardAccept for any interface)") }
        if name == "+" { throw refuse("is only the wildcard; put at least one character before the '+'") }
        let stem = name.hasSuffix("+") ? String(name.dropLast()) : name
        if name.utf8.count > LinkName.maximumLength {
            throw refuse("is \(name.utf8.count) bytes long; interface names have at most \(LinkName.maximumLength)")
        }
        if let problem = LinkName.problem(with: stem) { throw refuse(problem) }
    }
}
