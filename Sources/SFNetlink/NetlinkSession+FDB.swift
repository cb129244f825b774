import CNetlink
import Logging
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

// The VXLAN flood list, and per-namespace sysctls.
extension NetlinkSession {
    // MARK: - Flood entries

    /// Adds `remote` to the flood list of the VXLAN `device`: an all-zeros forwarding entry with
    /// that destination, which makes the device send broadcast, unknown-unicast and multicast frames
    /// to every listed remote (head-end replication), as
    /// `bridge fdb append 00:00:00:00:00:00 dev DEV dst REMOTE self permanent` does.
    /// A remote that is already listed is not an error and is not listed twice.
    public func appendFloodEntry(device: String, remote: IPv4Address) throws {
        let operation = "append flood entry"
        let object = "\(remote) on \(device)"
        let index = try index(of: device, operation: operation, object: object)
        let rc = try sendFloodEntry(
            type: Int32(RTM_NEWNEIGH), flags: NLM_F_CREATE | NLM_F_APPEND, index: index, remote: remote,
            operation: operation, object: object)
        if rc == -NLE_EXIST { return }
        if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        logger.info("appended flood entry", metadata: ["link.name": "\(device)", "fdb.remote": "\(remote)"])
    }

    /// Removes `remote` from the flood list of `device`. A remote (or device) that is not there is
    /// not an error.
    public func deleteFloodEntry(device: String, remote: IPv4Address) throws {
        let operation = "delete flood entry"
        let object = "\(remote) on \(device)"
        guard let index = try indexIfPresent(of: device, operation: operation) else { return }
        let rc = try sendFloodEntry(
            type: Int32(RTM_DELNEIGH), flags: 0, index: index, remote: remote, operation: operation, object: object)
        if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV { return }
        if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        logger.info("deleted flood entry", metadata: ["link.name": "\(device)", "fdb.remote": "\(remote)"])
    }

    /// The remotes on the flood list of `device`, in the kernel's order.
    public func floodEntries(device: String) throws -> [IPv4Address] {
        let index = try index(of: device, operation: "list flood entries")
        return try dumpFloodEntries(port: index, object: device)[index] ?? []
    }

    /// Every flood list of the namespace, in one dump: what a pass over every network reads once,
    /// rather than once per VXLAN (the kernel walks every device of the namespace for each
    /// filtered dump, so one dump per network made a pass grow with the square of the networks).
    public func allFloodEntries() throws -> FloodListing {
        FloodListing(byIndex: try dumpFloodEntries(port: nil, object: "every device"))
    }

    /// The flood entries of `port` (every port without one), by device index.
    private func dumpFloodEntries(port: Int32?, object: String) throws -> [Int32: [IPv4Address]] {
        let operation = "list flood entries"
        let sock = try socket()
        // An AF_BRIDGE neighbour dump is the bridge FDB; libnl's neighbour cache does not ask for it,
        // so the request is built here and the replies read with cnl_parse_flood_entry. With a
        // port, the request names it as `bridge fdb show dev` does (an ifinfomsg whose ifi_index the
        // kernel reads as the port to dump); without, every bridge port's entries in the namespace.
        guard let message = nlmsg_alloc_simple(Int32(RTM_GETNEIGH), NLM_F_DUMP) else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        defer { nlmsg_free(message) }
        var header = ifinfomsg()
        header.ifi_family = UInt8(AF_BRIDGE)
        header.ifi_index = port ?? 0
        guard nlmsg_append(message, &header, MemoryLayout<ifinfomsg>.size, Int32(NLMSG_ALIGNTO)) == 0 else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_MSGSIZE))
        }
        // Allocated before sending: failing between the send and the read would leave the dump's
        // replies queued on the socket for the next request to read as its own.
        guard let callbacks = nl_cb_alloc(NL_CB_DEFAULT) else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        defer { nl_cb_put(callbacks) }
        var rc = nl_send_auto(sock, message)
        if rc < 0 { throw NetlinkError(operation: operation, object: object, libnlCode: rc) }
        let collector = FloodEntryCollector(port: port)
        rc = withExtendedLifetime(collector) {
            nl_cb_set(callbacks, NL_CB_VALID, NL_CB_CUSTOM, collectFloodEntry, Unmanaged.passUnretained(collector).toOpaque())
            return nl_recvmsgs(sock, callbacks)
        }
        if rc < 0 {
            // The rest of the dump may still be queued on the socket; a fresh one starts clean.
            closeSocket()
            throw NetlinkError(operation: operation, object: object, libnlCode: rc)
        }
        return collector.remotes
    }

    private func sendFloodEntry(
        type: Int32, flags: Int32, index: Int32, remote: IPv4Address, operation: String, object: String
    ) throws -> Int32 {
        let sock = try socket()
        guard let message = nlmsg_alloc_simple(type, flags) else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        defer { nlmsg_free(message) }
        var header = ndmsg()
        header.ndm_family = UInt8(AF_BRIDGE)
        header.ndm_ifindex = index
        header.ndm_state = UInt16(NUD_PERMANENT)
        // NTF_SELF: the entry belongs to the VXLAN device's own table, not to a bridge above it.
        header.ndm_flags = UInt8(NTF_SELF)
        var mac: [UInt8] = MACAddress.zero.octets
        var destination: [UInt8] = remote.octets
        guard nlmsg_append(message, &header, MemoryLayout<ndmsg>.size, Int32(NLMSG_ALIGNTO)) == 0,
            nla_put(message, Int32(NDA_LLADDR), 6, &mac) == 0,
            nla_put(message, Int32(NDA_DST), 4, &destination) == 0
        else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_MSGSIZE))
        }
        let rc = nl_send_auto(sock, message)
        if rc < 0 { return rc }
        return nl_wait_for_ack(sock)
    }

    // MARK: - Sysctls

    /// Writes a `net/` sysctl of this session's namespace, such as `net/ipv4/ip_forward` or
    /// `net.ipv4.conf.br0.arp_notify` (dots are read as slashes unless the key has a slash, so
    /// device names with dots need the slash form).
    ///
    /// It writes `/proc/sys/<key>` from the namespace thread: `/proc/sys/net` shows the network
    /// namespace of the thread that opens the file, so no other namespace is touched.
    public func setSysctl(_ key: String, _ value: String) throws {
        let operation = "set sysctl"
        let path = try sysctlPath(key, operation: operation)
        guard !value.contains("\n") else {
            throw NetlinkError(
                operation: operation, object: key, code: NetlinkError.invalid, message: "the value contains a newline")
        }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { throw NetlinkError(operation: operation, object: path, errno: errno) }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written < 0 { throw NetlinkError(operation: operation, object: "\(path) = \(value)", errno: errno) }
        guard written == bytes.count else {
            throw NetlinkError(
                operation: operation, object: "\(path) = \(value)", code: Int32(NLE_FAILURE),
                message: "short write: \(written) of \(bytes.count) bytes")
        }
        logger.info("set sysctl", metadata: ["sysctl.key": "\(key)", "sysctl.value": "\(value)"])
    }

    /// ``setSysctl(_:_:)`` for each of `settings`, in order, in one call to the namespace's thread
    /// rather than one each. Stops at the first that fails.
    public func setSysctls(_ settings: [(key: String, value: String)]) throws {
        for (key, value) in settings { try setSysctl(key, value) }
    }

    /// Reads a `net/` sysctl of this session's namespace (see ``setSysctl(_:_:)`` for key syntax),
    /// without the trailing newline.
    public func sysctl(_ key: String) throws -> String {
        let operation = "read sysctl"
        let path = try sysctlPath(key, operation: operation)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw NetlinkError(operation: operation, object: path, errno: errno) }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw NetlinkError(operation: operation, object: path, errno: errno)
            }
            if count == 0 { break }
            data.append(contentsOf: buffer[0..<count])
        }
        var text = String(decoding: data, as: UTF8.self)
        while let last = text.last, last.isNewline { text.removeLast() }
        return text
    }

    /// Maps a key to its `/proc/sys` path, refusing anything outside `net/` or that could climb out.
    private func sysctlPath(_ key: String, operation: String) throws -> String {
        let allowed = key.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || [UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: "-")].contains(byte)
        }
        let relative = key.contains("/") ? key : String(key.map { $0 == "." ? "/" : $0 })
        let components = relative.split(separator: "/", omittingEmptySubsequences: false)
        guard allowed, !key.contains(".."), components.count >= 2, components.first == "net",
            !components.contains(where: { $0.isEmpty || $0 == "." })
        else {
            throw NetlinkError(
                operation: operation, object: "'\(key)'", code: NetlinkError.invalid,
                message: "invalid sysctl key: use a net/ key of [A-Za-z0-9_./-], such as net/ipv4/ip_forward")
        }
        return "/proc/sys/" + relative
    }
}

/// Gathers a dump's flood entries for one ifindex; only touched on the session thread.
private final class FloodEntryCollector {
    let port: Int32?
    var remotes: [Int32: [IPv4Address]] = [:]
    init(port: Int32?) { self.port = port }
}

/// Every flood list of a namespace, by device index, as one dump read them
/// (``NetlinkSession/allFloodEntries()``).
public struct FloodListing: Sendable {
    let byIndex: [Int32: [IPv4Address]]

    /// The flood list of the device with ifindex `index`, as the dump read it: empty for a device
    /// it did not see.
    public func remotes(ofIndex index: Int32) -> [IPv4Address] { byIndex[index] ?? [] }
}

/// `NL_CB_VALID` callback of the FDB dump; `argument` is an unretained ``FloodEntryCollector``.
private let collectFloodEntry: nl_recvmsg_msg_cb_t = { message, argument in
    guard let message, let argument else { return Int32(NL_OK.rawValue) }
    let collector = Unmanaged<FloodEntryCollector>.fromOpaque(argument).takeUnretainedValue()
    var index: Int32 = 0
    var remote: UInt32 = 0
    if cnl_parse_flood_entry(message, &index, &remote) == 1, collector.port.map({ $0 == index }) ?? true {
        let address = IPv4Address(networkOrder: remote)
        if collector.remotes[index]?.contains(address) != true { collector.remotes[index, default: []].append(address) }
    }
    return Int32(NL_OK.rawValue)
}
