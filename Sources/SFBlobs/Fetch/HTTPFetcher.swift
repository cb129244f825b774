import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// How far a download has got.
public struct FetchProgress: Sendable, Equatable {
    /// Bytes received so far in this attempt.
    public let bytes: Int64
    /// The Content-Length, when the server sent one.
    public let total: Int64?
    /// 0...100 when the total is known.
    public var percent: Double? {
        guard let total, total > 0 else { return nil }
        return min(100, Double(bytes) * 100 / Double(total))
    }
}

/// What a HEAD request says about an image, to decide whether it must be fetched again (Shaken Fist
/// fetches again when Last-Modified or Content-Length change).
public struct RemoteImage: Sendable, Equatable {
    /// The URL asked for.
    public let url: String
    /// The URL that answered, after redirects.
    public let finalURL: String
    /// Content-Length, when sent.
    public let contentLength: Int64?
    /// Last-Modified, parsed, when sent and readable.
    public let lastModified: Date?
}

/// A finished download.
public struct FetchResult: Sendable, Equatable {
    /// The URL asked for.
    public let url: String
    /// The URL that answered, after redirects.
    public let finalURL: String
    /// Bytes received (and handed to the sink) in the successful attempt.
    public let size: Int64
    /// Lower-case hex sha512 of those bytes; nil when the fetch was asked not to hash (its sink
    /// hashes them already, and sha512 on one core is what bounds a download).
    public let sha512: String?
    /// Last-Modified, when sent and readable.
    public let lastModified: Date?
    /// Content-Length, when sent.
    public let contentLength: Int64?
    /// How many attempts it took (1 when nothing was retried).
    public let attempts: Int
}

/// Downloads images over http and https, checking every destination against ``DestinationRules``
/// before connecting, following redirects itself (so every hop is checked), streaming the body to a
/// sink while hashing it with sha512, and retrying transient failures with exponential backoff.
///
/// DNS rebinding: the host is resolved here (getaddrinfo, off the cooperative pool), every address
/// is checked, and the connection is then pinned to the checked address with AsyncHTTPClient's
/// `dnsOverride` (host → checked IP). The request still carries the original Host header, and TLS
/// still sends the original name as SNI and verifies the certificate against it, but no second DNS
/// lookup happens that a hostile resolver could answer differently. `dnsOverride` is a client-wide
/// setting, so each hop uses its own short-lived `HTTPClient` on AsyncHTTPClient's shared event
/// loop group (no threads are created per hop); image downloads are few and long, so losing
/// connection reuse costs nothing measurable. It also means the fetcher owns nothing that needs
/// shutting down.
public struct HTTPFetcher: Sendable {
    /// Limits and timings of a fetcher.
    public struct Configuration: Sendable {
        /// Which destinations may be reached.
        public var rules: DestinationRules
        /// How many times a transient failure is retried (so at most `retries + 1` attempts).
        public var retries: Int
        /// The first retry delay; each further retry waits twice as long (0.5 s, 1, 2, 4 ...).
        public var firstRetryDelay: Duration
        /// Redirects followed at most.
        public var maxRedirects: Int
        /// Time allowed to establish a connection.
        public var connectTimeout: Duration
        /// Time allowed without receiving anything.
        public var readTimeout: Duration
        /// Time allowed for one whole attempt, body included (Shaken Fist's MAX_IMAGE_TRANSFER_SECONDS).
        public var attemptLimit: Duration

        /// Defaults: rules ``DestinationRules/default``, 4 retries from 0.5 s, 5 redirects, 10 s to
        /// connect, 60 s idle, 1800 s per attempt.
        public init(
            rules: DestinationRules = .default, retries: Int = 4, firstRetryDelay: Duration = .milliseconds(500),
            maxRedirects: Int = 5, connectTimeout: Duration = .seconds(10), readTimeout: Duration = .seconds(60),
            attemptLimit: Duration = .seconds(1800)
        ) {
            self.rules = rules
            self.retries = retries
            self.firstRetryDelay = firstRetryDelay
            self.maxRedirects = maxRedirects
            self.connectTimeout = connectTimeout
            self.readTimeout = readTimeout
            self.attemptLimit = attemptLimit
        }
    }

    /// The limits and rules in force.
    public let configuration: Configuration
    private let logger: Logger

    /// A fetcher with these rules and limits, logging to `logger`.
    public init(configuration: Configuration = Configuration(), logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: HEAD

    /// Asks the server about `url` without downloading it, following (and checking) redirects and
    /// retrying transient failures.
    public func head(_ url: String) async throws -> RemoteImage {
        try await withRetries(url: url, restart: {}) { _ in
            let hop = try await open(url, method: .HEAD)
            await hop.close()
            let headers = hop.response.headers
            return RemoteImage(
                url: url, finalURL: hop.url, contentLength: contentLength(headers),
                lastModified: headers.first(name: "last-modified").flatMap(parseHTTPDate))
        }
    }

    // MARK: GET

    /// Downloads `url`, handing each chunk to `sink` as it arrives (the body is never held whole),
    /// hashing it with sha512 on the way and reporting `progress` at most every 1 % or 1 s.
    ///
    /// A transient failure (connection refused, reset or dropped mid-body, a timeout, a 5xx) is
    /// retried after 0.5 s, 1 s, 2 s ... up to ``Configuration/retries`` times. Since `sink` has
    /// already received part of the body by then, `restart` is called before each retry: the caller
    /// truncates whatever it wrote. An error thrown by `sink` or `restart` (a full disk, say) ends
    /// the fetch at once, unchanged, without retries.
    ///
    /// - Parameters:
    ///   - expectedSHA512: when given (hex, either case), a body with another hash fails with
    ///     ``FetchError/checksumMismatch(url:expected:actual:)``, which is not retried.
    ///   - hashing: false when the sink hashes the bytes itself (a ``BlobIngest`` does), so that each
    ///     byte is hashed once; an expected sha512 turns hashing on again.
    /// - Returns: the size, the sha512 and the headers of the successful attempt.
    public func fetch(
        _ url: String, expectedSHA512: String? = nil, hashing: Bool = true, progress: @Sendable (FetchProgress) -> Void = { _ in },
        restart: () throws -> Void, into sink: (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> FetchResult {
        try await withRetries(url: url, restart: restart) { attempt in
            let hop = try await open(url, method: .GET)
            do {
                let result = try await read(
                    hop, url: url, attempt: attempt, expectedSHA512: expectedSHA512, hashing: hashing || expectedSHA512 != nil,
                    progress: progress, into: sink)
                await hop.close()
                return result
            } catch {
                await hop.close()
                throw error
            }
        }
    }

    /// Streams one response's body to `sink`, hashing it, and checks its length and hash.
    private func read(
        _ hop: Hop, url: String, attempt: Int, expectedSHA512: String?, hashing: Bool, progress: @Sendable (FetchProgress) -> Void,
        into sink: (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> FetchResult {
            let headers = hop.response.headers
            let total = contentLength(headers)
            var hasher = SHA512()
            var received: Int64 = 0
            var reporter = ProgressReporter(total: total)
            do {
                for try await buffer in hop.response.body {
                    try buffer.withUnsafeReadableBytes { bytes in
                        if hashing { hasher.update(bufferPointer: bytes) }
                        do { try sink(bytes) } catch { throw CallerFailure(underlying: error) }
                    }
                    received += Int64(buffer.readableBytes)
                    if let report = reporter.next(received) { progress(report) }
                }
            } catch let failure as CallerFailure {
                throw failure
            } catch {
                throw transportError(error, url: url, during: "reading the body after \(received) bytes")
            }
            if let total, received < total {
                throw FetchError.shortBody(url: url, received: received, expected: total)
            }
            progress(FetchProgress(bytes: received, total: total))
            let digest = hashing ? hasher.finalize().map { String(format: "%02x", $0) }.joined() : nil
            if let expected = expectedSHA512, let digest, expected.lowercased() != digest {
                throw FetchError.checksumMismatch(url: url, expected: expected.lowercased(), actual: digest)
            }
            return FetchResult(
                url: url, finalURL: hop.url, size: received, sha512: digest,
                lastModified: headers.first(name: "last-modified").flatMap(parseHTTPDate),
                contentLength: total, attempts: attempt)
    }

    /// Downloads `url` into the file `path`: written as `<path>.partial`, truncated before each
    /// retry, fsynced, then renamed, so `path` only ever holds a complete, verified body. A full
    /// disk fails with ``ImageError/diskFull(path:)``.
    public func fetch(
        _ url: String, toFile path: String, expectedSHA512: String? = nil,
        progress: @Sendable (FetchProgress) -> Void = { _ in }
    ) async throws -> FetchResult {
        let partial = path + ".partial"
        let file = try OutputFile(creating: partial)
        do {
            let result = try await fetch(
                url, expectedSHA512: expectedSHA512, progress: progress, restart: { try file.truncate() },
                into: { try file.write($0) })
            try file.sync()
            file.close()
            try renameFile(partial, to: path)
            return result
        } catch {
            file.close()
            unlink(partial)
            throw error
        }
    }

    // MARK: Retries

    /// Runs `attempt` until it succeeds, fails permanently, or has failed transiently
    /// `configuration.retries + 1` times; `restart` runs before each retry.
    private func withRetries<T>(
        url: String, restart: () throws -> Void, _ attempt: (Int) async throws -> T
    ) async throws -> T {
        var delay = configuration.firstRetryDelay
        var number = 1
        while true {
            do {
                return try await attempt(number)
            } catch let failure as CallerFailure {
                throw failure.underlying
            } catch let error as FetchError where error.isRetryable && number <= configuration.retries {
                try Task.checkCancellation()
                logger.warning(
                    "fetch attempt failed; retrying",
                    metadata: [
                        "url": "\(url)", "attempt": "\(number)", "retry_in": "\(delay)", "error": "\(error)",
                    ])
                try await Task.sleep(for: delay)
                try restart()
                delay *= 2
                number += 1
            }
        }
    }

    // MARK: One hop after another

    /// An open response, with the client that must be shut down once it has been read.
    private struct Hop {
        let url: String
        let client: HTTPClient
        let response: HTTPClientResponse

        /// Shuts the hop's client down once its body was read or abandoned; shutting down cancels
        /// anything still in flight and closes the connection.
        func close() async {
            try? await client.shutdown()
        }
    }

    /// Sends `method` to `url`, following redirects (each hop's destination checked before it is
    /// connected to), and returns the final 2xx response. Non-2xx statuses become ``FetchError``s.
    private func open(_ url: String, method: HTTPMethod) async throws -> Hop {
        var current = url
        for _ in 0...configuration.maxRedirects {
            let target = try Target(current)
            let address = try await checkedAddress(of: target)
            let client = makeClient(pinning: target.host, to: address)
            let response: HTTPClientResponse
            do {
                var request = HTTPClientRequest(url: current)
                request.method = method
                request.headers.add(name: "User-Agent", value: "sfnode")
                response = try await client.execute(request, timeout: timeAmount(configuration.attemptLimit))
            } catch {
                try? await client.shutdown()
                throw transportError(error, url: current, during: "connecting to \(address)")
            }
            let hop = Hop(url: current, client: client, response: response)
            let status = Int(response.status.code)
            switch status {
            case 200..<300:
                return hop
            case 301, 302, 303, 307, 308:
                let location = response.headers.first(name: "location")
                await hop.close()
                guard let location, let next = URL(string: location, relativeTo: URL(string: current))?.absoluteString
                else { throw FetchError.badRedirect(url: current, location: location) }
                logger.debug("following redirect", metadata: ["from": "\(current)", "to": "\(next)"])
                current = next
            case 404:
                await hop.close()
                throw FetchError.notFound(url: current)
            default:
                await hop.close()
                throw FetchError.httpStatus(url: current, status: status, reason: response.status.reasonPhrase)
            }
        }
        throw FetchError.tooManyRedirects(url: url, limit: configuration.maxRedirects)
    }

    /// A client whose connections to `host` go to `address`, the address that was checked.
    private func makeClient(pinning host: String, to address: IPv4Address) -> HTTPClient {
        var settings = HTTPClient.Configuration()
        settings.redirectConfiguration = .disallow
        settings.timeout = .init(connect: timeAmount(configuration.connectTimeout), read: timeAmount(configuration.readTimeout))
        if host != address.description { settings.dnsOverride = [host: address.description] }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: settings)
    }

    /// Resolves `target`'s host and checks every address it has against the rules (any refused
    /// address refuses the URL: a host that also points at the metadata service is not trusted with
    /// its other addresses either). Returns the address to connect to.
    private func checkedAddress(of target: Target) async throws -> IPv4Address {
        let addresses: [IPv4Address]
        if let literal = IPv4Address(target.host) {
            addresses = [literal]
        } else if target.host.contains(":") {
            throw FetchError.unsupportedAddressFamily(url: target.url, host: target.host)
        } else {
            addresses = try await resolveIPv4(target)
        }
        for address in addresses { try configuration.rules.check(address, url: target.url) }
        guard let first = addresses.first else {
            throw FetchError.unsupportedAddressFamily(url: target.url, host: target.host)
        }
        return first
    }

    /// getaddrinfo on a Dispatch worker, never on the cooperative pool: it blocks for as long as the
    /// resolver takes.
    private func resolveIPv4(_ target: Target) async throws -> [IPv4Address] {
        let host = target.host
        let url = target.url
        return try await runBlocking {
            switch lookup(host, family: AF_INET) {
            case .success(let addresses):
                return addresses
            case .failure(let code):
                // A name with only IPv6 addresses gets the message that says why it is refused.
                if code != EAI_AGAIN, case .success = lookup(host, family: AF_INET6) {
                    throw FetchError.unsupportedAddressFamily(url: url, host: host)
                }
                throw FetchError.resolutionFailed(
                    url: url, host: host, message: String(cString: gai_strerror(code)), transient: code == EAI_AGAIN)
            }
        }
    }

    private func transportError(_ error: any Error, url: String, during step: String) -> any Error {
        if error is FetchError || error is CancellationError { return error }
        if Task.isCancelled { return CancellationError() }
        return FetchError.transport(url: url, message: "\(step): \(error)")
    }
}

/// An error from the caller's sink or restart closure, carried through the retry loop untouched.
private struct CallerFailure: Error {
    let underlying: any Error
}

/// A URL split into what the checks need.
private struct Target {
    let url: String
    let host: String

    init(_ url: String) throws {
        guard let components = URLComponents(string: url) else {
            throw FetchError.invalidURL(url: url, reason: "it is not a valid URL")
        }
        guard let scheme = components.scheme?.lowercased() else {
            throw FetchError.invalidURL(url: url, reason: "it has no scheme (expected http:// or https://)")
        }
        guard scheme == "http" || scheme == "https" else {
            throw FetchError.unsupportedScheme(url: url, scheme: scheme)
        }
        guard var host = components.host, !host.isEmpty else {
            throw FetchError.invalidURL(url: url, reason: "it has no host")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.url = url
        self.host = host
    }
}

private enum Lookup: Sendable {
    case success([IPv4Address])
    case failure(Int32)
}

/// getaddrinfo for `family`; IPv4 addresses only (an AF_INET6 success carries none, it only says
/// the name exists).
private func lookup(_ host: String, family: Int32) -> Lookup {
    var hints = addrinfo()
    hints.ai_family = family
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, nil, &hints, &list)
    guard rc == 0 else { return .failure(rc) }
    defer { freeaddrinfo(list) }
    var addresses: [IPv4Address] = []
    var entry = list
    while let info = entry {
        if info.pointee.ai_family == AF_INET, let raw = info.pointee.ai_addr {
            let address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                IPv4Address(networkOrder: $0.pointee.sin_addr.s_addr)
            }
            if !addresses.contains(address) { addresses.append(address) }
        }
        entry = info.pointee.ai_next
    }
    return .success(addresses)
}

/// Reports progress when it has moved by 1 % of the total or 1 s has passed.
private struct ProgressReporter {
    let total: Int64?
    var lastBytes: Int64 = 0
    var lastTime = ContinuousClock.now

    init(total: Int64?) { self.total = total }

    mutating func next(_ bytes: Int64) -> FetchProgress? {
        let now = ContinuousClock.now
        let step = total.map { max(1, $0 / 100) } ?? Int64.max
        guard bytes - lastBytes >= step || now - lastTime >= .seconds(1) else { return nil }
        lastBytes = bytes
        lastTime = now
        return FetchProgress(bytes: bytes, total: total)
    }
}

private func contentLength(_ headers: HTTPHeaders) -> Int64? {
    headers.first(name: "content-length").flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
}

/// Parses an HTTP-date (RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
func parseHTTPDate(_ text: String) -> Date? {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
    return formatter.date(from: text)
}

private func timeAmount(_ duration: Duration) -> TimeAmount {
    let (seconds, attoseconds) = duration.components
    return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
}
