import Logging
import SFSystem

/// The firewall of one network namespace: a declarative owner of sfnode's NAT and forwarding rules
/// there, programmed through libiptc.
///
/// ``apply(_:)`` takes the complete set of rules and makes the kernel match it with at most one
/// `iptc_commit` per table, skipping the commit when nothing differs. Every method runs on a thread
/// inside the namespace, and every libiptc call in the process is serialised through one owner that
/// also holds `/run/xtables.lock`, so several `Firewall`s (one per namespace) can be used concurrently.
///
/// ## Where the rules live
///
/// Only in sfnode's own chains, each hooked from a built-in chain by one jump rule (comment
/// "sfnode hook", inserted first in the built-in chain when missing):
///
/// | table  | built-in    | sfnode chain        | rules                                              |
/// |--------|-------------|---------------------|----------------------------------------------------|
/// | nat    | PREROUTING  | SFNODE-PREROUTING   | dnat (floating to private)                         |
/// | nat    | POSTROUTING | SFNODE-POSTROUTING  | snat, masquerade                                   |
/// | filter | FORWARD     | SFNODE-FORWARD      | forward accept                                     |
///
/// The chain is what marks a rule as sfnode's (only the hook jumps carry a comment: a comment match
/// on every rule made commits of large tables markedly slower). Rules anywhere else are not sfnode's and are
/// never touched; editing sfnode's chains by hand is undone by the next ``apply(_:)``.
///
/// ## How to inspect them
///
/// libiptc writes the legacy x_tables backend. On Debian 12 the `iptables` command is the nf_tables
/// variant and shows none of these rules; use the legacy tools:
///
/// ```
/// ip netns exec NS iptables-legacy-save            # one namespace, all tables
/// ip netns exec NS iptables-legacy-save -t nat     # only the nat table
/// iptables-legacy-save                             # the root namespace (production)
/// ip netns exec NS iptables-legacy -t nat -L SFNODE-PREROUTING -n -v --line-numbers
/// ```
///
/// A dnat rule, for example, saves as
///
/// ```
/// -A SFNODE-PREROUTING -d 192.0.2.10/32 -j DNAT --to-destination 10.0.0.5
/// ```
///
/// The iptables programs and sfnode share `/run/xtables.lock`, so `iptables-legacy -w` by hand while
/// sfnode commits is safe.
public actor Firewall {
    /// The namespace, or nil for the namespace the process runs in.
    public nonisolated let namespace: String?
    private let thread: NamespaceExecutor
    private let logger: Logger

    /// Pins every isolated method to the namespace thread.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.executor.asUnownedSerialExecutor() }

    /// Starts a thread inside `namespace` (nil: the process's own namespace). Fails when the
    /// namespace does not exist. Touches no table yet.
    public init(namespace: String?, logger: Logger) throws {
        self.init(thread: try NamespaceExecutor(namespace: namespace), logger: logger)
    }

    /// A firewall on an existing namespace thread, shared with the other owners in that namespace
    /// (its netlink session, for one), so that one namespace costs one thread.
    public init(thread: NamespaceExecutor, logger: Logger) {
        let namespace = thread.namespace
        self.namespace = namespace
        self.thread = thread
        var logger = logger
        logger[metadataKey: "fw.namespace"] = "\(namespace ?? "(process)")"
        self.logger = logger
    }

    private var namespaceLabel: String { namespace.map { "'\($0)'" } ?? "(process namespace)" }

    /// Makes sfnode's chains hold exactly `state`, creating and hooking them if needed.
    ///
    /// The state is validated first; an invalid rule throws ``FirewallError/invalidRule(rule:reason:)``
    /// before any table is read or changed. Each table whose chains differ is rewritten (flush and
    /// refill) and committed once; both tables are prepared before either is committed. Applying a
    /// state the kernel already has commits nothing and returns ``FirewallChange/unchanged``.
    ///
    /// nat is committed before filter. The kernel replaces each table atomically, but not the two
    /// together: if the filter commit itself fails after nat's succeeded, nat holds the new rules and
    /// filter the old; the error says so by naming the table, and applying again converges.
    @discardableResult
    public func apply(_ state: FirewallState) throws -> FirewallChange {
        try FirewallValidation.validate(state)
        let label = namespaceLabel
        let logger = self.logger
        return try LibIPTC.exclusive {
            var pending: [(table: IPTCTable, chains: [OwnedChain], added: Int, removed: Int)] = []
            for (tableName, chains) in OwnedChain.tables {
                let table = try IPTCTable(name: tableName, namespace: label)
                if let change = try Self.reconcile(table, chains: chains, with: state) {
                    pending.append((table, chains, change.added, change.removed))
                }
            }
            guard !pending.isEmpty else {
                logger.debug("firewall already matches the state", metadata: ["fw.rules": "\(state.rules.count)"])
                return .unchanged
            }
            for item in pending {
                try item.table.commit(chains: item.chains.map(\.name))
                logger.info(
                    "firewall table committed",
                    metadata: [
                        "fw.table": "\(item.table.name)", "fw.added": "\(item.added)", "fw.removed": "\(item.removed)",
                    ])
            }
            return .updated(added: pending.reduce(0) { $0 + $1.added }, removed: pending.reduce(0) { $0 + $1.removed })
        }
    }

    /// Reads sfnode's chains back into a state: dnat rules from `SFNODE-PREROUTING`, then snat and
    /// masquerade from `SFNODE-POSTROUTING`, then forward rules from `SFNODE-FORWARD`. Entries there
    /// that sfnode would not have written are left out (and logged). Missing chains read as empty.
    public func currentState() throws -> FirewallState {
        let label = namespaceLabel
        let logger = self.logger
        return try LibIPTC.exclusive {
            var rules: [FirewallRule] = []
            for (tableName, chains) in OwnedChain.tables {
                let table = try IPTCTable(name: tableName, namespace: label)
                for chain in chains {
                    for (position, item) in table.rules(in: chain.name).enumerated() {
                        if let rule = RuleCodec.decode(item.entry, target: item.target, in: chain) {
                            rules.append(rule)
                        } else {
                            logger.warning(
                                "rule in an sfnode chain is not one sfnode writes; ignoring it",
                                metadata: [
                                    "fw.table": "\(tableName)", "fw.chain": "\(chain.name)",
                                    "fw.position": "\(position)", "fw.target": "\(item.target)",
                                ])
                        }
                    }
                }
            }
            return FirewallState(rules: rules)
        }
    }

    /// Removes the jumps to sfnode's chains from the built-in chains, then the chains themselves;
    /// nothing else. Removing what is already gone is not an error and commits nothing. Answers
    /// whether there was anything to remove.
    @discardableResult
    public func removeAll() throws -> Bool {
        let label = namespaceLabel
        let logger = self.logger
        return try LibIPTC.exclusive { () throws -> Bool in
            var pending: [(table: IPTCTable, chains: [OwnedChain])] = []
            for (tableName, chains) in OwnedChain.tables {
                let table = try IPTCTable(name: tableName, namespace: label)
                var changed = false
                for chain in chains {
                    for position in table.hookPositions(for: chain).reversed() {
                        try table.deleteRule(in: chain.hook, at: position, rule: "jump to \(chain.name)")
                        changed = true
                    }
                    if table.chainExists(chain.name) {
                        try table.flush(chain.name)
                        try table.deleteChain(chain.name)
                        changed = true
                    }
                }
                if changed { pending.append((table, chains)) }
            }
            for item in pending {
                try item.table.commit(chains: item.chains.map(\.name))
                logger.info("firewall chains removed", metadata: ["fw.table": "\(item.table.name)"])
            }
            return !pending.isEmpty
        }
    }

    /// Compares `table`'s owned chains and hooks with `state` and, when anything differs, edits them
    /// in the handle (not yet committed). Nil when the table already matches.
    ///
    /// A chain is edited in place when the rules it keeps are already in the wanted order (the usual
    /// case: a float or defloat adds or removes a few rules among thousands): only the removed rules are
    /// deleted and only the added ones encoded and inserted. Otherwise it is flushed and refilled.
    /// Either way the kernel receives the whole table in one commit.
    private static func reconcile(
        _ table: IPTCTable, chains: [OwnedChain], with state: FirewallState
    ) throws -> (added: Int, removed: Int)? {
        var plans: [(chain: OwnedChain, desired: [FirewallRule], edit: ChainEdit, hooks: [Int], exists: Bool)] = []
        for chain in chains {
            let desired = state.rules(in: chain)
            let exists = table.chainExists(chain.name)
            let current = table.rules(in: chain.name).map { RuleCodec.decode($0.entry, target: $0.target, in: chain) }
            let hooks = table.hookPositions(for: chain)
            plans.append((chain, desired, ChainEdit(current: current, desired: desired), hooks, exists))
        }
        guard plans.contains(where: { !$0.exists || $0.hooks.count != 1 || !$0.edit.isEmpty }) else { return nil }

        for plan in plans {
            let chain = plan.chain
            if !plan.exists {
                try table.createChain(chain.name)
            }
            if plan.edit.inPlace {
                for position in plan.edit.deletions.reversed() {
                    try table.deleteRule(in: chain.name, at: position, rule: "stale rule at \(position)")
                }
                for (position, rule) in plan.edit.insertions {
                    try RuleCodec.withEntry(for: rule, in: chain) { entry in
                        try table.insert(entry, into: chain.name, at: position, rule: rule.description)
                    }
                }
            } else {
                try table.flush(chain.name)
                for rule in plan.desired {
                    try RuleCodec.withEntry(for: rule, in: chain) { entry in
                        try table.append(entry, to: chain.name, rule: rule.description)
                    }
                }
            }
            if plan.hooks.isEmpty {
                try RuleCodec.withHookEntry(for: chain) { entry in
                    try table.insert(entry, into: chain.hook, at: 0, rule: "jump to \(chain.name)")
                }
            } else {
                // Keep the first jump where it is; a second one would run the chain twice.
                for position in plan.hooks.dropFirst().reversed() {
                    try table.deleteRule(in: chain.hook, at: position, rule: "duplicate jump to \(chain.name)")
                }
            }
        }
        return (plans.reduce(0) { $0 + $1.edit.added }, plans.reduce(0) { $0 + $1.edit.removed })
    }
}

/// How to turn one chain's current rules into the desired ones.
struct ChainEdit: Equatable {
    /// Positions (ascending) of current rules to delete: not wanted, not sfnode's, or repeated.
    var deletions: [Int] = []
    /// Rules to insert, each at its final position, in ascending order of position.
    var insertions: [(position: Int, rule: FirewallRule)] = []
    /// Whether deleting and then inserting yields the desired chain; when false the chain must be
    /// flushed and refilled because the rules it keeps are out of order.
    var inPlace = true
    /// Kernel rules added and removed, as ``FirewallChange`` reports them.
    var added = 0
    var removed = 0

    var isEmpty: Bool { deletions.isEmpty && insertions.isEmpty && inPlace }

    /// `current` holds nil for entries that are not a rule sfnode writes.
    ///
    /// The common prefix and suffix are matched first with plain comparisons: a float or defloat
    /// changes one rule among thousands, and hashing every rule of the chain cost more than the rest of
    /// the apply. Only the part in between is matched by hashing.
    init(current: [FirewallRule?], desired: [FirewallRule]) {
        var prefix = 0
        while prefix < current.count, prefix < desired.count, current[prefix] == desired[prefix] { prefix += 1 }
        var suffix = 0
        while suffix < current.count - prefix, suffix < desired.count - prefix,
            current[current.count - 1 - suffix] == desired[desired.count - 1 - suffix]
        {
            suffix += 1
        }
        let current = current[prefix..<(current.count - suffix)]
        let desired = desired[prefix..<(desired.count - suffix)]
        // States hold no duplicates, so no rule wanted in the middle is also kept in the prefix or suffix.
        let wanted = Set(desired)
        var kept: [FirewallRule] = []
        var keptSet = Set<FirewallRule>()
        for (position, rule) in zip(current.indices, current) {
            if let rule, wanted.contains(rule), keptSet.insert(rule).inserted {
                kept.append(rule)
            } else {
                deletions.append(position)
            }
        }
        removed = deletions.count
        for (position, rule) in zip(desired.indices, desired) where !keptSet.contains(rule) {
            insertions.append((position, rule))
        }
        added = insertions.count
        // Deleting leaves `kept` in current order; inserting at the final positions then yields
        // `desired` exactly when `kept` is `desired` without the insertions, in the same order.
        inPlace = kept == desired.filter { keptSet.contains($0) }
    }

    static func == (lhs: ChainEdit, rhs: ChainEdit) -> Bool {
        lhs.deletions == rhs.deletions && lhs.inPlace == rhs.inPlace && lhs.added == rhs.added
            && lhs.removed == rhs.removed && lhs.insertions.map(\.position) == rhs.insertions.map(\.position)
            && lhs.insertions.map(\.rule) == rhs.insertions.map(\.rule)
    }
}
