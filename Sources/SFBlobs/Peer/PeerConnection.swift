import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// Why a request to another node failed.
public enum PeerError: Error, CustomStringConvertible, Sendable {
    /// The node answered `status`, saying `message`.
    case status(node: String, status: Int, message: String)
    /// The node could not be reached, stopped answering, or answered what is not HTTP.
    case transport(node: String, message: String)

    public var description: String {
        switch self {
        case .status(let node, let status, let message):
            return "node \(node) answered \(status): \(message.isEmpty ? "(no reason given)" : message)"
        case .transport(let node, let message): return "node \(node): \(message)"
        }
    }

    /// Whether asking again (the same node or another) may succeed.
    public var isTransient: Bool {
        if case .status(_, let status, _) = self { return status >= 500 || status == 416 }
        return true
    }
}

/// The head of a peer's response: status and headers (names lower-cased).
struct PeerResponseHead {
    let status: Int
    let headers: [String: String]

    var contentLength: Int64? { headers["content-length"].flatMap { Int64($0) }.flatMap { $0 >= 0 ? $0 : nil } }
}

/// One HTTP/1.1 exchange with another node's ``PeerServer``, over a TCP socket opened by a thread
/// inside the network namespace holding the mesh (a socket belongs to the namespace of the thread
/// that makes it; AsyncHTTPClient makes its sockets on threads it chooses, which in a test put
/// them in the machine's own namespace). Once made, the socket is used from any thread; every read
/// and write blocks, so callers run them off the cooperative pool.
///
/// Every wait is bounded: connecting and each write by `SO_SNDTIMEO`, each read by `SO_RCVTIMEO`;
/// the response head may be at most ``maximumHeadBytes``.
final class PeerConnection: @unchecked Sendable {
    static let maximumHeadBytes = 16 << 10

    let node: String
    private let fd: Int32
    /// Bytes read past the head: the body's first bytes.
    private var pending: [UInt8] = []

    private init(node: String, fd: Int32) {
        self.node = node
        self.fd = fd
    }

    deinit { close(fd) }

    /// Connects to `peer`:`port` from `thread`'s namespace, waiting at most `timeout` for the
    /// connection and for each read or write after.
    static func open(to peer: Peer, port: Int, from thread: NamespaceExecutor, timeout: Duration) async throws -> PeerConnection {
        let seconds = max(1, Int(timeout.components.seconds))
        let fd = try await thread.executor.run { () throws -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { throw PeerError.transport(node: peer.name, message: SystemError.fromErrno("socket").description) }
            // Linux applies SO_SNDTIMEO to connect() too, so one option bounds every step.
            var limit = timeval(tv_sec: seconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            var address = peer.address.socketAddress(port: UInt16(clamping: port))
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if connected != 0 {
                let error = SystemError.fromErrno("connecting to \(peer.address):\(port)")
                close(fd)
                throw PeerError.transport(node: peer.name, message: error.description)
            }
            return fd
        }
        return PeerConnection(node: peer.name, fd: fd)
    }

    /// Sends `method target` with `headers`, and reads the response's head. Blocks.
    func send(_ method: String, _ target: String, headers: [(String, String)]) throws -> PeerResponseHead {
        let lines = headers.map { "\($0): \($1)\r\n" }.joined()
        let request = Array("\(method) \(target) HTTP/1.1\r\nHost: peer\r\nUser-Agent: sfnode\r\nConnection: close\r\n\(lines)\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let count = request.withUnsafeBytes { bytes -> Int in
                guard let base = bytes.baseAddress else { return 0 }
                return Glibc.send(fd, base + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("sending the request")
            }
            sent += count
        }
        return try readHead()
    }

    private func readHead() throws -> PeerResponseHead {
        var buffer: [UInt8] = []
        let terminator: [UInt8] = [13, 10, 13, 10]
        while true {
            if let end = Self.find(terminator, in: buffer) {
                pending = Array(buffer[(end + 4)...])
                return try parseHead(String(decoding: buffer[..<end], as: UTF8.self))
            }
            guard buffer.count < Self.maximumHeadBytes else {
                throw PeerError.transport(node: node, message: "the response head is longer than \(Self.maximumHeadBytes) bytes")
            }
            let chunk = try receive(max: Self.maximumHeadBytes - buffer.count)
            if chunk.isEmpty { throw PeerError.transport(node: node, message: "the connection closed before the response head ended") }
            buffer += chunk
        }
    }

    private func parseHead(_ text: String) throws -> PeerResponseHead {
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100...599).contains(status) else {
            throw PeerError.transport(node: node, message: "not an HTTP response: \(statusLine.prefix(80))")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return PeerResponseHead(status: status, headers: headers)
    }

    /// Reads exactly `count` body bytes into `sink`, a chunk at a time. Blocks; `deadline` bounds the whole.
    func readBody(_ count: Int64, deadline: ContinuousClock.Instant, into sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var remaining = count
        if !pending.isEmpty {
            let take = Int(min(Int64(pending.count), remaining))
            try pending[..<take].withUnsafeBytes { try sink($0) }
            remaining -= Int64(take)
            pending.removeAll()
        }
        while remaining > 0 {
            guard ContinuousClock.now < deadline else { throw PeerError.transport(node: node, message: "the transfer ran past its deadline") }
            let chunk = try receive(max: Int(min(remaining, 1 << 20)))
            if chunk.isEmpty { throw PeerError.transport(node: node, message: "the connection closed with \(remaining) bytes of the body still to come") }
            try chunk.withUnsafeBytes { try sink($0) }
            remaining -= Int64(chunk.count)
        }
    }

    /// The body of an answer that is not data (an error's reason), at most 1 KiB of it.
    func reason(_ head: PeerResponseHead) -> String {
        let wanted = min(head.contentLength ?? 0, 1024)
        var text: [UInt8] = []
        try? readBody(wanted, deadline: .now + .seconds(5)) { text += $0 }
        return String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func receive(max count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if received < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw PeerError.transport(node: node, message: "no answer within the read timeout") }
                throw failure("reading the response")
            }
            return Array(buffer[..<received])
        }
    }

    private func failure(_ step: String) -> PeerError {
        PeerError.transport(node: node, message: SystemError.fromErrno(step).description)
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start..<(start + needle.count)].elementsEqual(needle) {
            return start
        }
        return nil
    }
}
