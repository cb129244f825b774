import SFSystem
import Testing

@testable import SFFirewall

/// The plan that turns a chain's current rules into the desired ones: edited in place when the kept
/// rules are already in order, otherwise flushed and refilled.
struct ChainEditTests {
    private func dnat(_ last: UInt32) -> FirewallRule {
        .dnat(floating: IPv4Address(0xC000_0200 + last), to: IPv4Address(0x0A00_0000 + last))
    }
    private let masquerade = FirewallRule.masquerade(source: IPv4Prefix("10.0.0.0/24")!, outInterface: "eg")

    @Test func equalChainsNeedNoEdit() {
        let rules = [dnat(1), dnat(2), masquerade]
        #expect(ChainEdit(current: rules, desired: rules).isEmpty)
    }

    @Test func aFloatInsertedBeforeTheMasqueradeIsOneInsertAtItsPosition() {
        let edit = ChainEdit(current: [dnat(1), masquerade], desired: [dnat(1), dnat(2), masquerade])
        #expect(edit.inPlace)
        #expect(edit.deletions.isEmpty)
        #expect(edit.insertions.map(\.position) == [1])
        #expect(edit.insertions.map(\.rule) == [dnat(2)])
        #expect((edit.added, edit.removed) == (1, 0))
    }

    @Test func aDefloatIsOneDeletion() {
        let edit = ChainEdit(current: [dnat(1), dnat(2), dnat(3)], desired: [dnat(1), dnat(3)])
        #expect(edit.inPlace)
        #expect(edit.deletions == [1])
        #expect(edit.insertions.isEmpty)
    }

    @Test func foreignAndRepeatedEntriesAreDeleted() {
        let edit = ChainEdit(current: [dnat(1), nil, dnat(1), dnat(2)], desired: [dnat(1), dnat(2)])
        #expect(edit.inPlace)
        #expect(edit.deletions == [1, 2])
        #expect(edit.removed == 2)
    }

    @Test func reorderedRulesAreRewrittenWhole() {
        // The masquerade must come after the dnats; an in-place edit could not move it.
        let edit = ChainEdit(current: [masquerade, dnat(1)], desired: [dnat(1), masquerade])
        #expect(!edit.inPlace)
        #expect(!edit.isEmpty)
    }

    @Test func aRepeatOfARuleKeptInThePrefixIsDeleted() {
        let edit = ChainEdit(current: [dnat(1), dnat(2), dnat(1)], desired: [dnat(1), dnat(2)])
        #expect(edit.inPlace)
        #expect(edit.deletions == [2])
        #expect(edit.insertions.isEmpty)
    }

    @Test func positionsAreAbsoluteWhenOnlyTheMiddleChanges() {
        let current: [FirewallRule?] = [dnat(1), dnat(2), nil, dnat(4), masquerade]
        let edit = ChainEdit(current: current, desired: [dnat(1), dnat(2), dnat(3), dnat(4), masquerade])
        #expect(edit.inPlace)
        #expect(edit.deletions == [2])
        #expect(edit.insertions.map(\.position) == [2])
        #expect(edit.insertions.map(\.rule) == [dnat(3)])
    }
}
