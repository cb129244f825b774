import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Serves this node's blob data, and the console logs of its instances, to the other nodes of the
/// cluster, over the mesh.
///
/// It is HTTP/1.1, so `curl` can debug it, with two routes, each signed by ``PeerCredentials``:
/// - `GET /v1/blobs/<uuid>`: the blob's data, with `Range` (and `If-Range`) honoured so a transfer
///   that dropped resumes from where it stopped. The ETag names the blob and its size: a blob's data
///   never changes, so it is one strong validator whichever node serves it.
/// - `GET /v1/instances/<uuid>/console?length=N`: the last `N` bytes of the instance's console log.
///
/// Why NIO and not Hummingbird: the listening socket must be opened inside the namespace that holds
/// the mesh address (the tests give each node a namespace of its own), and a socket belongs to the
/// namespace of the thread that makes it. Hummingbird opens its socket on whichever thread runs it;
/// NIO's bootstrap also takes a socket made beforehand, on a thread in that namespace. Files go out
/// with `sendfile` (NIO's `FileRegion`), so the data is never copied through this process.
public final class PeerServer: Sendable {
    /// The `length` a console request may ask for at most (1 MiB, as the API's).
    public static let maximumConsoleLength = 1 << 20

    /// The port it listens on (the one asked for, or the kernel's choice for 0).
    public let port: Int
    private let channel: any Channel
    private let logger: Logger

    private init(port: Int, channel: any Channel, logger: Logger) {
        self.port = port
        self.channel = channel
        self.logger = logger
    }

    /// Starts serving on `address`:`port`, the socket made in network namespace `namespace` (nil: the
    /// process's own). At most `maximumConnections` are served at once; more are closed at once.
    public static func start(
        address: IPv4Address, port: Int, namespace: String?, credentials: PeerCredentials, blobs: BlobStore,
        instanceFiles: InstanceFiles, maximumConnections: Int = 64, logger: Logger
    ) async throws -> PeerServer {
        let thread = try await NamespaceExecutor.start(namespace: namespace)
        let socket = try await thread.executor.run { try Self.listeningSocket(address: address, port: port) }
        let open = Atomic<Int>(0)
        let routes = PeerRoutes(credentials: credentials, blobs: blobs, instanceFiles: instanceFiles, logger: logger)
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                // Connections from a member that misbehaves (or from anyone on the mesh) are bounded.
                guard open.wrappingAdd(1, ordering: .relaxed).newValue <= maximumConnections else {
                    open.wrappingSubtract(1, ordering: .relaxed)
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in open.wrappingSubtract(1, ordering: .relaxed) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: .seconds(60)))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(PeerRequestHandler(routes: routes))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.withBoundSocket(socket).get()
        } catch {
            close(socket)
            throw error
        }
        let bound = channel.localAddress?.port ?? port
        logger.info("serving blobs to the cluster", metadata: ["peer.address": "\(address):\(bound)", "peer.namespace": "\(namespace ?? "")"])
        return PeerServer(port: bound, channel: channel, logger: logger)
    }

    /// Stops listening; transfers under way are cut, and their pullers resume elsewhere or later.
    public func stop() async {
        try? await channel.close()
    }

    /// A TCP socket bound to `address`:`port` and listening, made on the calling thread (so in its namespace).
    static func listeningSocket(address: IPv4Address, port: Int) throws -> Int32 {
        guard (0...65535).contains(port) else { throw BlobError.invalidRange("peer port \(port) is not 0-65535") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw BlobError.io(SystemError.fromErrno("socket for the peer server").description) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var socketAddress = address.socketAddress(port: UInt16(port))
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if bound != 0 || listen(fd, 128) != 0 {
            let error = SystemError.fromErrno("listening on \(address):\(port) for the peer server")
            close(fd)
            throw BlobError.io(error.description)
        }
        return fd
    }
}

/// What the routes need: who may ask, and where the files are.
struct PeerRoutes: Sendable {
    let credentials: PeerCredentials
    let blobs: BlobStore
    let instanceFiles: InstanceFiles
    let logger: Logger

    /// A file to send: its descriptor (owned by the answer) and the byte range of it.
    struct FileAnswer {
        let fd: Int32
        let range: Range<Int64>
        let size: Int64
        let etag: String?
        let partial: Bool
    }

    enum Answer {
        case file(FileAnswer)
        case status(HTTPResponseStatus, String, [(String, String)])
    }

    /// The answer to one request, decided on the event loop: opening a file and reading its size
    /// take microseconds, and the data itself goes out through `sendfile`.
    func answer(_ head: HTTPRequestHead) -> Answer {
        guard [.GET, .HEAD, .DELETE].contains(head.method) else {
            return .status(.methodNotAllowed, "only GET, HEAD and DELETE\n", [("Allow", "GET, HEAD, DELETE")])
        }
        let headers = head.headers
        if let refusal = credentials.refusal(
            method: head.method == .HEAD ? "GET" : head.method.rawValue, path: head.uri, node: headers.first(name: PeerCredentials.nodeHeader),
            expires: headers.first(name: PeerCredentials.expiresHeader), signature: headers.first(name: PeerCredentials.signatureHeader))
        {
            logger.warning("refused a peer request", metadata: ["peer.path": "\(head.uri.prefix(200))", "peer.reason": "\(refusal)"])
            return .status(.forbidden, refusal + "\n", [])
        }
        let (path, query) = Self.split(head.uri)
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 4, parts[1] == "v1", parts[2] == "blobs", let uuid = UUID(uuidString: String(parts[3])), head.method != .DELETE {
            return blob(uuid, headers: headers)
        }
        if parts.count == 5, parts[1] == "v1", parts[2] == "instances", parts[4] == "console", let uuid = UUID(uuidString: String(parts[3])) {
            if head.method == .DELETE { return clearConsole(uuid) }
            let lengthText = query.first { $0.0 == "length" }?.1
            let length = lengthText.map { Int($0) } ?? PeerServer.maximumConsoleLength
            guard let length, (0...PeerServer.maximumConsoleLength).contains(length) else {
                return .status(.badRequest, "length must be 0 to \(PeerServer.maximumConsoleLength)\n", [])
            }
            return console(uuid, length: Int64(length))
        }
        logger.warning("refused a peer request for no known route", metadata: ["peer.path": "\(head.uri.prefix(200))"])
        return .status(.notFound, "no such route\n", [])
    }

    private func blob(_ uuid: UUID, headers: HTTPHeaders) -> Answer {
        let path = blobs.path(of: uuid)
        guard let (fd, size) = Self.open(path) else {
            // The records say this node holds it: they are stale, or the file went behind sfnode's back.
            logger.warning("another node asked for blob data this node does not have", metadata: ["blob.uuid": "\(uuid.lowercasedString)", "blob.path": "\(path)", "error": "\(SystemError.fromErrno("open"))"])
            return .status(.notFound, "blob \(uuid.lowercasedString) has no data on this node\n", [])
        }
        let etag = "\"sfblob-\(uuid.lowercasedString)-\(size)\""
        var range: Range<Int64> = 0..<size
        var partial = false
        if let asked = headers.first(name: "Range"), headers.first(name: "If-Range").map({ $0 == etag }) ?? true {
            guard let parsed = Self.byteRange(asked, size: size) else {
                close(fd)
                return .status(.rangeNotSatisfiable, "range \(asked.prefix(80)) is not within \(size) bytes\n", [("Content-Range", "bytes */\(size)")])
            }
            range = parsed
            partial = true
        }
        return .file(FileAnswer(fd: fd, range: range, size: size, etag: etag, partial: partial))
    }

    /// Empties the console log in place (virtlogd keeps appending to the same file); no log is
    /// left so.
    private func clearConsole(_ uuid: UUID) -> Answer {
        let path = instanceFiles.consoleLog(of: uuid)
        if truncate(path, 0) != 0 && errno != ENOENT {
            return .status(.internalServerError, "\(SystemError.fromErrno("truncate \(path)"))\n", [])
        }
        return .status(.ok, "", [])
    }

    private func console(_ uuid: UUID, length: Int64) -> Answer {
        guard let (fd, size) = Self.open(instanceFiles.consoleLog(of: uuid)) else {
            // No log yet reads as empty, as on the instance's own node.
            return .status(.ok, "", [])
        }
        return .file(FileAnswer(fd: fd, range: max(0, size - length)..<size, size: size, etag: nil, partial: false))
    }

    /// The regular file at `path`, open, with its size; nil when there is none.
    static func open(_ path: String) -> (Int32, Int64)? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return nil
        }
        return (fd, Int64(info.st_size))
    }

    /// A single `bytes=` range of a body of `size` bytes: `N-`, `N-M` or `-N`; nil when it is none
    /// of these or starts past the end.
    static func byteRange(_ text: String, size: Int64) -> Range<Int64>? {
        guard text.hasPrefix("bytes="), !text.contains(",") else { return nil }
        let bounds = text.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard bounds.count == 2 else { return nil }
        if bounds[0].isEmpty {
            guard let suffix = Int64(bounds[1]), suffix > 0 else { return nil }
            return max(0, size - suffix)..<size
        }
        guard let start = Int64(bounds[0]), start >= 0, start < size else { return nil }
        if bounds[1].isEmpty { return start..<size }
        guard let end = Int64(bounds[1]), end >= start else { return nil }
        return start..<min(end, size - 1) + 1
    }

    /// The path and the query's `name=value` pairs of a request target.
    static func split(_ uri: String) -> (String, [(String, String)]) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return (uri, []) }
        let pairs = parts[1].split(separator: "&").map { pair -> (String, String) in
            let halves = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(halves[0]), halves.count == 2 ? String(halves[1]) : "")
        }
        return (String(parts[0]), pairs)
    }
}

/// One connection's requests, answered one at a time and the connection closed after each: a peer
/// asks for one body per connection.
final class PeerRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let routes: PeerRoutes
    private var head: HTTPRequestHead?

    init(routes: PeerRoutes) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break  // a GET has none worth reading
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, to: head)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Idle for a minute: the asker is gone or stalled.
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    private func respond(context: ChannelHandlerContext, to request: HTTPRequestHead) {
        var headers = HTTPHeaders([("Connection", "close")])
        switch routes.answer(request) {
        case .status(let status, let text, let extra):
            headers.add(contentsOf: extra)
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            headers.add(name: "Content-Length", value: String(text.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
            if request.method != .HEAD, !text.isEmpty {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text)))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
        case .file(let file):
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: file.fd)
            headers.add(name: "Content-Type", value: "application/octet-stream")
            headers.add(name: "Accept-Ranges", value: "bytes")
            headers.add(name: "Content-Length", value: String(file.range.count))
            if let etag = file.etag { headers.add(name: "ETag", value: etag) }
            if file.partial {
                headers.add(name: "Content-Range", value: "bytes \(file.range.lowerBound)-\(file.range.upperBound - 1)/\(file.size)")
            }
            let status: HTTPResponseStatus = file.partial ? .partialContent : .ok
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
            if request.method != .HEAD, !file.range.isEmpty,
                let start = Int(exactly: file.range.lowerBound), let end = Int(exactly: file.range.upperBound)
            {
                context.write(wrapOutboundOut(.body(.fileRegion(FileRegion(fileHandle: handle, readerIndex: start, endIndex: end)))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in
                try? handle.close()
                channel.close(promise: nil)
            }
        }
    }
}
