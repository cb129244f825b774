import Dispatch
import Foundation
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A tiny HTTP/1.1 server on 127.0.0.1 and an ephemeral port, for image-fetch tests: it serves
/// registered paths from memory or from files (streamed, so a multi-GiB file costs no memory), with
/// per-path misbehaviour (dropped connections, wrong bytes, error statuses, redirects, a slow link),
/// and counts requests per path and method and the body bytes sent per path.
///
/// Blocking sockets on dedicated threads, one per connection, every response `Connection: close`:
/// simple enough to trust, and it needs no NIO. It only ever listens on loopback (the network safety
/// rule: test traffic never leaves the machine). ``stop()`` closes the listener and waits for every
/// connection thread to finish.
public final class LoopbackHTTPServer: Sendable {
    /// How a path answers.
    public enum Behaviour: Sendable, Equatable {
        /// 200 with Content-Length and Last-Modified.
        case normal
        /// For the first `times` GET requests: the headers (full Content-Length), `bytes` bytes of the
        /// body, then the connection is closed. Later requests are served normally.
        case dropAfter(bytes: Int, times: Int)
        /// The right length, but the first byte of the body is flipped.
        case wrongBytes
        /// This status with a short text body.
        case status(Int)
        /// 302 to `location` (absolute or relative).
        case redirect(to: String)
        /// 200 as `normal`, but the body trickles out at about `bytesPerSecond`: a download that
        /// lasts long enough for a test to act in the middle of it (kill the client, say).
        case throttled(bytesPerSecond: Int)
        /// 200 with the full Content-Length, then the body one byte every `interval`: a server
        /// that keeps a connection alive while sending almost nothing (slow-drip).
        case drip(every: Duration)
        /// 200 announcing `length` in Content-Length (whatever the body's real size), then the body.
        case claimsLength(Int64)
        /// 200 with no Content-Length, then zeros for as long as the client reads (a lying server).
        case endless
    }

    /// Where a path's body comes from.
    public enum Body: Sendable {
        case data(Data)
        case file(String)
    }

    private struct Route: Sendable {
        var body: Body
        var behaviour: Behaviour
        var lastModified: String
        /// Sent as ETag, and what If-Range must match for a range to be served.
        var etag: String?
        /// Whether `Range: bytes=N-` is answered with 206 (when If-Range, if sent, still matches).
        var ranges: Bool
    }

    private struct State: Sendable {
        var routes: [String: Route] = [:]
        /// The offsets of the ranges asked for (served or not), by path.
        var rangesAsked: [String: [Int64]] = [:]
        var counts: [String: Int] = [:]  // "METHOD path" and "path"
        var bytesSent: [String: Int64] = [:]  // body bytes, by path
        var stopping = false
    }

    /// `http://127.0.0.1:<port>`.
    public let baseURL: String
    /// The port it listens on.
    public let port: UInt16
    private let listener: Int32
    private let state = Mutex(State())
    private let connections = DispatchGroup()
    private let acceptorDone = DispatchSemaphore(value: 0)

    /// Starts listening on 127.0.0.1 and an ephemeral port.
    public init() throws {
        let (fd, port) = try bindLoopbackListener()
        listener = fd
        self.port = port
        baseURL = "http://127.0.0.1:\(port)"
        try OSThread.spawn(name: "sft-http-accept") { [self] in acceptLoop() }
    }

    /// Serves `body` at `path` (such as `/image.qcow2`) with `behaviour`.
    public func register(
        _ path: String, body: Body, behaviour: Behaviour = .normal,
        lastModified: String = "Wed, 21 Oct 2015 07:28:00 GMT", etag: String? = nil, ranges: Bool = false
    ) {
        state.withLock {
            $0.routes[path] = Route(body: body, behaviour: behaviour, lastModified: lastModified, etag: etag, ranges: ranges)
        }
    }

    /// The offsets of the `Range: bytes=N-` requests received for `path`, in order.
    public func rangesAsked(_ path: String) -> [Int64] {
        state.withLock { $0.rangesAsked[path] ?? [] }
    }

    /// Serves `data` at `path`.
    public func register(_ path: String, data: Data, behaviour: Behaviour = .normal) {
        register(path, body: .data(data), behaviour: behaviour)
    }

    /// Serves the file at `filePath` at `path`, streamed from disk.
    public func register(_ path: String, file filePath: String, behaviour: Behaviour = .normal) {
        register(path, body: .file(filePath), behaviour: behaviour)
    }

    /// Requests received for `path`, all methods, or only `method` (`GET`, `HEAD`).
    public func requestCount(_ path: String, method: String? = nil) -> Int {
        state.withLock { $0.counts[method.map { "\($0) \(path)" } ?? path] ?? 0 }
    }

    /// Body bytes sent so far for `path`, over all its requests (what reached the socket, not
    /// necessarily the client).
    public func bytesSent(_ path: String) -> Int64 {
        state.withLock { $0.bytesSent[path] ?? 0 }
    }

    /// The full URL of `path`.
    public func url(_ path: String) -> String { baseURL + path }

    /// Stops listening and waits (up to 10 s) for the connection threads to end. Idempotent.
    public func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        guard first else { return }
        acceptorDone.wait()
        close(listener)
        _ = connections.wait(timeout: .now() + 10)
    }

    deinit { stop() }

    private func acceptLoop() {
        defer { acceptorDone.signal() }
        while !state.withLock({ $0.stopping }) {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            let client = accept(listener, nil, nil)
            if client < 0 { continue }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            connections.enter()
            do {
                try OSThread.spawn(name: "sft-http-conn") { [self] in
                    serve(client)
                    close(client)
                    connections.leave()
                }
            } catch {
                close(client)
                connections.leave()
            }
        }
    }

    private func serve(_ client: Int32) {
        guard let (method, path, headers) = readRequestHead(client) else { return }
        let rangeStart = headers["range"].flatMap { value -> Int64? in
            guard value.hasPrefix("bytes="), value.hasSuffix("-") else { return nil }
            return Int64(value.dropFirst(6).dropLast())
        }
        let route = state.withLock { state -> (Route, Int)? in
            state.counts[path, default: 0] += 1
            state.counts["\(method) \(path)", default: 0] += 1
            if let rangeStart { state.rangesAsked[path, default: []].append(rangeStart) }
            guard let route = state.routes[path] else { return nil }
            return (route, state.counts["GET \(path)"] ?? 0)
        }
        guard let (route, getCount) = route else {
            respond(client, status: 404, reason: "Not Found", body: "no such path\n")
            return
        }
        switch route.behaviour {
        case .status(let code):
            respond(client, status: code, reason: code == 404 ? "Not Found" : "Error", body: "status \(code)\n")
            return
        case .redirect(let location):
            respond(client, status: 302, reason: "Found", body: "", extra: ["Location: \(location)"])
            return
        default:
            break
        }
        guard var length = bodyLength(route.body) else {
            respond(client, status: 500, reason: "Internal Server Error", body: "cannot read the file\n")
            return
        }
        if case .claimsLength(let claimed) = route.behaviour { length = claimed }
        // A range only while the representation is the one the client has part of (If-Range).
        var offset: Int64 = 0
        if route.ranges, let rangeStart, rangeStart < length,
            headers["if-range"].map({ $0 == route.etag || $0 == route.lastModified }) ?? true
        {
            offset = rangeStart
        }
        let status = offset > 0 ? "206 Partial Content" : "200 OK"
        var lengthHeader = route.behaviour == .endless ? "" : "Content-Length: \(length - offset)\r\n"
        if offset > 0 { lengthHeader += "Content-Range: bytes \(offset)-\(length - 1)/\(length)\r\n" }
        if let etag = route.etag { lengthHeader += "ETag: \(etag)\r\n" }
        if route.ranges { lengthHeader += "Accept-Ranges: bytes\r\n" }
        let head =
            "HTTP/1.1 \(status)\r\n\(lengthHeader)Last-Modified: \(route.lastModified)\r\n"
            + "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        guard send(client, Array(head.utf8)), method != "HEAD" else { return }
        switch route.behaviour {
        case .endless:
            streamZeros(path: path, to: client)
            return
        case .drip(let interval):
            drip(route.body, path: path, to: client, every: interval)
            return
        default:
            break
        }
        var limit = Int64.max
        if case .dropAfter(let bytes, let times) = route.behaviour, getCount <= times { limit = Int64(bytes) }
        var rate: Int?
        if case .throttled(let bytesPerSecond) = route.behaviour { rate = max(1, bytesPerSecond) }
        streamBody(
            route.body, path: path, to: client, from: offset, limit: limit, corruptFirstByte: route.behaviour == .wrongBytes,
            bytesPerSecond: rate)
        if limit != Int64.max { shutdown(client, Int32(SHUT_RDWR)) }
    }

    private func bodyLength(_ body: Body) -> Int64? {
        switch body {
        case .data(let data): return Int64(data.count)
        case .file(let path):
            var info = stat()
            return stat(path, &info) == 0 ? Int64(info.st_size) : nil
        }
    }

    private func streamBody(
        _ body: Body, path: String, to client: Int32, from start: Int64, limit: Int64, corruptFirstByte: Bool, bytesPerSecond: Int?
    ) {
        var sent: Int64 = 0
        var first = corruptFirstByte
        let started = ContinuousClock.now
        func emitNow(_ chunk: [UInt8]) -> Bool {
            var chunk = Array(chunk.prefix(Int(min(Int64(chunk.count), limit - sent))))
            if first, !chunk.isEmpty {
                chunk[0] ^= 0xff
                first = false
            }
            sent += Int64(chunk.count)
            guard send(client, chunk) else { return false }
            state.withLock { $0.bytesSent[path, default: 0] += Int64(chunk.count) }
            return sent < limit
        }
        func emit(_ chunk: [UInt8]) -> Bool {
            guard let bytesPerSecond else { return emitNow(chunk) }
            // Pieces of a twentieth of a second's worth, each sent once the schedule allows it.
            let piece = max(1, bytesPerSecond / 20)
            var offset = 0
            while offset < chunk.count {
                // A slow body must not hold up stop().
                if state.withLock({ $0.stopping }) { return false }
                let due = started + .milliseconds(sent * 1000 / Int64(bytesPerSecond))
                let wait = due - ContinuousClock.now
                if wait > .zero { Thread.sleep(forTimeInterval: Double(wait.components.attoseconds) / 1e18 + Double(wait.components.seconds)) }
                let end = min(chunk.count, offset + piece)
                if !emitNow(Array(chunk[offset..<end])) { return false }
                offset = end
            }
            return true
        }
        switch body {
        case .data(let data):
            var offset = Int(start)
            while offset < data.count {
                let end = min(data.count, offset + (1 << 20))
                if !emit([UInt8](data[data.startIndex + offset..<data.startIndex + end])) { return }
                offset = end
            }
        case .file(let path):
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return }
            defer { close(fd) }
            guard lseek(fd, off_t(start), SEEK_SET) == off_t(start) else { return }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count <= 0 { return }
                if !emit(Array(buffer[0..<count])) { return }
            }
        }
    }

    /// Zeros, 64 KiB at a time, until the client goes away or the server stops.
    private func streamZeros(path: String, to client: Int32) {
        let zeros = [UInt8](repeating: 0, count: 65536)
        while !state.withLock({ $0.stopping }) {
            guard send(client, zeros) else { return }
            state.withLock { $0.bytesSent[path, default: 0] += Int64(zeros.count) }
        }
    }

    /// The body one byte at a time, `interval` apart, until it ends, the client goes away or the
    /// server stops.
    private func drip(_ body: Body, path: String, to client: Int32, every interval: Duration) {
        guard case .data(let data) = body else { return }
        for byte in data {
            // Short sleeps, so stop() is not held up by a long interval.
            let due = ContinuousClock.now + interval
            while ContinuousClock.now < due {
                if state.withLock({ $0.stopping }) { return }
                usleep(20_000)
            }
            guard send(client, [byte]) else { return }
            state.withLock { $0.bytesSent[path, default: 0] += 1 }
        }
    }

    private func respond(_ client: Int32, status: Int, reason: String, body: String, extra: [String] = []) {
        let bytes = Array(body.utf8)
        var head = "HTTP/1.1 \(status) \(reason)\r\nContent-Length: \(bytes.count)\r\nConnection: close\r\n"
        for line in extra { head += line + "\r\n" }
        head += "\r\n"
        _ = send(client, Array(head.utf8) + bytes)
    }

    /// Reads up to the blank line; returns the method, the path (query removed) and the headers
    /// (names in lower case).
    private func readRequestHead(_ client: Int32) -> (String, String, [String: String])? {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let end = Array("\r\n\r\n".utf8)
        while received.count < 65536 {
            let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return nil }
            received += buffer[0..<count]
            if received.count >= 4, (0...(received.count - 4)).contains(where: { Array(received[$0..<$0 + 4]) == end }) {
                break
            }
        }
        let text = String(decoding: received, as: UTF8.self)
        guard let line = text.split(separator: "\r\n").first else { return nil }
        let words = line.split(separator: " ")
        guard words.count >= 2 else { return nil }
        let path = words[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? String(words[1])
        var headers: [String: String] = [:]
        for field in text.split(separator: "\r\n").dropFirst() {
            guard let colon = field.firstIndex(of: ":") else { continue }
            headers[field[..<colon].lowercased()] = field[field.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (String(words[0]), path, headers)
    }

    /// Sends all of `bytes`; false when the peer is gone. MSG_NOSIGNAL: a client that hung up must
    /// cost an error here, not a SIGPIPE to the test process.
    private func send(_ client: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeBytes {
                Glibc.send(client, $0.baseAddress.map { $0 + offset }, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if count < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += count
        }
        return true
    }
}

/// A TCP socket listening on 127.0.0.1 at an ephemeral port, and that port.
func bindLoopbackListener() throws -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if fd < 0 { throw SystemError.fromErrno("socket") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = IPv4Address.loopback.socketAddress(port: 0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(fd, 64) == 0 else {
        let error = SystemError.fromErrno("bind/listen 127.0.0.1")
        close(fd)
        throw error
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

/// A loopback port free a moment ago, for a server a test starts (`sfnode serve`'s API).
public func freeLoopbackPort() throws -> Int {
    let (fd, port) = try bindLoopbackListener()
    close(fd)
    return Int(port)
}

/// Whether something accepts TCP connections at `url`'s loopback port (`http://127.0.0.1:PORT`).
public func isListening(_ url: String) -> Bool {
    guard let port = url.split(separator: ":").last.flatMap({ UInt16($0) }) else { return false }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = IPv4Address.loopback.socketAddress(port: port)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

extension IPv4Address {
    /// 127.0.0.1.
    static let loopback = IPv4Address(0x7f00_0001)
}
