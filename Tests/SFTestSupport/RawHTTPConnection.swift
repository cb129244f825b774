import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// A blocking HTTP/1.1 client on one loopback TCP connection, for what the test client cannot do:
/// send half a request, or stream chunks from its own thread.
public final class RawHTTPConnection: Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`.
    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError.fromErrno("socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw SystemError.fromErrno("connect 127.0.0.1:\(port)")
        }
    }

    deinit { close(fd) }

    /// Sends all of `bytes`.
    public func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer in
            if let code = writeAll(fd, buffer) { throw SystemError("write", code: code) }
        }
    }

    /// Whether the server closes the connection within `seconds` (read returns end of file).
    public func waitForClose(seconds: Int) -> Bool {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n == 0 { return true }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    /// Reads what the server sends, as it comes (chunked framing and all), until it holds `marker`
    /// or `seconds` pass; answers what was read since the last call. A stream (a followed object's
    /// events) is read this way, a piece at a time.
    public func readStream(until marker: String, seconds: Int) throws -> String {
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let deadline = ContinuousClock.now + .seconds(seconds)
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline {
            if String(decoding: data, as: UTF8.self).contains(marker) { break }
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n > 0 { data += buffer[..<n] } else if n == 0 { break }
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Hangs up.
    public func hangUp() {
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Reads one response and returns its status and body.
    public func response() throws -> (status: Int, body: String) {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var headerEnd: Int?
        var length = 0
        while true {
            if headerEnd == nil, let end = data.firstRange(of: Array("\r\n\r\n".utf8))?.upperBound {
                headerEnd = end
                let head = String(decoding: data[..<end], as: UTF8.self).lowercased()
                if let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }) {
                    length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
            if let headerEnd, data.count >= headerEnd + length {
                let status = Int(String(decoding: data.prefix(12).dropFirst(9), as: UTF8.self)) ?? 0
                return (status, String(decoding: data[headerEnd..<(headerEnd + length)], as: UTF8.self))
            }
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw SystemError("read: the server closed the connection", code: n == 0 ? 0 : errno) }
            data += buffer[..<n]
        }
    }

    /// Sends one request (a JSON body when given) and reads its response, keeping the connection.
    public func request(_ method: String, _ path: String, token: String? = nil, json: String? = nil) throws -> (status: Int, body: String) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: x\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        let body = Array((json ?? "").utf8)
        if json != nil { head += "Content-Type: application/json\r\n" }
        head += "Content-Length: \(body.count)\r\n\r\n"
        try send(Array(head.utf8) + body)
        return try response()
    }

    /// Sends `chunks` chunks of 4 MiB to the upload on one keep-alive connection and returns the
    /// size the server reports at the end.
    public static func upload(port: Int, token: String, uuid: String, chunks: Int) throws -> Int64 {
        try RawHTTPConnection(port: port).upload(token: token, uuid: uuid, chunks: chunks)
    }

    /// ``upload(port:token:uuid:chunks:)`` on this connection.
    public func upload(token: String, uuid: String, chunks: Int) throws -> Int64 {
        let connection = self
        let chunk = [UInt8](repeating: 0x5a, count: 4 << 20)
        var received: Int64 = 0
        for _ in 0..<chunks {
            let head = "POST /upload/\(uuid) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nContent-Length: \(chunk.count)\r\n\r\n"
            try connection.send(Array(head.utf8) + chunk)
            let (status, body) = try connection.response()
            guard status == 200, let size = Int64(body.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw SystemError("upload chunk answered \(status): \(body)", code: 0)
            }
            received = size
        }
        return received
    }
}
