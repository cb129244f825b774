import Foundation
import SFFirewall
import SFSystem
import SFTestSupport
import Testing

/// The lines sfnode's chains and hooks produce for ``Sample/all``, as `iptables-legacy-save` prints them.
private let expectedNat = [
    "*nat",
    ":PREROUTING ACCEPT",
    ":INPUT ACCEPT",
    ":OUTPUT ACCEPT",
    ":POSTROUTING ACCEPT",
    ":SFNODE-POSTROUTING -",
    ":SFNODE-PREROUTING -",
    "-A PREROUTING -m comment --comment \"sfnode hook\" -j SFNODE-PREROUTING",
    "-A POSTROUTING -m comment --comment \"sfnode hook\" -j SFNODE-POSTROUTING",
    "-A SFNODE-POSTROUTING -s 10.0.0.5/32 -j SNAT --to-source 192.0.2.10",
    "-A SFNODE-POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE",
    "-A SFNODE-PREROUTING -d 192.0.2.10/32 -j DNAT --to-destination 10.0.0.5",
    "COMMIT",
]

private let expectedFilter = [
    "*filter",
    ":INPUT ACCEPT",
    ":FORWARD ACCEPT",
    ":OUTPUT ACCEPT",
    ":SFNODE-FORWARD -",
    "-A FORWARD -m comment --comment \"sfnode hook\" -j SFNODE-FORWARD",
    "-A SFNODE-FORWARD -d 10.0.0.0/24 -i eth0 -o br0 -j ACCEPT",
    "-A SFNODE-FORWARD -i br0 -j ACCEPT",
    "COMMIT",
]

@Suite(.enabled(if: runningAsRoot, "libiptc needs CAP_NET_ADMIN and test namespaces need root"))
struct FirewallTests {
    @Test func allFourKindsAppearAsIptablesSavePrintsThem() async throws {
        try await withTestNamespace("fwall") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            #expect(try await firewall.apply(Sample.all) == .updated(added: 5, removed: 0))
            #expect(try save(ns, table: "nat") == expectedNat)
            #expect(try save(ns, table: "filter") == expectedFilter)
        }
    }

    @Test func applyingTheSameStateTwiceChangesNothing() async throws {
        try await withTestNamespace("fwtwo") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            try await firewall.apply(Sample.all)
            let first = try saveAll(ns)
            #expect(try await firewall.apply(Sample.all) == .unchanged)
            // A fresh Firewall (as after a restart) sees the same and also commits nothing.
            let restarted = try Firewall(namespace: ns, logger: testLogger())
            #expect(try await restarted.apply(Sample.all) == .unchanged)
            #expect(try saveAll(ns) == first)
        }
    }

    @Test func handEditsOfOwnedChainsAreUndoneByTheNextApply() async throws {
        try await withTestNamespace("fwhand") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            try await firewall.apply(Sample.all)
            let wanted = try saveAll(ns)

            try iptables(ns, ["-t", "nat", "-D", "SFNODE-PREROUTING", "1"])
            #expect(try !save(ns, table: "nat").contains(where: { $0.hasPrefix("-A SFNODE-PREROUTING") }))
            #expect(try await firewall.currentState().rules.contains(Sample.dnat) == false)
            #expect(try await firewall.apply(Sample.all) == .updated(added: 1, removed: 0))
            #expect(try saveAll(ns) == wanted)

            // A stray rule in an owned chain, a second hook and a missing hook are all repaired.
            try iptables(ns, ["-t", "nat", "-A", "SFNODE-POSTROUTING", "-s", "10.9.9.9/32", "-j", "ACCEPT"])
            try iptables(ns, ["-t", "nat", "-A", "PREROUTING", "-j", "SFNODE-PREROUTING"])
            try iptables(ns, ["-t", "filter", "-D", "FORWARD", "1"])
            #expect(try await firewall.apply(Sample.all) == .updated(added: 0, removed: 1))
            #expect(try saveAll(ns) == wanted)
        }
    }

    @Test func removingOneEntryRemovesExactlyItsRules() async throws {
        try await withTestNamespace("fwone") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            var state = Sample.all
            state.rules.append(Sample.dnat2)
            try await firewall.apply(state)
            let before = try saveAll(ns)

            state.rules.removeAll { $0 == Sample.dnat }
            #expect(try await firewall.apply(state) == .updated(added: 0, removed: 1))
            let after = try saveAll(ns)
            let gone = before.filter { !after.contains($0) }
            #expect(
                gone == [
                    "-A SFNODE-PREROUTING -d 192.0.2.10/32 -j DNAT --to-destination 10.0.0.5",
                ])
            #expect(after == before.filter { !gone.contains($0) })
            #expect(try await firewall.currentState() == state)
        }
    }

    @Test func foreignRulesAndChainsSurviveApplyAndRemoveAll() async throws {
        try await withTestNamespace("fwfor") { ns in
            let foreign = [
                "-A PREROUTING -d 198.51.100.7/32 -j ACCEPT",
                "-A POSTROUTING -o eth9 -j ACCEPT",
                "-A FOREIGN -s 203.0.113.0/24 -j RETURN",
                "-A FORWARD -i foreign0 -j DROP",
            ]
            try iptables(ns, ["-t", "nat", "-A", "PREROUTING", "-d", "198.51.100.7/32", "-j", "ACCEPT"])
            try iptables(ns, ["-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "ACCEPT"])
            try iptables(ns, ["-t", "nat", "-N", "FOREIGN"])
            try iptables(ns, ["-t", "nat", "-A", "FOREIGN", "-s", "203.0.113.0/24", "-j", "RETURN"])
            try iptables(ns, ["-t", "filter", "-A", "FORWARD", "-i", "foreign0", "-j", "DROP"])

            let firewall = try Firewall(namespace: ns, logger: testLogger())
            try await firewall.apply(Sample.all)
            var lines = try saveAll(ns)
            for rule in foreign { #expect(lines.contains(rule), "\(rule) lost by apply") }
            #expect(lines.contains(":FOREIGN -"))
            // The hook goes first, ahead of the foreign rule.
            #expect(lines.filter { $0.hasPrefix("-A PREROUTING") }.first?.hasSuffix("-j SFNODE-PREROUTING") == true)

            try await firewall.apply(FirewallState(rules: [Sample.snat]))
            try await firewall.removeAll()
            lines = try saveAll(ns)
            for rule in foreign { #expect(lines.contains(rule), "\(rule) lost by removeAll") }
            #expect(lines.contains(":FOREIGN -"))
            #expect(!lines.contains { $0.contains("SFNODE") })
        }
    }

    @Test func removeAllLeavesNoChainOrJumpAndIsIdempotent() async throws {
        try await withTestNamespace("fwrm") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            let pristine = try saveAll(ns)
            try await firewall.apply(Sample.all)
            #expect(try saveAll(ns).contains { $0.contains("SFNODE") })

            try await firewall.removeAll()
            #expect(try !saveAll(ns).contains { $0.contains("SFNODE") })
            #expect(try saveAll(ns) == pristine)
            try await firewall.removeAll()
            #expect(try saveAll(ns) == pristine)
            #expect(try await firewall.currentState() == FirewallState())
            // And it comes back from nothing.
            #expect(try await firewall.apply(Sample.all) == .updated(added: 5, removed: 0))
            #expect(try save(ns, table: "nat") == expectedNat)
        }
    }

    @Test func twoNamespacesProgrammedConcurrentlyDoNotInterfere() async throws {
        try await withTestNamespace("fwca") { first in
            try await withTestNamespace("fwcb") { second in
                let a = try Firewall(namespace: first, logger: testLogger())
                let b = try Firewall(namespace: second, logger: testLogger())
                let stateA = FirewallState(rules: [Sample.dnat, Sample.masquerade])
                let stateB = FirewallState(rules: [Sample.dnat2, Sample.forwardOut])
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for round in 0..<15 {
                            try await a.apply(round.isMultiple(of: 2) ? stateA : FirewallState(rules: [Sample.snat]))
                            _ = try await a.currentState()
                        }
                        try await a.apply(stateA)
                    }
                    group.addTask {
                        for round in 0..<15 {
                            try await b.apply(round.isMultiple(of: 2) ? stateB : FirewallState(rules: [Sample.forwardIn]))
                            _ = try await b.currentState()
                        }
                        try await b.apply(stateB)
                    }
                    try await group.waitForAll()
                }
                #expect(try await a.currentState() == stateA)
                #expect(try await b.currentState() == stateB)
                let linesA = try saveAll(first)
                let linesB = try saveAll(second)
                #expect(linesA.contains { $0.contains("-d 192.0.2.10/32 -j DNAT") })
                #expect(!linesA.contains { $0.contains("192.0.2.11") || $0.contains("-A SFNODE-FORWARD") })
                #expect(linesB.contains { $0.contains("-d 192.0.2.11/32 -j DNAT") })
                #expect(linesB.contains { $0.contains("-A SFNODE-FORWARD -i br0 -j ACCEPT") })
                #expect(!linesB.contains { $0.contains("192.0.2.10") || $0.contains("MASQUERADE") })
            }
        }
    }

    /// Rules written by iptables itself, from the text sfnode's rules save as, read back as the same
    /// state: sfnode encodes every kind exactly as iptables does (revisions, sizes, masks).
    @Test func rulesWrittenByIptablesFromTheSavedTextAreRecognised() async throws {
        try await withTestNamespace("fwrst") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            try await firewall.apply(Sample.all)
            let text = (try saveAll(ns)).joined(separator: "\n") + "\n"
            try await firewall.removeAll()
            #expect(try !saveAll(ns).contains { $0.contains("SFNODE") })

            try restore(ns, text)
            #expect(try save(ns, table: "nat") == expectedNat)
            #expect(try await firewall.currentState() == Sample.all)
            #expect(try await firewall.apply(Sample.all) == .unchanged)
        }
    }

    @Test func currentStateRoundTrips() async throws {
        try await withTestNamespace("fwrt") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            #expect(try await firewall.currentState() == FirewallState())
            // Interleaved kinds, a host address in a prefix, and a wildcard interface.
            let state = FirewallState(rules: [
                Sample.forwardIn, Sample.snat, Sample.dnat2,
                .masquerade(source: Sample.prefix("10.1.0.7/16"), outInterface: "vnet+"),
                Sample.dnat, Sample.forwardOut,
                .forwardAccept(inInterface: nil, outInterface: nil, destination: Sample.prefix("0.0.0.0/0")),
            ])
            try await firewall.apply(state)
            let read = try await firewall.currentState()
            #expect(read == state)
            #expect(read.rules.contains(.masquerade(source: Sample.prefix("10.1.0.0/16"), outInterface: "vnet+")))
            #expect(try save(ns, table: "nat").contains { $0.contains("-s 10.1.0.0/16 -o vnet+ ") })
            #expect(try await firewall.apply(read) == .unchanged)
        }
    }

    @Test func badInputIsRefusedByNameAndWritesNothing() async throws {
        try await withTestNamespace("fwbad") { ns in
            let firewall = try Firewall(namespace: ns, logger: testLogger())
            try await firewall.apply(Sample.all)
            let before = try saveAll(ns)

            let long = "abcdefghijklmnop"  // 16 bytes
            let cases: [(FirewallRule, String)] = [
                (.masquerade(source: Sample.prefix("10.0.0.0/24"), outInterface: ""), "outInterface '' is empty"),
                (.masquerade(source: Sample.prefix("10.0.0.0/24"), outInterface: long), "outInterface '\(long)' is 16 bytes"),
                (.forwardAccept(inInterface: "br 0", outInterface: nil), "inInterface 'br 0' contains"),
                (.forwardAccept(inInterface: nil, outInterface: "a/b"), "outInterface 'a/b' contains"),
                (.forwardAccept(inInterface: "br:0", outInterface: nil), "inInterface 'br:0' contains"),
                (.forwardAccept(inInterface: nil, outInterface: "+"), "outInterface '+' is only the wildcard"),
                (.dnat(floating: Sample.address("192.0.2.10"), to: Sample.address("10.0.0.99")), "already DNATed to 10.0.0.5"),
            ]
            for (bad, phrase) in cases {
                // The bad rule comes last, after a change that would otherwise be written.
                let state = FirewallState(rules: [Sample.dnat, Sample.dnat2, bad])
                let error = await #expect(throws: FirewallError.self) { try await firewall.apply(state) }
                let text = error.map { "\($0)" } ?? ""
                #expect(text.contains(phrase), "\(text)")
                #expect(text.contains(bad.description), "\(text)")
                #expect(try saveAll(ns) == before)
            }
            #expect(try await firewall.currentState() == Sample.all)
        }
    }

    @Test func aMissingNamespaceIsNamed() {
        let name = TestNames.unique("fwgone")
        #expect(throws: NamespaceError.notFound(name)) { _ = try Firewall(namespace: name, logger: testLogger()) }
    }
}

/// Value-level behaviour that needs no kernel.
struct FirewallStateTests {
    @Test func duplicatesAreDroppedAndOrderKept() {
        let state = FirewallState(rules: [Sample.snat, Sample.dnat, Sample.snat, Sample.dnat2, Sample.dnat])
        #expect(state.rules == [Sample.snat, Sample.dnat, Sample.dnat2])
    }

    @Test func prefixesAreStoredAsNetworks() {
        var state = FirewallState()
        state.rules = [.masquerade(source: Sample.prefix("10.0.0.9/24"), outInterface: "eth0")]
        #expect(state.rules == [.masquerade(source: Sample.prefix("10.0.0.0/24"), outInterface: "eth0")])
    }

    @Test func equalityIsPerChainOrder() {
        let a = FirewallState(rules: [Sample.dnat, Sample.snat, Sample.dnat2])
        let b = FirewallState(rules: [Sample.snat, Sample.dnat, Sample.dnat2])
        let c = FirewallState(rules: [Sample.dnat2, Sample.dnat, Sample.snat])
        #expect(a == b)
        #expect(a != c)
    }

    @Test func aMissingTableModuleIsExplained() {
        let error = FirewallError.tableUnavailable(
            table: "nat", namespace: "'x'", code: 2, message: "Table does not exist (do you need to insmod?)")
        #expect("\(error)".contains("legacy iptables table 'nat' in namespace 'x': Table does not exist"))
        #expect("\(error)".contains("iptable_nat"))
    }

    @Test func errorsNameTableChainAndRule() {
        let error = FirewallError.operationFailed(
            operation: "iptc_append_entry", table: "nat", chain: "SFNODE-PREROUTING", rule: Sample.dnat.description,
            namespace: "'x'", code: 22, message: "Invalid argument")
        #expect(
            "\(error)"
                == "iptc_append_entry failed in namespace 'x', table nat, chain SFNODE-PREROUTING rule 'dnat 192.0.2.10 to 10.0.0.5': Invalid argument (errno 22)"
        )
    }
}
