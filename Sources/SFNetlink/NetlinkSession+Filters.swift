import CNetlink
import Logging
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// What a guest may send through its tap: frames from its own MAC only; IPv4 from its own address
/// (plus a DHCP client's `0.0.0.0:68 → 255.255.255.255:67`); ARP only with its own MAC and address as
/// the sender (or `0.0.0.0`, an RFC 5227 probe, which claims nothing). Everything else is dropped.
///
/// IPv6 is dropped entirely, link-local included: sfnode's networks are IPv4-only (no addresses, no
/// router, no DHCPv6), so IPv6 carries nothing a guest needs, and letting neighbour discovery
/// through would let a guest answer for another guest's link-local address, the IPv6 form of a
/// forged ARP reply. VLAN-tagged frames are dropped too: they would carry traffic past these checks.
public struct TapFilterPolicy: Sendable, Equatable {
    /// The guest's MAC address, the only source MAC (and ARP sender MAC) it may use.
    public var mac: MACAddress
    /// The guest's IPv4 address; nil when it has none, and then only DHCP and ARP probes pass.
    public var address: IPv4Address?

    /// A policy for a guest with `mac` and, if it has one, `address`.
    public init(mac: MACAddress, address: IPv4Address?) {
        self.mac = mac
        self.address = address
    }
}

/// The tap filter's counters, as the kernel keeps them on the device's clsact qdisc.
public struct TapFilterCounters: Sendable, Equatable {
    /// Frames the guest sent that the filter looked at.
    public var packets: UInt64
    /// Of those, the frames it dropped.
    public var dropped: UInt64

    public init(packets: UInt64, dropped: UInt64) {
        self.packets = packets
        self.dropped = dropped
    }
}

/// The anti-spoofing filter of a guest's tap: a clsact qdisc with one classic-BPF classifier in
/// direct-action mode on the tap's ingress (frames the guest sends arrive on the host's side of the
/// tap as ingress).
///
/// Why classic BPF and not u32 or flower with gact actions: the kernels sfnode runs on here build
/// `cls_u32`, `cls_bpf` and `sch_ingress` in, but not `cls_flower`, `cls_matchall` nor `act_gact`,
/// and without gact a u32 match cannot drop anything. A classic BPF program in direct-action mode
/// returns the verdict (`TC_ACT_OK`/`TC_ACT_SHOT`) itself, needs no bpf(2) loader and no actions, and
/// checks the whole policy in one pass. The kernel counts its drops on the qdisc, which is read
/// back through netlink (``NetlinkSession/tapFilterCounters(device:)``).
///
/// To inspect it (by hand, never from sfnode): `tc -n NS -s qdisc show dev TAP` shows the clsact
/// qdisc with `dropped N`; `tc -n NS filter show dev TAP ingress` shows the program as bytecode.
public enum TapFilter {
    /// The classifier's priority and handle on the ingress hook: fixed, so that re-applying replaces it.
    static let priority: UInt16 = 1
    static let handle: UInt32 = 1
    /// The name the kernel shows for the program (`tc filter show`).
    static let name = "sfnode-antispoof"

    /// tc verdicts a direct-action classifier returns (`TC_ACT_OK`, `TC_ACT_SHOT`).
    static let pass: UInt32 = 0
    static let drop: UInt32 = 2

    /// The classic BPF program that enforces `policy`, as the kernel's `struct sock_filter` array.
    ///
    /// cls_bpf pushes the MAC header back before it runs a program on the ingress hook, so offsets
    /// count from the start of the Ethernet frame and the length includes its 14-byte header, as on
    /// egress. A classic BPF load past the end of the frame ends the program with 0, which for tc is
    /// `TC_ACT_OK`; so every load is preceded by a length check that drops short frames, and the
    /// program never ends that way.
    public static func program(for policy: TapFilterPolicy) -> [sock_filter] {
        var bpf = ClassicBPFAssembler()
        let mac = policy.mac.octets
        let macHigh = UInt32(mac[0]) << 24 | UInt32(mac[1]) << 16 | UInt32(mac[2]) << 8 | UInt32(mac[3])
        let macLow = UInt32(mac[4]) << 8 | UInt32(mac[5])
        let own = policy.address?.value
        let network: UInt32 = 14  // where the IPv4 or ARP header starts

        // Link layer: no VLAN tag (hardware-accelerated tags never reach the bytes), the guest's MAC.
        bpf.load(.word, absolute: ClassicBPFAssembler.ancillary(SKF_AD_VLAN_TAG_PRESENT))
        bpf.jumpIfEqual(0, then: .next, else: .drop)
        bpf.loadLength()
        bpf.jumpIfAtLeast(network, then: .next, else: .drop)
        bpf.load(.word, absolute: 6)
        bpf.jumpIfEqual(macHigh, then: .next, else: .drop)
        bpf.load(.half, absolute: 10)
        bpf.jumpIfEqual(macLow, then: .next, else: .drop)
        bpf.load(.half, absolute: 12)
        bpf.jumpIfEqual(UInt32(ETH_P_IP), then: .ipv4, else: .next)
        bpf.jumpIfEqual(UInt32(ETH_P_ARP), then: .arp, else: .drop)

        bpf.label(.ipv4)
        bpf.loadLength()
        bpf.jumpIfAtLeast(network + 20, then: .next, else: .drop)
        bpf.load(.word, absolute: network + 12)  // source address
        if let own { bpf.jumpIfEqual(own, then: .pass, else: .next) }
        bpf.jumpIfEqual(0, then: .next, else: .drop)
        // From 0.0.0.0: only a DHCP client's broadcast, UDP 68 → 67, unfragmented.
        bpf.load(.word, absolute: network + 16)
        bpf.jumpIfEqual(UInt32.max, then: .next, else: .drop)
        bpf.load(.byte, absolute: network + 9)
        bpf.jumpIfEqual(UInt32(IPPROTO_UDP), then: .next, else: .drop)
        bpf.load(.half, absolute: network + 6)
        bpf.jumpIfAnySet(0x1fff, then: .drop, else: .next)
        // The UDP ports follow the IP options: X = header length, and the frame must hold 14 + X + 4.
        bpf.loadHeaderLengthIntoX(at: network)
        bpf.copyXToA()
        bpf.add(network + 4)
        bpf.copyAToX()
        bpf.loadLength()
        bpf.jumpIfAtLeastX(then: .next, else: .drop)
        bpf.loadHeaderLengthIntoX(at: network)
        bpf.load(.half, indexed: network)
        bpf.jumpIfEqual(68, then: .next, else: .drop)
        bpf.load(.half, indexed: network + 2)
        bpf.jumpIfEqual(67, then: .pass, else: .drop)

        bpf.label(.arp)
        bpf.loadLength()
        bpf.jumpIfAtLeast(network + 28, then: .next, else: .drop)
        bpf.load(.word, absolute: network)  // hardware type Ethernet, protocol type IPv4
        bpf.jumpIfEqual(0x0001_0800, then: .next, else: .drop)
        bpf.load(.half, absolute: network + 4)  // address lengths 6 and 4
        bpf.jumpIfEqual(0x0604, then: .next, else: .drop)
        bpf.load(.word, absolute: network + 8)  // sender MAC
        bpf.jumpIfEqual(macHigh, then: .next, else: .drop)
        bpf.load(.half, absolute: network + 12)
        bpf.jumpIfEqual(macLow, then: .next, else: .drop)
        bpf.load(.word, absolute: network + 14)  // sender address
        if let own { bpf.jumpIfEqual(own, then: .pass, else: .next) }
        bpf.jumpIfEqual(0, then: .pass, else: .drop)

        bpf.label(.pass)
        bpf.ret(pass)
        bpf.label(.drop)
        bpf.ret(drop)
        return bpf.assemble()
    }
}

extension NetlinkSession {
    /// Puts the anti-spoofing filter for `policy` on `device`'s ingress (see ``TapFilter``): a clsact
    /// qdisc if there is none, then the classifier, created or replaced in one request, so applying
    /// again (or with another policy) leaves exactly one filter and never a moment without one.
    ///
    /// The filter belongs to the device: deleting the device removes it, and so does moving the
    /// device to another namespace (the kernel drops a device's qdiscs when it changes namespace), so
    /// a tap that moves must be filtered again where it arrives, before it is brought up.
    public func applyTapFilter(device: String, policy: TapFilterPolicy) throws {
        let operation = "apply tap filter"
        let index = try index(of: device, operation: operation)
        try ensureClsact(index: index, device: device, operation: operation)
        let program = TapFilter.program(for: policy)
        let sock = try socket()
        guard let classifier = rtnl_cls_alloc() else {
            throw NetlinkError(operation: operation, object: device, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_cls_put(classifier) }
        rtnl_tc_set_ifindex(classifier, index)
        rtnl_tc_set_parent(classifier, cnl_clsact_ingress())
        rtnl_tc_set_handle(classifier, TapFilter.handle)
        rtnl_cls_set_prio(classifier, TapFilter.priority)
        rtnl_cls_set_protocol(classifier, UInt16(ETH_P_ALL))
        var rc = rtnl_tc_set_kind(classifier, "bpf")
        if rc < 0 { throw NetlinkError(operation: operation, object: device, libnlCode: rc) }
        // libnl-route 3.7 has no cls_bpf object; it builds the tc header and kind, and the options are
        // added here.
        var message: OpaquePointer?
        rc = rtnl_cls_build_add_request(classifier, NLM_F_CREATE | NLM_F_REPLACE, &message)
        guard rc >= 0, let message else { throw NetlinkError(operation: operation, object: device, libnlCode: rc) }
        defer { nlmsg_free(message) }
        let built: Bool = program.withUnsafeBytes { bytes in
            guard let options = nla_nest_start(message, Int32(TCA_OPTIONS)),
                nla_put_u16(message, Int32(TCA_BPF_OPS_LEN), UInt16(program.count)) == 0,
                nla_put(message, Int32(TCA_BPF_OPS), Int32(bytes.count), bytes.baseAddress) == 0,
                nla_put_string(message, Int32(TCA_BPF_NAME), TapFilter.name) == 0,
                nla_put_u32(message, Int32(TCA_BPF_FLAGS), UInt32(TCA_BPF_FLAG_ACT_DIRECT)) == 0
            else { return false }
            nla_nest_end(message, options)
            return true
        }
        guard built else { throw NetlinkError(operation: operation, object: device, libnlCode: Int32(NLE_MSGSIZE)) }
        rc = nl_send_auto(sock, message)
        if rc >= 0 { rc = nl_wait_for_ack(sock) }
        if rc < 0 { throw NetlinkError(operation: operation, object: device, libnlCode: rc) }
        logger.info(
            "applied tap filter",
            metadata: [
                "link.name": "\(device)", "tapfilter.mac": "\(policy.mac)",
                "tapfilter.address": "\(policy.address.map(\.description) ?? "none")",
            ])
    }

    /// Removes the anti-spoofing filter (the clsact qdisc, and every filter on it) from `device`. A
    /// device without one, or no device, is not an error.
    public func removeTapFilter(device: String) throws {
        let operation = "remove tap filter"
        guard let index = try indexIfPresent(of: device, operation: operation) else { return }
        let rc = try withClsactObject(index: index, device: device, operation: operation) { qdisc in
            rtnl_qdisc_delete(try socket(), qdisc)
        }
        // No qdisc there: the kernel says EINVAL ("Cannot find specified qdisc on specified device")
        // or ENOENT, depending on its version.
        if rc == -NLE_INVAL || rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV { return }
        if rc < 0 { throw NetlinkError(operation: operation, object: device, libnlCode: rc) }
        logger.info("removed tap filter", metadata: ["link.name": "\(device)"])
    }

    /// How many BPF classifiers `device`'s ingress holds: 1 when the anti-spoofing filter is on, 0
    /// for a device without a clsact qdisc. Throws `NLE_NODEV` for a missing device.
    public func tapFilterCount(device: String) throws -> Int {
        let operation = "list tap filters"
        let index = try index(of: device, operation: operation)
        guard try clsactQdisc(index: index, device: device, operation: operation, { _ in true }) != nil else { return 0 }
        var cache: OpaquePointer?
        let rc = rtnl_cls_alloc_cache(try socket(), index, cnl_clsact_ingress(), &cache)
        guard rc >= 0, let cache else { throw NetlinkError(operation: operation, object: device, libnlCode: rc) }
        defer { nl_cache_free(cache) }
        var count = 0
        var object = nl_cache_get_first(cache)
        while let current = object {
            // A dump lists each priority's head too (no handle); only the filters themselves count.
            let kind = rtnl_tc_get_kind(current).map { String(cString: $0) }
            if kind == "bpf", rtnl_tc_get_handle(current) != 0 { count += 1 }
            object = nl_cache_get_next(current)
        }
        return count
    }

    /// The filter's counters on `device`: frames seen and frames dropped, as the kernel keeps them on
    /// the clsact qdisc. Nil when the device has no filter.
    public func tapFilterCounters(device: String) throws -> TapFilterCounters? {
        let operation = "read tap filter counters"
        let index = try index(of: device, operation: operation)
        return try clsactQdisc(index: index, device: device, operation: operation) { qdisc in
            TapFilterCounters(packets: rtnl_tc_get_stat(qdisc, RTNL_TC_PACKETS), dropped: rtnl_tc_get_stat(qdisc, RTNL_TC_DROPS))
        }
    }

    /// Runs `body` with a qdisc object naming `index`'s clsact qdisc (its parent and handle), freed
    /// after: what adding and deleting that qdisc both send.
    private func withClsactObject<T>(index: Int32, device: String, operation: String, _ body: (OpaquePointer) throws -> T) throws -> T {
        guard let qdisc = rtnl_qdisc_alloc() else {
            throw NetlinkError(operation: operation, object: device, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_qdisc_put(qdisc) }
        rtnl_tc_set_ifindex(qdisc, index)
        rtnl_tc_set_parent(qdisc, cnl_clsact_parent())
        rtnl_tc_set_handle(qdisc, cnl_clsact_handle())
        return try body(qdisc)
    }

    /// Adds the clsact qdisc to the device; one that is there already is kept (with its filters), without
    /// a dump of every qdisc in the namespace to check it, which would make filtering n taps cost n².
    private func ensureClsact(index: Int32, device: String, operation: String) throws {
        let rc = try withClsactObject(index: index, device: device, operation: operation) { qdisc in
            let kind = rtnl_tc_set_kind(qdisc, "clsact")
            return kind < 0 ? kind : rtnl_qdisc_add(try socket(), qdisc, NLM_F_CREATE | NLM_F_EXCL)
        }
        // There already: sfnode's clsact from an earlier apply. (A plain ingress qdisc would do as
        // well: it serves the same ingress hook.)
        if rc == -NLE_EXIST { return }
        if rc < 0 { throw NetlinkError(operation: operation, object: device, libnlCode: rc) }
    }

    /// Reads the device's clsact qdisc, if it has one, through `body`.
    private func clsactQdisc<T>(
        index: Int32, device: String, operation: String, _ body: (OpaquePointer) -> T
    ) throws -> T? {
        var cache: OpaquePointer?
        let rc = rtnl_qdisc_alloc_cache(try socket(), &cache)
        guard rc >= 0, let cache else { throw NetlinkError(operation: operation, object: device, libnlCode: rc) }
        defer { nl_cache_free(cache) }
        guard let qdisc = rtnl_qdisc_get_by_parent(cache, index, cnl_clsact_parent()) else { return nil }
        defer { rtnl_qdisc_put(qdisc) }
        guard rtnl_tc_get_kind(qdisc).map({ String(cString: $0) }) == "clsact" else { return nil }
        return body(qdisc)
    }
}

/// Builds a classic BPF program with symbolic jump targets, so that the program reads in order and
/// its offsets are computed, not counted by hand.
struct ClassicBPFAssembler {
    /// Where a conditional jump goes.
    enum Target: Hashable {
        /// The next instruction.
        case next
        case pass, drop, ipv4, arp
    }

    enum Size {
        case word, half, byte
        var code: UInt16 {
            switch self {
            case .word: return UInt16(BPF_W)
            case .half: return UInt16(BPF_H)
            case .byte: return UInt16(BPF_B)
            }
        }
    }

    private enum Step {
        case plain(code: UInt16, k: UInt32)
        case jump(code: UInt16, k: UInt32, then: Target, else: Target)
    }

    private var steps: [Step] = []
    private var labels: [Target: Int] = [:]

    /// The `k` of an ancillary load (`SKF_AD_OFF + field`).
    static func ancillary(_ field: Int32) -> UInt32 { UInt32(bitPattern: SKF_AD_OFF + field) }

    mutating func label(_ target: Target) { labels[target] = steps.count }

    mutating func load(_ size: Size, absolute k: UInt32) {
        steps.append(.plain(code: UInt16(BPF_LD | BPF_ABS) | size.code, k: k))
    }
    mutating func load(_ size: Size, indexed k: UInt32) {
        steps.append(.plain(code: UInt16(BPF_LD | BPF_IND) | size.code, k: k))
    }
    /// A = the frame's length.
    mutating func loadLength() { steps.append(.plain(code: UInt16(BPF_LD | BPF_W | BPF_LEN), k: 0)) }
    /// X = 4 × (the byte at `k` & 0xf): an IPv4 header's length.
    mutating func loadHeaderLengthIntoX(at k: UInt32) {
        steps.append(.plain(code: UInt16(BPF_LDX | BPF_B | BPF_MSH), k: k))
    }
    mutating func copyXToA() { steps.append(.plain(code: UInt16(BPF_MISC | BPF_TXA), k: 0)) }
    mutating func copyAToX() { steps.append(.plain(code: UInt16(BPF_MISC | BPF_TAX), k: 0)) }
    mutating func add(_ k: UInt32) { steps.append(.plain(code: UInt16(BPF_ALU | BPF_ADD | BPF_K), k: k)) }
    mutating func ret(_ k: UInt32) { steps.append(.plain(code: UInt16(BPF_RET | BPF_K), k: k)) }

    mutating func jumpIfEqual(_ k: UInt32, then: Target, else other: Target) {
        steps.append(.jump(code: UInt16(BPF_JMP | BPF_JEQ | BPF_K), k: k, then: then, else: other))
    }
    mutating func jumpIfAtLeast(_ k: UInt32, then: Target, else other: Target) {
        steps.append(.jump(code: UInt16(BPF_JMP | BPF_JGE | BPF_K), k: k, then: then, else: other))
    }
    mutating func jumpIfAtLeastX(then: Target, else other: Target) {
        steps.append(.jump(code: UInt16(BPF_JMP | BPF_JGE | BPF_X), k: 0, then: then, else: other))
    }
    mutating func jumpIfAnySet(_ k: UInt32, then: Target, else other: Target) {
        steps.append(.jump(code: UInt16(BPF_JMP | BPF_JSET | BPF_K), k: k, then: then, else: other))
    }

    /// The instructions, with each jump's offsets resolved. Every target is defined after its jumps
    /// and within 255 instructions (the program is sfnode's own and short), which the precondition
    /// states rather than checks at run time.
    func assemble() -> [sock_filter] {
        func offset(from position: Int, to target: Target) -> UInt8 {
            guard target != .next else { return 0 }
            guard let destination = labels[target], let distance = UInt8(exactly: destination - position - 1) else {
                preconditionFailure("classic BPF jump from \(position) to \(target) is backwards, undefined or too far")
            }
            return distance
        }
        return steps.enumerated().map { position, step in
            switch step {
            case .plain(let code, let k):
                return sock_filter(code: code, jt: 0, jf: 0, k: k)
            case .jump(let code, let k, let then, let other):
                return sock_filter(code: code, jt: offset(from: position, to: then), jf: offset(from: position, to: other), k: k)
            }
        }
    }
}
