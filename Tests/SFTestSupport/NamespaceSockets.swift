import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// TCP from inside a test namespace, with plain sockets on a thread that has entered it: the
/// "outside" client that reaches a floating address, and the listener that sees where a guest's
/// connection comes from. No traffic ever leaves the namespaces the test made.
public enum NamespaceSockets {
    /// Fetches `http://host:port/path` from inside `namespace` and returns the response body.
    public static func httpGet(
        from namespace: String, host: IPv4Address, port: UInt16 = 80, path: String = "/", timeoutSeconds: Int = 5
    ) async throws -> String {
        let text = try await exchange(
            from: namespace, host: host, port: port, request: "GET \(path) HTTP/1.0\r\nHost: \(host)\r\nConnection: close\r\n\r\n",
            timeoutSeconds: timeoutSeconds)
        guard let split = text.range(of: "\r\n\r\n") else {
            throw TestSocketError.malformedResponse(text)
        }
        return String(text[split.upperBound...])
    }

    /// Sends `request` as it is (any bytes a hostile client might) to `host:port` from inside
    /// `namespace` and returns the whole response, status line and headers included.
    public static func exchange(
        from namespace: String, host: IPv4Address, port: UInt16, request: String, timeoutSeconds: Int = 5
    ) async throws -> String {
        let thread = try await NamespaceExecutor.start(namespace: namespace)
        return try await thread.executor.run {
            try exchangeHere(host: host, port: port, request: request, timeoutSeconds: timeoutSeconds)
        }
    }

    /// Fetches `http://127.0.0.1:port/path` from the test's own namespace (a server of the test, or
    /// the agent's loopback listener) and returns the status line and the body.
    public static func loopbackGet(port: Int, path: String) async throws -> (status: String, body: String) {
        let text = try await Task.detached {
            try exchangeHere(
                host: IPv4Address(0x7f00_0001), port: UInt16(port),
                request: "GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeoutSeconds: 10)
        }.value
        guard let split = text.range(of: "\r\n\r\n") else { throw TestSocketError.malformedResponse(text) }
        let head = text[..<split.lowerBound]
        return (String(head[..<(head.range(of: "\r\n")?.lowerBound ?? head.endIndex)]), String(text[split.upperBound...]))
    }

    /// ``exchange(from:host:port:request:timeoutSeconds:)`` from the calling thread's namespace.
    static func exchangeHere(host: IPv4Address, port: UInt16, request: String, timeoutSeconds: Int) throws -> String {
        let fd = try connectTCP(host: host, port: port, timeoutSeconds: timeoutSeconds)
        defer { close(fd) }
        let bytes = Array(request.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else {
            throw SystemError.fromErrno("send to \(host):\(port)")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 { throw SystemError.fromErrno("recv from \(host):\(port)") }
            if count == 0 { break }
            response.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: response, as: UTF8.self)
    }

    /// A TCP connection to `host:port` from the calling thread's namespace, every step bounded by
    /// `timeoutSeconds`.
    public static func connectTCP(host: IPv4Address, port: UInt16, timeoutSeconds: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.fromErrno("socket") }
        // Linux applies SO_SNDTIMEO to connect() too, so one option bounds every step.
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var remote = host.socketAddress(port: port)
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if connected != 0 {
            let error = SystemError.fromErrno("connect to \(host):\(port)")
            close(fd)
            throw error
        }
        return fd
    }
}

/// A TCP listener bound inside a test namespace: bound and listening as soon as ``open(in:address:port:)``
/// returns, so a test can make something connect to it without racing the bind.
public final class TestListener: Sendable {
    private let descriptor: Int32

    private init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    deinit {
        close(descriptor)
    }

    /// Binds `address:port` inside `namespace` and starts listening. The socket belongs to the
    /// namespace it was opened in, so accepting needs no particular thread.
    public static func open(in namespace: String, address: IPv4Address, port: UInt16) async throws -> TestListener {
        let thread = try await NamespaceExecutor.start(namespace: namespace)
        let fd = try await thread.executor.run { () throws -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { throw SystemError.fromErrno("socket") }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var local = address.socketAddress(port: port)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if bound != 0 || listen(fd, 4) != 0 {
                let error = SystemError.fromErrno("bind and listen on \(address):\(port)")
                close(fd)
                throw error
            }
            return fd
        }
        return TestListener(descriptor: fd)
    }

    /// Waits up to `timeoutSeconds` for one connection and returns where it came from and the first
    /// line it sent.
    public func acceptOne(timeoutSeconds: Int = 20) async throws -> (peer: IPv4Address, line: String) {
        let fd = descriptor
        let thread = try await ThreadExecutor.start(name: "test-accept")
        return try await thread.run {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(timeoutSeconds * 1000))
            if ready == 0 { throw TestSocketError.timedOut("no connection within \(timeoutSeconds) s") }
            if ready < 0 { throw SystemError.fromErrno("poll") }
            var peer = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let connection = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(fd, $0, &length) }
            }
            if connection < 0 { throw SystemError.fromErrno("accept") }
            defer { close(connection) }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 512)
            let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            let line = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
            return (IPv4Address(networkOrder: peer.sin_addr.s_addr), line.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}

/// A socket test that did not get the answer it waited for.
public enum TestSocketError: Error, CustomStringConvertible {
    case timedOut(String)
    case malformedResponse(String)

    public var description: String {
        switch self {
        case .timedOut(let message): return message
        case .malformedResponse(let text): return "not an HTTP response: \(text.prefix(200))"
        }
    }
}
