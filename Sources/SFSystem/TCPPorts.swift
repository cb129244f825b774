#if canImport(Glibc)
import Glibc
#endif

/// TCP ports of this host.
public enum TCPPorts {
    /// Whether nothing listens on `port` at `address`: a socket bound there (with SO_REUSEADDR, as
    /// QEMU binds) is closed at once. Another process may take it the moment after; the store's
    /// reservation only keeps sfnode's own instances apart.
    public static func isFree(_ port: Int, on address: IPv4Address) -> Bool {
        guard (1...65535).contains(port) else { return false }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = in_port_t(UInt16(port).bigEndian)
        socketAddress.sin_addr = in_addr(s_addr: address.value.bigEndian)
        return withUnsafePointer(to: &socketAddress) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
