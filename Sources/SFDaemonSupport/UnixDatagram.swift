#if canImport(Glibc)
import Glibc
#endif
import SFSystem

/// An `AF_UNIX` socket address: a file system path, or a name in the abstract namespace.
///
/// systemd hands both forms around in environment variables (`NOTIFY_SOCKET=@/org/...` is abstract),
/// so the spelling with a leading `@` is accepted here exactly as `sd_notify` accepts it.
struct UnixSocketAddress: Sendable, Equatable, CustomStringConvertible {
    /// The bytes of `sun_path` that matter: the path (without its terminating NUL), or for an abstract
    /// address a NUL followed by the name.
    let pathBytes: [UInt8]

    /// The longest `sun_path` the kernel takes (108 bytes, the terminating NUL of a path included).
    static let pathCapacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)

    /// Parses `text`: an absolute path, or `@name` for the abstract namespace.
    init(_ text: String) throws {
        var bytes = Array(text.utf8)
        if bytes.first == UInt8(ascii: "@") {
            guard bytes.count > 1 else { throw SystemError("socket address '\(text)': empty abstract name", code: EINVAL) }
            bytes[0] = 0
            guard bytes.count <= Self.pathCapacity else {
                throw SystemError("socket address '\(text)': longer than \(Self.pathCapacity - 1) bytes", code: ENAMETOOLONG)
            }
        } else {
            guard bytes.first == UInt8(ascii: "/") else {
                throw SystemError("socket address '\(text)': neither an absolute path nor '@abstract'", code: EINVAL)
            }
            guard !bytes.contains(0) else { throw SystemError("socket address '\(text)': contains NUL", code: EINVAL) }
            // One byte is kept for the NUL that terminates a path.
            guard bytes.count < Self.pathCapacity else {
                throw SystemError("socket address '\(text)': longer than \(Self.pathCapacity - 1) bytes", code: ENAMETOOLONG)
            }
        }
        pathBytes = bytes
    }

    /// Whether this is an abstract-namespace address.
    var isAbstract: Bool { pathBytes.first == 0 }

    /// The `@name` or path spelling.
    var description: String {
        isAbstract ? "@" + String(decoding: pathBytes.dropFirst(), as: UTF8.self) : String(decoding: pathBytes, as: UTF8.self)
    }

    /// Calls `body` with a `sockaddr` for this address and its exact length. An abstract name's length
    /// counts no trailing NUL: the kernel would make the NUL part of the name.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (index, byte) in pathBytes.enumerated() { path[index] = byte }
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path) ?? 2
        let length = pathOffset + pathBytes.count + (isAbstract ? 0 : 1)
        return try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(length)) }
        }
    }
}

/// An unbound, unconnected `AF_UNIX` datagram socket that sends to explicit addresses.
///
/// Sending a datagram is one atomic `sendmsg`, so one descriptor may be shared by every thread.
final class UnixDatagramSender: Sendable {
    /// The socket descriptor, close-on-exec so children (dnsmasq, qemu) do not inherit it.
    let descriptor: Int32

    init() throws {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.fromErrno("socket(AF_UNIX, SOCK_DGRAM)") }
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Sends `payload` as one datagram to `address`, retrying when a signal interrupts the call.
    /// Throws the errno of a failed send; `EMSGSIZE` means the datagram is larger than the socket allows.
    func send(_ payload: [UInt8], to address: UnixSocketAddress) throws {
        try sendMessage(payload, passing: nil, to: address)
    }

    /// Sends an empty datagram that carries `fd` as `SCM_RIGHTS`: how journald takes entries too large
    /// for one datagram.
    func send(descriptor fd: Int32, to address: UnixSocketAddress) throws {
        try sendMessage([], passing: fd, to: address)
    }

    private func sendMessage(_ payload: [UInt8], passing fd: Int32?, to address: UnixSocketAddress) throws {
        let control = ControlMessage(rights: fd)
        defer { control.deallocate() }
        var payload = payload
        try payload.withUnsafeMutableBytes { bytes in
            var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
            try address.withSockaddr { socketAddress, length in
                try withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_name = UnsafeMutableRawPointer(mutating: socketAddress)
                    message.msg_namelen = length
                    // An empty datagram needs no vector at all (libsystemd sends the descriptor the same way).
                    message.msg_iov = bytes.isEmpty ? nil : vectorPointer
                    message.msg_iovlen = bytes.isEmpty ? 0 : 1
                    message.msg_control = control.buffer
                    message.msg_controllen = control.length
                    while sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL)) < 0 {
                        if errno != EINTR { throw SystemError.fromErrno("sendmsg \(address)") }
                    }
                }
            }
        }
    }
}

/// The ancillary data of a `sendmsg` that passes one descriptor, laid out as the `CMSG_*` macros
/// (which Swift does not import) would lay it out.
struct ControlMessage {
    let buffer: UnsafeMutableRawPointer?
    let length: Int

    /// `CMSG_ALIGN`: control data is aligned to `size_t`.
    static func align(_ size: Int) -> Int {
        let alignment = MemoryLayout<Int>.size
        return (size + alignment - 1) & ~(alignment - 1)
    }

    /// `CMSG_SPACE(sizeof(int))`: the room one descriptor needs.
    static let rightsSpace = align(MemoryLayout<cmsghdr>.size) + align(MemoryLayout<Int32>.size)

    init(rights fd: Int32?) {
        guard let fd else {
            buffer = nil
            length = 0
            return
        }
        let space = Self.rightsSpace
        let raw = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: MemoryLayout<cmsghdr>.alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: space)
        let header = raw.bindMemory(to: cmsghdr.self, capacity: 1)
        header.pointee.cmsg_len = Self.align(MemoryLayout<cmsghdr>.size) + MemoryLayout<Int32>.size
        header.pointee.cmsg_level = SOL_SOCKET
        header.pointee.cmsg_type = Int32(SCM_RIGHTS)
        (raw + Self.align(MemoryLayout<cmsghdr>.size)).storeBytes(of: fd, as: Int32.self)
        buffer = raw
        length = space
    }

    func deallocate() { buffer?.deallocate() }
}
