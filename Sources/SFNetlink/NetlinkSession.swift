import CNetlink
import Logging
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// One rtnetlink socket in one network namespace, and everything sfnode does through it.
///
/// The actor runs on a dedicated thread that has entered the namespace (``NamespaceExecutor``):
/// a netlink socket belongs to the namespace of the thread that opens it, `/proc/sys/net` shows the
/// namespace of the thread that opens the file, and libnl's `nl_sock` is not thread-safe. All three
/// are satisfied by doing every call on that one thread.
///
/// The socket is opened on first use rather than in `init`, because `init` is synchronous and runs
/// on the caller's thread, which is not in the namespace.
///
/// Creating what exists (with the same kind) and deleting what is absent succeed, so callers can
/// re-apply their desired state after a crash.
public actor NetlinkSession {
    /// The namespace the session works in; nil for the process's own.
    public nonisolated let namespace: String?
    /// The namespace thread every call runs on, for the namespace's other owners to share.
    public nonisolated let thread: NamespaceExecutor
    let logger: Logger
    /// Opened lazily by ``socket()``; only ever touched on `thread`.
    private let connection = SocketHandle()

    /// Runs every isolated method on the namespace thread.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.executor.asUnownedSerialExecutor() }

    /// Starts the session's thread inside `namespace` (nil = the process's own namespace).
    ///
    /// Throws if the namespace does not exist. The `NETLINK_ROUTE` socket is opened by the first
    /// call that needs it, on the namespace thread, and a failure to open it is thrown there.
    public init(namespace: String?, logger: Logger) throws {
        self.init(thread: try NamespaceExecutor(namespace: namespace), logger: logger)
    }

    /// A session on an existing namespace thread, shared with the other owners in that namespace
    /// (its ``Firewall``, for one), so that one namespace costs one thread.
    public init(thread: NamespaceExecutor, logger: Logger) {
        let namespace = thread.namespace
        self.namespace = namespace
        self.thread = thread
        var logger = logger
        logger[metadataKey: "netns.name"] = "\(namespace ?? "(own)")"
        self.logger = logger
    }

    /// The session's socket, opened inside the namespace on first use.
    func socket() throws -> OpaquePointer {
        if let open = connection.pointer { return open }
        let object = "in namespace \(namespace ?? "(own)")"
        guard let sock = nl_socket_alloc() else {
            throw NetlinkError(operation: "allocate netlink socket", object: object, libnlCode: Int32(NLE_NOMEM))
        }
        let rc = nl_connect(sock, NETLINK_ROUTE)
        if rc < 0 {
            nl_socket_free(sock)
            throw NetlinkError(operation: "connect NETLINK_ROUTE socket", object: object, libnlCode: rc)
        }
        connection.pointer = sock
        return sock
    }

    /// Frees the session's socket, so that the next call opens a fresh one. For after a failure
    /// that may leave unread replies on it.
    func closeSocket() {
        if let open = connection.pointer {
            nl_socket_free(open)
            connection.pointer = nil
        }
    }

    // MARK: - Lookup

    /// The link called `name`, or nil if there is none.
    public func link(named name: String) throws -> LinkInfo? {
        try validateLinkName(name, operation: "look up link")
        guard let link = try fetchLink(name, operation: "look up link") else { return nil }
        defer { rtnl_link_put(link) }
        return LinkInfo(link: link)
    }

    /// Every link in the namespace, in ifindex order.
    public func links() throws -> [LinkInfo] {
        let sock = try socket()
        var cache: OpaquePointer?
        let rc = rtnl_link_alloc_cache(sock, AF_UNSPEC, &cache)
        guard rc >= 0, let cache else {
            throw NetlinkError(operation: "list links", object: "in namespace \(namespace ?? "(own)")", libnlCode: rc)
        }
        defer { nl_cache_free(cache) }
        var result: [LinkInfo] = []
        var object = nl_cache_get_first(cache)
        while let current = object {
            result.append(LinkInfo(link: current))
            object = nl_cache_get_next(current)
        }
        return result.sorted { $0.index < $1.index }
    }

    /// Fetches one link from the kernel; nil when it does not exist. The caller must `rtnl_link_put` it.
    func fetchLink(_ name: String, operation: String) throws -> OpaquePointer? {
        let sock = try socket()
        var link: OpaquePointer?
        let rc = rtnl_link_get_kernel(sock, 0, name, &link)
        if rc == -NLE_NODEV || rc == -NLE_OBJ_NOTFOUND { return nil }
        if rc < 0 { throw NetlinkError(operation: operation, object: name, libnlCode: rc) }
        return link
    }

    /// The ifindex of `name`, throwing `NLE_NODEV` naming it when it does not exist.
    ///
    /// `if_nametoindex` asks through a socket opened on this thread, so in this namespace; it is much
    /// cheaper than an RTM_GETLINK round trip that returns and parses the whole link.
    func index(of name: String, operation: String, object: String? = nil) throws -> Int32 {
        try validateLinkName(name, operation: operation)
        let found = if_nametoindex(name)
        guard found != 0 else {
            guard errno == ENODEV || errno == ENXIO else {
                throw NetlinkError(operation: operation, object: object ?? name, errno: errno)
            }
            throw NetlinkError(
                operation: operation, object: object ?? name, code: NetlinkError.noDevice,
                message: "\(String(cString: nl_geterror(NLE_NODEV))): no device named '\(name)'")
        }
        return Int32(bitPattern: found)
    }

    /// The ifindex of `name`, or nil when there is no such device: removing something from a device
    /// that is gone has nothing left to do.
    func indexIfPresent(of name: String, operation: String) throws -> Int32? {
        do {
            return try index(of: name, operation: operation)
        } catch let error as NetlinkError where error.code == NetlinkError.noDevice {
            return nil
        }
    }

    // MARK: - Creating links

    /// Creates a bridge with STP off and a forward delay of 0, so ports forward as soon as they are
    /// enslaved (guests get DHCP without a 15 s wait), and up when `up` is set. An existing bridge of
    /// that name keeps its settings but is brought up if `up` is set.
    public func createBridge(name: String, mtu: Int? = nil, up: Bool = false) throws {
        let operation = "create bridge"
        try validateLinkName(name, operation: operation)
        try validate(mtu: mtu, operation: operation, object: name)
        let sock = try socket()
        // libnl 3.7 has no setters for the bridge's own IFLA_BR_* attributes, so the message is built by hand.
        guard let message = nlmsg_alloc_simple(Int32(RTM_NEWLINK), NLM_F_CREATE | NLM_F_EXCL) else {
            throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_NOMEM))
        }
        defer { nlmsg_free(message) }
        var header = ifinfomsg()
        header.ifi_family = UInt8(AF_UNSPEC)
        if up {
            header.ifi_flags = UInt32(IFF_UP)
            header.ifi_change = UInt32(IFF_UP)
        }
        let built: Bool = {
            guard nlmsg_append(message, &header, MemoryLayout<ifinfomsg>.size, Int32(NLMSG_ALIGNTO)) == 0,
                nla_put_string(message, Int32(IFLA_IFNAME), name) == 0
            else { return false }
            if let mtu, nla_put_u32(message, Int32(IFLA_MTU), UInt32(mtu)) != 0 { return false }
            guard let info = nla_nest_start(message, Int32(IFLA_LINKINFO)),
                nla_put_string(message, Int32(IFLA_INFO_KIND), "bridge") == 0,
                let data = nla_nest_start(message, Int32(IFLA_INFO_DATA)),
                nla_put_u32(message, Int32(IFLA_BR_FORWARD_DELAY), 0) == 0,
                nla_put_u32(message, Int32(IFLA_BR_STP_STATE), 0) == 0
            else { return false }
            nla_nest_end(message, data)
            nla_nest_end(message, info)
            return true
        }()
        guard built else { throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_MSGSIZE)) }
        var rc = nl_send_auto(sock, message)
        if rc >= 0 { rc = nl_wait_for_ack(sock) }
        try finishCreate(rc, name: name, kind: .bridge, master: nil, up: up, operation: operation)
    }

    /// Creates a VXLAN device with VNI `id`, sending through `underlay` (a device name) from
    /// `local`, on UDP `port`. Remotes come later, as flood entries (``appendFloodEntry(device:remote:)``).
    /// With `master` it is created enslaved to that bridge, with `up` administratively up.
    /// An existing VXLAN of that name with the same VNI is enslaved and brought up as asked, and
    /// otherwise left as it is; with another VNI it is an error.
    public func createVXLAN(
        name: String, id: UInt32, underlay: String?, local: IPv4Address?, port: UInt16 = 4789, mtu: Int? = nil,
        master: String? = nil, up: Bool = false
    ) throws {
        let operation = "create vxlan"
        try validateLinkName(name, operation: operation)
        try validate(mtu: mtu, operation: operation, object: name)
        guard id < 1 << 24 else {
            throw NetlinkError(
                operation: operation, object: name, code: NetlinkError.invalid,
                message: "VXLAN id \(id) is outside 0...16777215")
        }
        guard let link = rtnl_link_vxlan_alloc() else {
            throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_link_put(link) }
        rtnl_link_set_name(link, name)
        var rc = rtnl_link_vxlan_set_id(link, id)
        if rc >= 0 { rc = rtnl_link_vxlan_set_port(link, UInt32(port)) }
        if rc >= 0, let underlay {
            rc = rtnl_link_vxlan_set_link(link, UInt32(try index(of: underlay, operation: operation)))
        }
        if rc >= 0, let local {
            guard let address = makeNLAddress(local) else {
                throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_NOMEM))
            }
            rc = rtnl_link_vxlan_set_local(link, address)
            nl_addr_put(address)
        }
        if rc < 0 { throw NetlinkError(operation: operation, object: name, libnlCode: rc) }
        if let mtu { rtnl_link_set_mtu(link, UInt32(mtu)) }
        try setCreateOptions(link, master: master, up: up, operation: operation)
        rc = rtnl_link_add(try socket(), link, NLM_F_CREATE | NLM_F_EXCL)
        try finishCreate(rc, name: name, kind: .vxlan, master: master, up: up, operation: operation) { existing in
            var existingID: UInt32 = 0
            let rc = rtnl_link_vxlan_get_id(existing, &existingID)
            if rc < 0 { throw NetlinkError(operation: operation, object: name, libnlCode: rc) }
            guard existingID == id else {
                throw NetlinkError(
                    operation: operation, object: name, code: NetlinkError.exists,
                    message: "a vxlan named '\(name)' exists with id \(existingID), not \(id)")
            }
        }
    }

    /// Creates a veth pair `name` ↔ `peer`, with the peer created directly inside `peerNamespace`
    /// (nil = this session's namespace), and `mtu` on both ends (a mismatch drops large frames
    /// silently). `master` and `up` apply to this end (`name`), at creation. An existing veth called
    /// `name` is enslaved and brought up as asked, and otherwise left as it is.
    public func createVethPair(
        name: String, peer: String, peerNamespace: String? = nil, mtu: Int? = nil, master: String? = nil,
        up: Bool = false
    ) throws {
        let operation = "create veth pair"
        try validateLinkName(name, operation: operation)
        try validateLinkName(peer, operation: operation)
        try validate(mtu: mtu, operation: operation, object: name)
        guard let link = rtnl_link_veth_alloc() else {
            throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_link_put(link) }
        guard let peerLink = rtnl_link_veth_get_peer(link) else {
            throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_link_put(peerLink) }
        rtnl_link_set_name(link, name)
        rtnl_link_set_name(peerLink, peer)
        if let mtu {
            rtnl_link_set_mtu(link, UInt32(mtu))
            rtnl_link_set_mtu(peerLink, UInt32(mtu))
        }
        var namespaceFD: Int32 = -1
        if let peerNamespace {
            namespaceFD = try openNamespace(peerNamespace, operation: operation, object: "\(name) peer \(peer)")
            rtnl_link_set_ns_fd(peerLink, namespaceFD)
        }
        defer { if namespaceFD >= 0 { close(namespaceFD) } }
        try setCreateOptions(link, master: master, up: up, operation: operation)
        let rc = rtnl_link_add(try socket(), link, NLM_F_CREATE | NLM_F_EXCL)
        try finishCreate(rc, name: name, kind: .veth, master: master, up: up, operation: operation)
    }

    /// Creates a persistent tap device, owned by no process until one (qemu) opens it by name, with
    /// `mtu` when given. An existing tun/tap of that name is kept, but still gets `mtu`, so
    /// re-running a create converges.
    public func createTap(name: String, mtu: Int? = nil) throws {
        let operation = "create tap"
        try validateLinkName(name, operation: operation)
        try validate(mtu: mtu, operation: operation, object: name)
        if try !existing(name, is: .tun, operation: operation) {
            // TUNSETIFF creates the device in the namespace of the thread that opened /dev/net/tun: ours.
            let rc = cnl_create_persistent_tap(name)
            if rc < 0 { throw NetlinkError(operation: operation, object: name, errno: -rc) }
            logger.info("created link", metadata: ["link.name": "\(name)", "link.kind": "tun"])
        }
        // The tun ioctls cannot set an MTU, so it is a second request in both cases.
        if let mtu { try setMTU(name, mtu) }
    }

    // MARK: - Changing links

    /// Sets the link administratively up or down.
    public func setLinkUp(_ name: String, _ up: Bool) throws {
        try changeLink(name, operation: up ? "set link up" : "set link down") { changes in
            if up {
                rtnl_link_set_flags(changes, UInt32(IFF_UP))
            } else {
                rtnl_link_unset_flags(changes, UInt32(IFF_UP))
            }
        }
    }

    /// Sets the link's MTU.
    public func setMTU(_ name: String, _ mtu: Int) throws {
        try validate(mtu: mtu, operation: "set MTU", object: name)
        try changeLink(name, operation: "set MTU") { rtnl_link_set_mtu($0, UInt32(mtu)) }
    }

    /// Enslaves the link to the bridge `master`, or frees it from any bridge when `master` is nil.
    public func setMaster(_ name: String, master: String?) throws {
        let operation = master == nil ? "clear master" : "set master"
        let masterIndex = try master.map { try index(of: $0, operation: operation, object: "\(name) master \($0)") } ?? 0
        // IFLA_MASTER 0 is how rtnetlink spells "nomaster".
        try changeLink(name, operation: operation) { rtnl_link_set_master($0, masterIndex) }
    }

    /// Sets the link's hardware address.
    public func setMAC(_ name: String, _ mac: MACAddress) throws {
        guard let address = makeNLAddress(mac) else {
            throw NetlinkError(operation: "set MAC", object: name, libnlCode: Int32(NLE_NOMEM))
        }
        defer { nl_addr_put(address) }
        try changeLink(name, operation: "set MAC") { rtnl_link_set_addr($0, address) }
    }

    /// Moves the link into the namespace `toNamespace`, or into the process's own namespace when nil.
    ///
    /// The process's own namespace is taken from `/proc/self/ns/net`, which is the namespace of the
    /// process's main thread (`/proc/self` is the thread-group leader). That is right because sfnode
    /// only ever calls `setns` on dedicated ``NamespaceExecutor`` threads, never on the main thread.
    /// A link that is not in this session's namespace is an error (`NLE_NODEV`) naming it.
    public func moveLink(_ name: String, toNamespace: String?) throws {
        let target = toNamespace ?? "(own)"
        let operation = "move link to namespace \(target)"
        let namespaceFD: Int32
        if let toNamespace {
            namespaceFD = try openNamespace(toNamespace, operation: operation, object: name)
        } else {
            namespaceFD = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
            if namespaceFD < 0 { throw NetlinkError(operation: operation, object: "/proc/self/ns/net", errno: errno) }
        }
        defer { close(namespaceFD) }
        try changeLink(name, operation: operation) { rtnl_link_set_ns_fd($0, namespaceFD) }
    }

    /// Deletes the link. A link that does not exist is not an error. Deleting either end of a veth
    /// pair deletes both.
    public func deleteLink(_ name: String) throws {
        let operation = "delete link"
        try validateLinkName(name, operation: operation)
        guard let link = try fetchLink(name, operation: operation) else {
            logger.debug("link already absent", metadata: ["link.name": "\(name)"])
            return
        }
        defer { rtnl_link_put(link) }
        let rc = rtnl_link_delete(try socket(), link)
        // Gone between the lookup and the delete (a veth whose peer was deleted, say): also fine.
        if rc == -NLE_NODEV || rc == -NLE_OBJ_NOTFOUND { return }
        if rc < 0 { throw NetlinkError(operation: operation, object: name, libnlCode: rc) }
        logger.info("deleted link", metadata: ["link.name": "\(name)"])
    }

    // MARK: - Helpers

    /// Applies the attributes `configure` sets on an empty `rtnl_link` to the existing link `name`.
    private func changeLink(_ name: String, operation: String, _ configure: (OpaquePointer) -> Void) throws {
        // The change request needs only the ifindex; fetching and parsing the whole link first
        // doubled the cost of every change.
        let linkIndex = try index(of: name, operation: operation)
        guard let original = rtnl_link_alloc() else {
            throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_link_put(original) }
        rtnl_link_set_ifindex(original, linkIndex)
        guard let changes = rtnl_link_alloc() else {
            throw NetlinkError(operation: operation, object: name, libnlCode: Int32(NLE_NOMEM))
        }
        defer { rtnl_link_put(changes) }
        configure(changes)
        let rc = rtnl_link_change(try socket(), original, changes, 0)
        if rc < 0 { throw NetlinkError(operation: operation, object: name, libnlCode: rc) }
        logger.debug("changed link", metadata: ["link.name": "\(name)", "link.change": "\(operation)"])
    }

    /// True if `name` exists with `kind` (so creation is skipped), false if it does not exist;
    /// throws if it exists with another kind.
    private func existing(_ name: String, is kind: LinkKind, operation: String) throws -> Bool {
        guard let link = try fetchLink(name, operation: operation) else { return false }
        defer { rtnl_link_put(link) }
        try checkExisting(link, is: kind, name: name, operation: operation)
        logger.debug("link exists", metadata: ["link.name": "\(name)", "link.kind": "\(kind)"])
        return true
    }

    private func checkExisting(_ link: OpaquePointer, is kind: LinkKind, name: String, operation: String) throws {
        let actual = LinkInfo(link: link).kind
        guard actual == kind else {
            throw NetlinkError(
                operation: operation, object: name, code: NetlinkError.exists,
                message: "a link named '\(name)' exists with kind \(actual), not \(kind)")
        }
    }

    /// Puts the master and the up flag into a create request, so the kernel enslaves and starts the
    /// link as it creates it instead of in two more requests.
    private func setCreateOptions(_ link: OpaquePointer, master: String?, up: Bool, operation: String) throws {
        if let master { rtnl_link_set_master(link, try index(of: master, operation: operation)) }
        if up { rtnl_link_set_flags(link, UInt32(IFF_UP)) }
    }

    /// Turns a create's return code into success, a conflict, or an error. Links are created
    /// without looking first (one request instead of two); `NLE_EXIST` then means the link is already
    /// there, which is success only if it has the right kind and passes `check`. An existing link is
    /// then enslaved and brought up as the create asked, if it is not already, so re-running a
    /// create converges.
    private func finishCreate(
        _ rc: Int32, name: String, kind: LinkKind, master: String?, up: Bool, operation: String,
        check: (OpaquePointer) throws -> Void = { _ in }
    ) throws {
        if rc == -NLE_EXIST, let link = try fetchLink(name, operation: operation) {
            defer { rtnl_link_put(link) }
            try checkExisting(link, is: kind, name: name, operation: operation)
            try check(link)
            logger.debug("link exists", metadata: ["link.name": "\(name)", "link.kind": "\(kind)"])
            // Changed only where it differs: a reconciliation pass re-applies every link, and a
            // change that changes nothing still costs a request each (and a notification to every
            // listener).
            if let master, rtnl_link_get_master(link) != (try index(of: master, operation: operation, object: "\(name) master \(master)")) {
                try setMaster(name, master: master)
            }
            if up && rtnl_link_get_flags(link) & UInt32(IFF_UP) == 0 { try setLinkUp(name, true) }
            return
        }
        if rc < 0 { throw NetlinkError(operation: operation, object: name, libnlCode: rc) }
        logger.info("created link", metadata: ["link.name": "\(name)", "link.kind": "\(kind)"])
    }

    private func openNamespace(_ name: String, operation: String, object: String) throws -> Int32 {
        do {
            try NetworkNamespace.validate(name: name)
        } catch {
            throw NetlinkError(operation: operation, object: object, code: NetlinkError.invalid, message: "\(error)")
        }
        let path = NetworkNamespace.path(of: name)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw NetlinkError(operation: operation, object: "\(object) (namespace \(path))", errno: errno) }
        return fd
    }

    private func validate(mtu: Int?, operation: String, object: String) throws {
        guard let mtu else { return }
        guard (68...65535).contains(mtu) else {
            throw NetlinkError(
                operation: operation, object: object, code: NetlinkError.invalid,
                message: "MTU \(mtu) is outside 68...65535")
        }
    }
}

/// Owns the session's `nl_sock` and frees it with the session.
///
/// `@unchecked Sendable`: the pointer is only read and written by the session's isolated methods
/// (on its one thread), and `deinit` runs when nothing else can reach it, so freeing it from
/// whichever thread drops the last reference is safe.
private final class SocketHandle: @unchecked Sendable {
    var pointer: OpaquePointer?

    deinit {
        if let pointer { nl_socket_free(pointer) }
    }
}

/// Checks a device name by the kernel's rule (``LinkName``).
func validateLinkName(_ name: String, operation: String) throws {
    if let problem = LinkName.problem(with: name) {
        throw NetlinkError(operation: operation, object: "'\(name)'", code: NetlinkError.invalid, message: "invalid device name: it \(problem)")
    }
}
