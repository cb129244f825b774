import CIPTC
import Metrics
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The one owner of libiptc in the process.
///
/// libiptc keeps process-wide state (the function whose error `iptc_strerror` explains, among others)
/// and is not thread-safe, and it does not take the xtables lock that the iptables programs take.
/// Every libiptc call in the process therefore runs inside ``exclusive(_:)``: one thread at a time,
/// holding `/run/xtables.lock` from `iptc_init` to `iptc_commit`/`iptc_free`.
enum LibIPTC {
    private static let owner = Mutex<Void>(())

    /// The lock file iptables takes (XT_LOCK_NAME); the same file in every network namespace.
    static let lockPath = "/run/xtables.lock"

    /// Runs `body` with exclusive use of libiptc in this process and the xtables lock held. Every
    /// ``IPTCTable`` must be created and released inside one call.
    static func exclusive<T: Sendable>(_ body: () throws -> T) throws -> T {
        try owner.withLock { _ throws -> T in
            // Taken after the mutex, so at most one thread of this process waits on the file.
            let lock = try FileLock.acquire(path: lockPath)
            defer { lock.release() }
            return try body()
        }
    }
}

/// One libiptc handle on one table of the calling thread's network namespace. Only used inside
/// ``LibIPTC/exclusive(_:)``.
final class IPTCTable {
    let name: String
    /// The namespace, for messages.
    let namespace: String
    private let handle: OpaquePointer

    /// Takes a snapshot of the table (`iptc_init`). This may make the kernel load the table's
    /// module and instantiate the table in the namespace.
    init(name: String, namespace: String) throws {
        self.name = name
        self.namespace = namespace
        guard let handle = iptc_init(name) else {
            let code = errno
            throw FirewallError.tableUnavailable(
                table: name, namespace: namespace, code: code, message: String(cString: iptc_strerror(code)))
        }
        self.handle = handle
    }

    deinit {
        iptc_free(handle)
    }

    func chainExists(_ chain: String) -> Bool {
        iptc_is_chain(chain, handle) != 0
    }

    /// The rules of `chain`, in order, with their target names. Entries point into the handle's
    /// snapshot: valid until the table is changed or released.
    func rules(in chain: String) -> [(entry: UnsafePointer<ipt_entry>, target: String)] {
        guard chainExists(chain) else { return [] }
        var result: [(entry: UnsafePointer<ipt_entry>, target: String)] = []
        var current = iptc_first_rule(chain, handle)
        while let entry = current {
            let target = iptc_get_target(entry, handle).map { String(cString: $0) } ?? ""
            result.append((entry, target))
            current = iptc_next_rule(entry, handle)
        }
        return result
    }

    /// Positions (ascending, from 0) of the jumps to `chain` in its built-in chain `chain.hook`.
    func hookPositions(for chain: OwnedChain) -> [Int] {
        rules(in: chain.hook).enumerated()
            .filter { RuleCodec.isHook(target: $0.element.target, for: chain) }.map(\.offset)
    }

    func createChain(_ chain: String) throws {
        try check(iptc_create_chain(chain, handle), "iptc_create_chain", chain: chain)
    }

    func flush(_ chain: String) throws {
        try check(iptc_flush_entries(chain, handle), "iptc_flush_entries", chain: chain)
    }

    func deleteChain(_ chain: String) throws {
        try check(iptc_delete_chain(chain, handle), "iptc_delete_chain", chain: chain)
    }

    func append(_ entry: UnsafePointer<ipt_entry>, to chain: String, rule: @autoclosure () -> String) throws {
        try check(iptc_append_entry(chain, entry, handle), "iptc_append_entry", chain: chain, rule: rule())
    }

    /// Inserts at `position`, counting from 0.
    func insert(
        _ entry: UnsafePointer<ipt_entry>, into chain: String, at position: Int, rule: @autoclosure () -> String
    ) throws {
        try check(
            iptc_insert_entry(chain, entry, UInt32(position), handle), "iptc_insert_entry", chain: chain, rule: rule())
    }

    /// Deletes the rule at `position`, counting from 0.
    func deleteRule(in chain: String, at position: Int, rule: @autoclosure () -> String) throws {
        try check(
            iptc_delete_num_entry(chain, UInt32(position), handle), "iptc_delete_num_entry", chain: chain, rule: rule())
    }

    /// Sends the whole table to the kernel in one replace.
    /// Commits the table: `sfnode_firewall_commits_total{table,result}` counts it and
    /// `sfnode_firewall_commit_seconds{table}` times it (the kernel copies the whole table).
    func commit(chains: [String]) throws {
        let started = ContinuousClock.now
        let rc = iptc_commit(handle)
        Timer(label: "sfnode_firewall_commit_seconds", dimensions: [("table", name)])
            .recordSeconds((ContinuousClock.now - started) / .seconds(1))
        Counter(label: "sfnode_firewall_commits_total", dimensions: [("table", name), ("result", rc == 0 ? "failed" : "ok")])
            .increment()
        try check(rc, "iptc_commit", chain: chains.joined(separator: ", "))
    }

    /// `rule` is only evaluated on failure: describing every rule up front costs more than
    /// encoding it when a chain holds thousands.
    private func check(
        _ rc: Int32, _ operation: String, chain: String, rule: @autoclosure () -> String? = nil
    ) throws {
        guard rc == 0 else { return }
        let code = errno
        throw FirewallError.operationFailed(
            operation: operation, table: name, chain: chain, rule: rule(), namespace: namespace, code: code,
            message: String(cString: iptc_strerror(code)))
    }
}

/// Turns ``FirewallRule`` values into libiptc entries and entries back into rules.
enum RuleCodec {
    /// The comment on the jump from a built-in chain to an owned chain.
    static let hookComment = "sfnode hook"

    /// Builds the entry for `rule` and passes it to `body`; the buffer lives only during `body`.
    static func withEntry<T>(
        for rule: FirewallRule, in chain: OwnedChain, _ body: (UnsafePointer<ipt_entry>) throws -> T
    ) throws -> T {
        var spec = ciptc_rule_spec()
        let target: String
        var inInterface: String?
        var outInterface: String?
        switch rule {
        case .dnat(let floating, let to):
            spec.dst = floating.networkOrder
            spec.dmsk = UInt32.max
            target = "DNAT"
            spec.target_kind = CIPTC_TARGET_NAT2_TO_ADDRESS
            spec.nat_address = to.networkOrder
        case .snat(let source, let to):
            spec.src = source.networkOrder
            spec.smsk = UInt32.max
            target = "SNAT"
            spec.target_kind = CIPTC_TARGET_NAT_TO_ADDRESS
            spec.nat_address = to.networkOrder
        case .hairpin(let network, let to):
            spec.src = network.network.address.networkOrder
            spec.smsk = network.netmask.networkOrder
            spec.dst = spec.src
            spec.dmsk = spec.smsk
            target = "SNAT"
            spec.target_kind = CIPTC_TARGET_NAT_TO_ADDRESS
            spec.nat_address = to.networkOrder
        case .masquerade(let source, let out):
            spec.src = source.network.address.networkOrder
            spec.smsk = source.netmask.networkOrder
            outInterface = out
            target = "MASQUERADE"
            spec.target_kind = CIPTC_TARGET_NAT_NO_RANGE
        case .forwardAccept(let inIf, let outIf, let destination):
            if let destination {
                spec.dst = destination.network.address.networkOrder
                spec.dmsk = destination.netmask.networkOrder
            }
            inInterface = inIf
            outInterface = outIf
            target = "ACCEPT"
            spec.target_kind = CIPTC_TARGET_STANDARD
        }
        // No comment match on the rules themselves: the chain already says they are sfnode's, and a
        // comment per rule made every commit of a 2000-rule table about 40 % slower (BENCHMARKS.md).
        return try build(spec, inInterface: inInterface, outInterface: outInterface, comment: nil,
            target: target, describing: rule.description, chain: chain, body)
    }

    /// Builds the jump from `chain.hook` to `chain` and passes it to `body`.
    static func withHookEntry<T>(for chain: OwnedChain, _ body: (UnsafePointer<ipt_entry>) throws -> T) throws -> T {
        var spec = ciptc_rule_spec()
        spec.target_kind = CIPTC_TARGET_STANDARD
        return try build(spec, inInterface: nil, outInterface: nil, comment: hookComment, target: chain.name,
            describing: "jump to \(chain.name)", chain: chain, body)
    }

    private static func build<T>(
        _ template: ciptc_rule_spec, inInterface: String?, outInterface: String?, comment: String?, target: String,
        describing rule: @autoclosure () -> String, chain: OwnedChain,
        _ body: (UnsafePointer<ipt_entry>) throws -> T
    ) throws -> T {
        var spec = template
        let (entry, code): (UnsafeMutablePointer<ipt_entry>?, Int32) = withOptionalCString(inInterface) { inPointer in
            withOptionalCString(outInterface) { outPointer in
                withOptionalCString(comment) { commentPointer in
                    target.withCString { targetPointer in
                        spec.iniface = inPointer
                        spec.outiface = outPointer
                        spec.comment = commentPointer
                        spec.target = targetPointer
                        let entry = ciptc_entry_new(&spec)
                        // Taken here: unwinding the closures and describing the rule may reset errno.
                        return (entry, entry == nil ? errno : 0)
                    }
                }
            }
        }
        guard let entry else {
            // Validation runs first, so this is an out-of-memory or a bug; still say what it was.
            throw FirewallError.invalidRule(
                rule: rule(), reason: "cannot build its entry for \(chain.table)/\(chain.name): "
                    + "\(String(cString: strerror(code))) (errno \(code))")
        }
        defer { free(entry) }
        return try body(UnsafePointer(entry))
    }

    /// Reads an entry of an owned chain back into the rule that wrote it; nil for anything sfnode
    /// would not have written there (another shape, another comment, extra matches or flags).
    static func decode(_ entry: UnsafePointer<ipt_entry>, target: String, in chain: OwnedChain) -> FirewallRule? {
        var view = ciptc_rule_view()
        ciptc_view_entry(entry, &view)
        guard view.plain != 0, view.interfaces_canonical != 0, view.match_count == 0 else { return nil }
        // Most rules name no interface; skip building empty strings for them.
        let inInterface = view.iniface.pointee == 0 ? "" : String(cString: view.iniface)
        let outInterface = view.outiface.pointee == 0 ? "" : String(cString: view.outiface)
        let source = prefix(address: view.src, mask: view.smsk)
        let destination = prefix(address: view.dst, mask: view.dmsk)
        let natAddress: IPv4Address? =
            view.nat_single_range != 0 && view.nat_flags == ciptc_nat_range_map_ips()
                && view.nat_min_ip == view.nat_max_ip ? IPv4Address(networkOrder: view.nat_min_ip) : nil

        let rule: FirewallRule
        switch target {
        case "DNAT":
            guard view.target_revision == 2, source?.length == 0, let destination, destination.length == 32, inInterface.isEmpty,
                outInterface.isEmpty, let natAddress
            else { return nil }
            rule = .dnat(floating: destination.address, to: natAddress)
        case "SNAT":
            guard view.target_revision == 0, let source, let destination, inInterface.isEmpty, outInterface.isEmpty,
                let natAddress
            else { return nil }
            if destination.length == 0, source.length == 32 {
                rule = .snat(source: source.address, to: natAddress)
            } else if destination.length > 0, destination == source {
                rule = .hairpin(network: source, to: natAddress)
            } else {
                return nil
            }
        case "MASQUERADE":
            guard view.target_revision == 0, let source, destination?.length == 0, inInterface.isEmpty, !outInterface.isEmpty,
                view.nat_single_range != 0, view.nat_flags == 0, view.nat_min_ip == 0, view.nat_max_ip == 0
            else { return nil }
            rule = .masquerade(source: source, outInterface: outInterface)
        case "ACCEPT":
            guard source?.length == 0, let destination else { return nil }
            rule = .forwardAccept(
                inInterface: inInterface.isEmpty ? nil : inInterface,
                outInterface: outInterface.isEmpty ? nil : outInterface,
                destination: destination.length == 0 ? nil : destination)
        default:
            return nil
        }
        guard rule.chain == chain else { return nil }
        return rule
    }

    /// Whether an entry is the jump to `chain` (whatever else it matches).
    static func isHook(target: String, for chain: OwnedChain) -> Bool {
        target == chain.name
    }

    /// The prefix an address and mask (network order) stand for; nil when the mask is not
    /// contiguous or the address has bits outside it.
    private static func prefix(address: UInt32, mask: UInt32) -> IPv4Prefix? {
        let hostMask = UInt32(bigEndian: mask)
        let length = hostMask.nonzeroBitCount
        guard hostMask == (length == 0 ? 0 : UInt32.max << UInt32(32 - length)) else { return nil }
        let host = IPv4Address(networkOrder: address)
        guard host.value & ~hostMask == 0 else { return nil }
        return try? IPv4Prefix(address: host, length: length)
    }
}

private func withOptionalCString<T>(_ string: String?, _ body: (UnsafePointer<CChar>?) throws -> T) rethrows -> T {
    guard let string else { return try body(nil) }
    return try string.withCString { try body($0) }
}
