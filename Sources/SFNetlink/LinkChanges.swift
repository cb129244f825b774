import CNetlink
import Logging
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension NetlinkSession {
    /// A stream of link changes in this session's namespace: links added, removed, and changed
    /// (up/down shows up as ``LinkChange/changed(_:)`` with the new `isUp`).
    ///
    /// Each stream has its own socket subscribed to `RTNLGRP_LINK` and its own thread reading it.
    /// The socket is opened here, on the namespace thread, so it listens in this namespace; the
    /// reading thread therefore needs no `setns` of its own. Cancelling the consuming task or
    /// dropping the stream stops the thread within about 100 ms and closes the socket.
    ///
    /// Links that exist when the stream is made are known to it, so their events are `changed`;
    /// a link created after this returns first appears as `added`. Events are hints: if the kernel
    /// drops some (socket buffer overrun), a warning is logged and the stream goes on, so pair it
    /// with a periodic full read of ``links()``.
    public func linkChanges() throws -> AsyncStream<LinkChange> {
        let operation = "watch link changes"
        let object = "in namespace \(namespace ?? "(own)")"
        guard let watchSocket = nl_socket_alloc() else {
            throw NetlinkError(operation: operation, object: object, libnlCode: Int32(NLE_NOMEM))
        }
        // Notifications carry no sequence number we asked for.
        nl_socket_disable_seq_check(watchSocket)
        var rc = nl_connect(watchSocket, NETLINK_ROUTE)
        if rc >= 0 { rc = nl_socket_add_membership(watchSocket, Int32(RTNLGRP_LINK.rawValue)) }
        if rc >= 0 { rc = nl_socket_set_nonblocking(watchSocket) }
        if rc < 0 {
            nl_socket_free(watchSocket)
            throw NetlinkError(operation: operation, object: object, libnlCode: rc)
        }
        // Subscribed first, listed second: a link made in between is in the list (its event then
        // reads as a change), never missed.
        let known: Set<Int32>
        do {
            known = Set(try links().map(\.index))
        } catch {
            nl_socket_free(watchSocket)
            throw error
        }
        let (stream, continuation) = AsyncStream.makeStream(of: LinkChange.self, bufferingPolicy: .unbounded)
        let watcher = LinkWatcher(socket: watchSocket, known: known, continuation: continuation, logger: logger)
        continuation.onTermination = { _ in watcher.stop() }
        let suffix = namespace.map { String($0.prefix(11)) } ?? "own"
        let threadName = "nlw-\(suffix)"
        do {
            try watcher.start(threadName: threadName)
        } catch let error as SystemError {
            throw NetlinkError(operation: operation, object: "\(object) (thread \(threadName))", errno: error.code)
        }
        return stream
    }
}

/// Reads one subscribed socket on its own thread and turns messages into ``LinkChange``s.
///
/// `@unchecked Sendable`: `socket`, `known` and the parsing state are only touched by the reading
/// thread once ``start(threadName:)`` has run; the only cross-thread state is the atomic `stopping`.
private final class LinkWatcher: @unchecked Sendable {
    private let socket: OpaquePointer
    private var known: Set<Int32>
    private let continuation: AsyncStream<LinkChange>.Continuation
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)

    init(socket: OpaquePointer, known: Set<Int32>, continuation: AsyncStream<LinkChange>.Continuation, logger: Logger) {
        self.socket = socket
        self.known = known
        self.continuation = continuation
        self.logger = logger
    }

    /// Asks the thread to end; it notices at its next poll timeout.
    func stop() {
        stopping.store(true, ordering: .relaxed)
    }

    /// Starts the reading thread, which from then on owns the socket. If the thread cannot be
    /// started, the socket is freed and the stream finished here instead.
    func start(threadName: String) throws {
        do {
            try OSThread.spawn(name: threadName) { self.run() }
        } catch {
            nl_socket_free(socket)
            continuation.finish()
            throw error
        }
    }

    private func run() {
        // The thread holds `self` strongly for the whole loop, so an unretained pointer is enough.
        nl_socket_modify_cb(socket, NL_CB_VALID, NL_CB_CUSTOM, handleLinkMessage, Unmanaged.passUnretained(self).toOpaque())
        var descriptor = pollfd(fd: nl_socket_get_fd(socket), events: Int16(POLLIN), revents: 0)
        while !stopping.load(ordering: .relaxed) {
            let ready = poll(&descriptor, 1, 100)
            // Read before anything else can overwrite it (the logger, the metadata string).
            let code = errno
            if ready < 0 {
                if code == EINTR { continue }
                logger.error(
                    "link watch poll failed", metadata: ["error": "\(String(cString: strerror(code))) (errno \(code))"])
                break
            }
            if ready == 0 { continue }
            let rc = nl_recvmsgs_default(socket)
            if rc >= 0 || rc == -NLE_AGAIN { continue }
            if rc == -NLE_NOMEM {
                // ENOBUFS: the kernel dropped notifications because we fell behind.
                logger.warning("link events were lost (socket buffer overrun); callers should re-read links")
                continue
            }
            logger.error("link watch stopped", metadata: ["error": "\(String(cString: nl_geterror(rc)))"])
            break
        }
        nl_socket_free(socket)
        continuation.finish()
    }

    fileprivate func handle(_ message: OpaquePointer) {
        // AF_BRIDGE messages on this group describe bridge ports, not links coming and going.
        guard cnl_link_message_family(message) == AF_UNSPEC else { return }
        let type = cnl_message_type(message)
        var parsed: LinkInfo?
        let rc = withUnsafeMutablePointer(to: &parsed) { pointer in
            nl_msg_parse(message, storeParsedLink, pointer)
        }
        guard rc >= 0, let link = parsed else {
            logger.debug("unparsable link message", metadata: ["error": "\(String(cString: nl_geterror(rc)))"])
            return
        }
        if type == Int32(RTM_DELLINK) {
            known.remove(link.index)
            continuation.yield(.removed(name: link.name, index: link.index))
        } else if type == Int32(RTM_NEWLINK) {
            if known.insert(link.index).inserted {
                continuation.yield(.added(link))
            } else {
                continuation.yield(.changed(link))
            }
        }
    }
}

/// `NL_CB_VALID` callback of the watch socket; `argument` is the unretained ``LinkWatcher``.
private let handleLinkMessage: nl_recvmsg_msg_cb_t = { message, argument in
    if let message, let argument {
        Unmanaged<LinkWatcher>.fromOpaque(argument).takeUnretainedValue().handle(message)
    }
    return Int32(NL_OK.rawValue)
}

/// `nl_msg_parse` callback: stores the parsed `rtnl_link` as a ``LinkInfo`` into `argument`.
private let storeParsedLink: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { object, argument in
    guard let object, let argument else { return }
    argument.assumingMemoryBound(to: LinkInfo?.self).pointee = LinkInfo(link: object)
}
