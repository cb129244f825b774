import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SFSystem
import Synchronization

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

/// Where an interrupted download picks up: the bytes already held, and the validator the server
/// sent with them (a strong ETag, else Last-Modified), which the server must still match.
public struct FetchResume: Sendable, Equatable {
    /// Bytes of the body already held.
    public let offset: Int64
    /// Sent back as `If-Range`.
    public let validator: String

    public init(offset: Int64, validator: String) {
        self.offset = offset
        self.validator = validator
    }
}

/// A `Content-Range: bytes START-END/TOTAL` header; nil for any other form (`*` totals included:
/// without a total a short body could not be told from a whole one).
struct ContentRange: Equatable {
    let start: Int64
    let end: Int64
    let total: Int64

    init(start: Int64, end: Int64, total: Int64) {
        self.start = start
        self.end = end
        self.total = total
    }

    init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("bytes ") else { return nil }
        let parts = trimmed.dropFirst(6).split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let total = Int64(parts[1]) else { return nil }
        let bounds = parts[0].split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard bounds.count == 2, let start = Int64(bounds[0]), let end = Int64(bounds[1]), start >= 0, start <= end, end < total else { return nil }
        self.start = start
        self.end = end
        self.total = total
    }
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
/// lookup happens that a hostile resolver could answer differently. Only hosts that are LDH names,
/// dotted quads or bracketed IPv6 literals are fetched, and Foundation's two URL parsers must agree
/// on them: AsyncHTTPClient keys the override on `URL.host`, so a host spelled in a way the parsers
/// read differently (percent-encoded, IDN) could otherwise slip past the pin and be resolved again.
/// `dnsOverride` is a client-wide setting, so each hop uses its own short-lived `HTTPClient` on
/// AsyncHTTPClient's shared event loop group (no threads are created per hop); image downloads are
/// few and long, so losing connection reuse costs nothing measurable. It also means the fetcher
/// owns nothing that needs shutting down.
///
/// Limits (a tenant names the server, so the server may be hostile): a wall-clock deadline over the
/// whole fetch, retries and body included (AsyncHTTPClient's own `timeout:` stops at the response
/// head); a minimum transfer rate averaged over a window, so a server dripping a byte now and then
/// cannot hold a job for the deadline's length; and a byte cap, checked against Content-Length
/// before the body is read and counted while it streams. A watcher task shuts the hop's client
/// down when the deadline or the rate is missed, which ends a read that is waiting on the server.
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
        /// Time allowed for the whole fetch, every attempt, redirect and body byte included
        /// (SFNODE_FETCH_DEADLINE_SECONDS; Shaken Fist's MAX_IMAGE_TRANSFER_SECONDS).
        public var deadline: Duration
        /// The least average rate over ``rateWindow``, in bytes per second; 0 turns the check off
        /// (SFNODE_FETCH_MIN_RATE_KIB).
        public var minimumBytesPerSecond: Int64
        /// The window the rate is averaged over, from the start of each attempt on
        /// (SFNODE_FETCH_RATE_WINDOW_SECONDS).
        public var rateWindow: Duration
        /// The largest body fetched, in bytes (SFNODE_IMAGE_MAX_GIB).
        public var maxBytes: Int64

        /// Defaults: rules ``DestinationRules/default``, 4 retries from 0.5 s, 5 redirects, 10 s to
        /// connect, 60 s idle, an hour in all, at least 16 KiB/s over 60 s, at most 64 GiB.
        public init(
            rules: DestinationRules = .default, retries: Int = 4, firstRetryDelay: Duration = .milliseconds(500),
            maxRedirects: Int = 5, connectTimeout: Duration = .seconds(10), readTimeout: Duration = .seconds(60),
            deadline: Duration = .seconds(3600), minimumBytesPerSecond: Int64 = 16 << 10, rateWindow: Duration = .seconds(60),
            maxBytes: Int64 = 64 << 30
        ) {
            self.rules = rules
            self.retries = retries
            self.firstRetryDelay = firstRetryDelay
            self.maxRedirects = maxRedirects
            self.connectTimeout = connectTimeout
            self.readTimeout = readTimeout
            self.deadline = deadline
            self.minimumBytesPerSecond = minimumBytesPerSecond
            self.rateWindow = rateWindow
            self.maxBytes = maxBytes
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
    /// retrying transient failures, within the deadline.
    public func head(_ url: String) async throws -> RemoteImage {
        try await watched(url) { watch in
            try await withRetries(url: url, watch: watch) { _ in
                let hop = try await open(url, method: .HEAD, watch: watch, from: nil)
                await hop.close(watch)
                let headers = hop.response.headers
                return RemoteImage(
                    url: url, finalURL: hop.url, contentLength: contentLength(headers),
                    lastModified: headers.first(name: "last-modified").flatMap(HTTPDate.parse))
            }
        }
    }

    // MARK: GET

    /// Downloads `url`, handing each chunk to `sink` as it arrives (the body is never held whole),
    /// hashing it with sha512 on the way and reporting `progress` at most every 1 % or 1 s.
    ///
    /// A transient failure (connection refused, reset or dropped mid-body, a timeout, a 5xx) is
    /// retried after 0.5 s, 1 s, 2 s ... up to ``Configuration/retries`` times. A retry after part of
    /// the body arrived asks for the rest only (`Range`, with `If-Range` carrying the validator the
    /// server sent: a strong ETag, else Last-Modified), so a drop costs what was lost, not the whole
    /// download. When the server sends the whole body instead (it changed, or it ignores ranges),
    /// `restart` runs first and the caller truncates what it wrote. An error thrown by `sink`,
    /// `restart` or `validated` (a full disk, say) ends the fetch at once, unchanged, without
    /// retries. A missed limit (deadline, rate, size) ends it too, with its own ``FetchError``.
    ///
    /// - Parameters:
    ///   - expectedSHA512: when given (hex, either case), a body with another hash fails with
    ///     ``FetchError/checksumMismatch(url:expected:actual:)``, which is not retried.
    ///   - hashing: false when the sink hashes the bytes itself (a ``BlobIngest`` does), so that each
    ///     byte is hashed once; an expected sha512 turns hashing on again.
    ///   - resuming: the bytes the sink already holds from an earlier, interrupted download of
    ///     `url` (by a process that died, say) and their validator: only the rest is asked for.
    ///     When this fetch hashes (it never saw those bytes), `restart` runs first and the whole
    ///     body is fetched.
    ///   - validated: told the validator of each response whose body the sink receives, before a
    ///     byte of it, so that a caller can record where a later process could resume.
    /// - Returns: the size, the sha512 and the headers of the successful attempt.
    public func fetch(
        _ url: String, expectedSHA512: String? = nil, hashing: Bool = true, resuming: FetchResume? = nil,
        progress: @Sendable (FetchProgress) -> Void = { _ in }, validated: (String?) throws -> Void = { _ in },
        restart: () throws -> Void, into sink: (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> FetchResult {
        let hashing = hashing || expectedSHA512 != nil
        // The sink holds `resuming.offset` bytes already. When this fetch hashes, it never saw them,
        // so it cannot resume: without a validator the first attempt starts over (restart runs).
        let held = max(resuming?.offset ?? 0, 0)
        var body = BodyState(held: held, validator: hashing ? nil : resuming?.validator)
        do {
            let result = try await fetchAttempts(
                url, body: &body, expectedSHA512: expectedSHA512, hashing: hashing, progress: progress, validated: validated,
                restart: restart, into: sink)
            BlobMetrics.fetched(result)
            return result
        } catch {
            BlobMetrics.fetchFailed(error)
            throw error
        }
    }

    /// ``fetch(_:expectedSHA512:hashing:resuming:progress:validated:restart:into:)``'s attempts.
    private func fetchAttempts(
        _ url: String, body: inout BodyState, expectedSHA512: String?, hashing: Bool, progress: @Sendable (FetchProgress) -> Void,
        validated: (String?) throws -> Void, restart: () throws -> Void, into sink: (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> FetchResult {
        try await watched(url) { watch in
            try await withRetries(url: url, watch: watch) { attempt in
                watch.beginAttempt()
                defer { watch.endAttempt() }
                if body.held > 0 && body.validator == nil { try body.startOver(restart) }
                var hop: Hop
                do {
                    hop = try await open(url, method: .GET, watch: watch, from: body.resumePoint)
                } catch FetchError.httpStatus(_, 416, _) where body.resumePoint != nil {
                    // The range is past what the server has now: the whole body again.
                    try body.startOver(restart)
                    hop = try await open(url, method: .GET, watch: watch, from: nil)
                }
                do {
                    let result = try await read(
                        hop, url: url, attempt: attempt, watch: watch, body: &body, expectedSHA512: expectedSHA512,
                        hashing: hashing, progress: progress, validated: validated, restart: restart, into: sink)
                    await hop.close(watch)
                    return result
                } catch {
                    await hop.close(watch)
                    throw error
                }
            }
        }
    }

    /// What the sink holds of the body across attempts, the hash of those bytes, and the
    /// validator that names the representation they came from.
    private struct BodyState {
        var held: Int64
        var validator: String?
        var hasher = SHA512()

        /// Where the next request may start: after what is held, while a validator vouches for it.
        var resumePoint: FetchResume? {
            guard held > 0, let validator else { return nil }
            return FetchResume(offset: held, validator: validator)
        }

        /// Drops what is held (the caller truncates in `restart`).
        mutating func startOver(_ restart: () throws -> Void) throws {
            do { try restart() } catch { throw CallerFailure(underlying: error) }
            held = 0
            validator = nil
            hasher = SHA512()
        }
    }

    /// Streams one response's body to `sink`, after what `body` holds when the server answered a
    /// range, hashing it, and checks its length and hash.
    private func read(
        _ hop: Hop, url: String, attempt: Int, watch: TransferWatch, body: inout BodyState, expectedSHA512: String?, hashing: Bool,
        progress: @Sendable (FetchProgress) -> Void, validated: (String?) throws -> Void, restart: () throws -> Void,
        into sink: (UnsafeRawBufferPointer) throws -> Void
    ) async throws -> FetchResult {
        let headers = hop.response.headers
        var total = contentLength(headers)
        if hop.response.status.code == 206 {
            guard let range = headers.first(name: "content-range").flatMap(ContentRange.init), range.start == body.held else {
                // Not the rest of what is held: start over on the next attempt.
                body.validator = nil
                throw FetchError.transport(
                    url: hop.url, message: "asked for bytes from \(body.held), the server sent \(headers.first(name: "content-range") ?? "no Content-Range")")
            }
            total = range.total
        } else if body.held > 0 {
            // The whole body after all (the image changed, or the server ignores ranges).
            try body.startOver(restart)
        }
        body.validator = Self.validator(headers)
        do { try validated(body.validator) } catch { throw CallerFailure(underlying: error) }
        let limit = configuration.maxBytes
        // Before a byte of the body is read: a server announcing too much is not believed to be
        // lying about it.
        if let total, total > limit {
            throw FetchError.tooLarge(url: hop.url, bytes: total, limit: limit, announced: true)
        }
        var reporter = ProgressReporter(total: total)
        do {
            for try await buffer in hop.response.body {
                let count = Int64(buffer.readableBytes)
                // Not one byte past the cap reaches the sink, whatever Content-Length said (or
                // whether it was sent at all).
                guard count <= limit - body.held else {
                    throw FetchError.tooLarge(url: hop.url, bytes: limit, limit: limit, announced: false)
                }
                try buffer.withUnsafeReadableBytes { bytes in
                    if hashing { body.hasher.update(bufferPointer: bytes) }
                    do { try sink(bytes) } catch { throw CallerFailure(underlying: error) }
                }
                body.held += count
                watch.received(count)
                if let report = reporter.next(body.held) { progress(report) }
            }
            // A read ended by the watcher may end like a normal end of body: the verdict decides.
            try watch.checkLimits()
            try Task.checkCancellation()
        } catch let failure as CallerFailure {
            throw failure
        } catch {
            throw transportError(error, url: url, watch: watch, during: "reading the body after \(body.held) bytes")
        }
        if let total, body.held < total {
            throw FetchError.shortBody(url: url, received: body.held, expected: total)
        }
        progress(FetchProgress(bytes: body.held, total: total))
        let digest = hashing ? BlobIngest.hex(body.hasher.finalize()) : nil
        if let expected = expectedSHA512, let digest, expected.lowercased() != digest {
            throw FetchError.checksumMismatch(url: url, expected: expected.lowercased(), actual: digest)
        }
        return FetchResult(
            url: url, finalURL: hop.url, size: body.held, sha512: digest,
            lastModified: headers.first(name: "last-modified").flatMap(HTTPDate.parse),
            contentLength: total, attempts: attempt)
    }

    /// What `If-Range` may carry for this response: a strong ETag (a weak one may not be used),
    /// else Last-Modified as sent; nil when the server sent neither, and a retry starts over.
    static func validator(_ headers: HTTPHeaders) -> String? {
        if let etag = headers.first(name: "etag"), !etag.hasPrefix("W/"), !etag.isEmpty { return etag }
        return headers.first(name: "last-modified")
    }

    /// Downloads `url` into the file `path`: written as `<path>.partial`, truncated before each
    /// retry, fsynced, then renamed, so `path` only ever holds a complete, verified body. A full
    /// disk fails with ``ImageError/diskFull(path:)``; any failure leaves no partial file.
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

    // MARK: Limits and retries

    /// Runs `work` with a watcher that enforces the deadline and the minimum rate; a missed limit
    /// is thrown as its own error, whatever error the interrupted work ended with.
    private func watched<T>(_ url: String, _ work: (TransferWatch) async throws -> T) async throws -> T {
        let watch = TransferWatch(url: url, configuration: configuration)
        let tick = min(Duration.seconds(1), configuration.rateWindow / 4)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    do { try await Task.sleep(for: tick) } catch { return }
                    if let client = watch.tick() {
                        // Shutting the client down fails whatever it is waiting for: the connect,
                        // the head or the next body chunk.
                        try? await client.shutdown()
                    }
                }
            }
            do {
                let result = try await work(watch)
                group.cancelAll()
                return result
            } catch {
                group.cancelAll()
                throw watch.verdict ?? error
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails permanently, or has failed transiently
    /// `configuration.retries + 1` times.
    private func withRetries<T>(
        url: String, watch: TransferWatch, _ attempt: (Int) async throws -> T
    ) async throws -> T {
        var delay = configuration.firstRetryDelay
        var number = 1
        while true {
            do {
                return try await attempt(number)
            } catch let failure as CallerFailure {
                throw failure.underlying
            } catch let error as FetchError where error.isRetryable && number <= configuration.retries {
                try watch.checkLimits()
                try Task.checkCancellation()
                logger.warning(
                    "fetch attempt failed; retrying",
                    metadata: [
                        "fetch.url": "\(redactedURL(url))", "fetch.attempt": "\(number)", "fetch.retry_in": "\(delay)",
                        "error": "\(error)",
                    ])
                // Never past the deadline: the watcher cannot interrupt this sleep.
                try await Task.sleep(for: min(delay, watch.remaining))
                try watch.checkLimits()
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
        func close(_ watch: TransferWatch) async {
            watch.detach(client)
            try? await client.shutdown()
        }
    }

    /// Sends `method` to `url`, following redirects (each hop's destination checked before it is
    /// connected to), and returns the final 2xx response. Non-2xx statuses become ``FetchError``s.
    /// With `from`, asks for the body from its offset on, if the representation is still the one
    /// its validator names.
    private func open(_ url: String, method: HTTPMethod, watch: TransferWatch, from resume: FetchResume?) async throws -> Hop {
        var current = url
        for _ in 0...configuration.maxRedirects {
            let target = try Target(current)
            let address = try await checkedAddress(of: target)
            try watch.checkLimits()
            let client = makeClient(target, to: address)
            guard watch.attach(client) else {
                try? await client.shutdown()
                try watch.checkLimits()
                throw CancellationError()
            }
            let response: HTTPClientResponse
            do {
                var request = HTTPClientRequest(url: current)
                request.method = method
                request.headers.add(name: "User-Agent", value: "sfnode")
                if let resume {
                    request.headers.add(name: "Range", value: "bytes=\(resume.offset)-")
                    request.headers.add(name: "If-Range", value: resume.validator)
                }
                response = try await client.execute(request, timeout: timeAmount(max(watch.remaining, .milliseconds(1))))
            } catch {
                watch.detach(client)
                try? await client.shutdown()
                throw transportError(error, url: current, watch: watch, during: "connecting to \(address)")
            }
            let hop = Hop(url: current, client: client, response: response)
            let status = Int(response.status.code)
            switch status {
            case 200..<300:
                return hop
            case 301, 302, 303, 307, 308:
                let location = response.headers.first(name: "location")
                await hop.close(watch)
                guard let location, let next = URL(string: location, relativeTo: URL(string: current))?.absoluteString
                else { throw FetchError.badRedirect(url: current, location: location) }
                logger.debug(
                    "following redirect", metadata: ["fetch.from": "\(redactedURL(current))", "fetch.to": "\(redactedURL(next))"])
                current = next
            case 404:
                await hop.close(watch)
                throw FetchError.notFound(url: current)
            default:
                await hop.close(watch)
                throw FetchError.httpStatus(url: current, status: status, reason: response.status.reasonPhrase)
            }
        }
        throw FetchError.tooManyRedirects(url: url, limit: configuration.maxRedirects)
    }

    /// A client whose connections to `target`'s host go to `address`, the address that was checked.
    private func makeClient(_ target: Target, to address: IPAddress) -> HTTPClient {
        var settings = HTTPClient.Configuration()
        settings.redirectConfiguration = .disallow
        settings.timeout = .init(connect: timeAmount(configuration.connectTimeout), read: timeAmount(configuration.readTimeout))
        // An address literal is connected to as written (and was checked as written).
        if target.literal == nil { settings.dnsOverride = [target.host: address.description] }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: settings)
    }

    /// Resolves `target`'s host and checks every address it has against the rules (any refused
    /// address refuses the URL: a host that also points at the metadata service is not trusted with
    /// its other addresses either). Returns the address to connect to: the first IPv4 one, else the
    /// first IPv6 one.
    private func checkedAddress(of target: Target) async throws -> IPAddress {
        let addresses: [IPAddress]
        if let literal = target.literal {
            addresses = [literal]
        } else {
            addresses = try await resolve(target)
        }
        for address in addresses { try configuration.rules.check(address, host: target.host, url: target.url) }
        let chosen = addresses.first(where: { if case .v4 = $0 { return true } else { return false } }) ?? addresses.first
        guard let chosen else { throw FetchError.noAddress(url: target.url, host: target.host) }
        return chosen
    }

    /// getaddrinfo on a Dispatch worker, never on the cooperative pool: it blocks for as long as the
    /// resolver takes.
    private func resolve(_ target: Target) async throws -> [IPAddress] {
        let host = target.host
        let url = target.url
        return try await runBlocking {
            switch lookup(host) {
            case .success(let addresses):
                return addresses
            case .failure(let code):
                throw FetchError.resolutionFailed(
                    url: url, host: host, message: String(cString: gai_strerror(code)), transient: code == EAI_AGAIN)
            }
        }
    }

    private func transportError(_ error: any Error, url: String, watch: TransferWatch, during step: String) -> any Error {
        if let verdict = watch.verdict { return verdict }
        if error is FetchError || error is CancellationError { return error }
        if Task.isCancelled { return CancellationError() }
        return FetchError.transport(url: url, message: "\(step): \(error)")
    }
}

/// The limits one fetch runs under, watched from a task of its own: the wall-clock deadline over
/// the whole fetch and the minimum average rate over a window within each attempt. When one is
/// missed, ``verdict`` records it and ``tick()`` hands back the client to shut down.
private final class TransferWatch: Sendable {
    private struct State {
        /// When the attempt in progress began; nil between attempts (and for a HEAD), when only
        /// the deadline applies.
        var attemptStart: ContinuousClock.Instant?
        var received: Int64 = 0
        /// (time, bytes received by then), one per tick, oldest first, reaching back one window.
        var samples: [(ContinuousClock.Instant, Int64)] = []
        var client: HTTPClient?
        var verdict: FetchError?
    }

    private let url: String
    private let deadline: ContinuousClock.Instant
    private let deadlineSeconds: Int64
    private let window: Duration
    private let minimumBytesPerSecond: Int64
    private let state = Mutex(State())

    init(url: String, configuration: HTTPFetcher.Configuration) {
        self.url = url
        deadline = ContinuousClock.now + configuration.deadline
        deadlineSeconds = configuration.deadline.components.seconds
        window = configuration.rateWindow
        minimumBytesPerSecond = configuration.minimumBytesPerSecond
    }

    /// The missed limit, if any.
    var verdict: FetchError? { state.withLock { $0.verdict } }

    /// Time left before the deadline (zero once it has passed).
    var remaining: Duration { max(.zero, deadline - ContinuousClock.now) }

    /// Throws the missed limit, if any; checks the deadline itself too, for the phases the
    /// watcher cannot interrupt (resolving, the pause before a retry).
    func checkLimits() throws {
        let now = ContinuousClock.now
        let verdict = state.withLock { state -> FetchError? in
            if state.verdict == nil && now >= deadline {
                state.verdict = .deadlineExceeded(url: url, seconds: deadlineSeconds, received: state.received)
            }
            return state.verdict
        }
        if let verdict { throw verdict }
    }

    func beginAttempt() {
        let now = ContinuousClock.now
        state.withLock { state in
            state.attemptStart = now
            state.received = 0
            state.samples = [(now, 0)]
        }
    }

    func endAttempt() {
        state.withLock { $0.attemptStart = nil }
    }

    func received(_ count: Int64) {
        state.withLock { $0.received += count }
    }

    /// Makes `client` the one to shut down when a limit is missed; false when one already was.
    func attach(_ client: HTTPClient) -> Bool {
        state.withLock { state in
            guard state.verdict == nil else { return false }
            state.client = client
            return true
        }
    }

    func detach(_ client: HTTPClient) {
        state.withLock { state in
            if state.client === client { state.client = nil }
        }
    }

    /// Checks the limits now; when one is newly missed, records it and returns the client to shut
    /// down (if one is attached).
    func tick() -> HTTPClient? {
        let now = ContinuousClock.now
        return state.withLock { state -> HTTPClient? in
            guard state.verdict == nil else { return nil }
            if now >= deadline {
                state.verdict = .deadlineExceeded(url: url, seconds: deadlineSeconds, received: state.received)
            } else if let start = state.attemptStart, minimumBytesPerSecond > 0 {
                state.samples.append((now, state.received))
                // The newest sample at least one window old is the baseline; older ones go.
                while state.samples.count > 1 && now - state.samples[1].0 >= window { state.samples.removeFirst() }
                if now - start >= window, let baseline = state.samples.first {
                    let then = baseline.1
                    let seconds = max(1, window.components.seconds)
                    let (wanted, overflow) = minimumBytesPerSecond.multipliedReportingOverflow(by: seconds)
                    if state.received - then < (overflow ? Int64.max : wanted) {
                        state.verdict = .tooSlow(
                            url: url, received: state.received - then, windowSeconds: seconds,
                            minimumBytesPerSecond: minimumBytesPerSecond)
                    }
                }
            }
            guard state.verdict != nil else { return nil }
            defer { state.client = nil }
            return state.client
        }
    }
}

/// An error from the caller's sink or restart closure, carried through the retry loop untouched.
private struct CallerFailure: Error {
    let underlying: any Error
}

/// A URL split into what the checks need.
private struct Target {
    let url: String
    /// The host as AsyncHTTPClient will see it (`URL.host`), without brackets.
    let host: String
    /// The address when the host is an address literal.
    let literal: IPAddress?

    init(_ url: String) throws {
        guard let parsed = URL(string: url) else {
            throw FetchError.invalidURL(url: url, reason: "it is not a valid URL")
        }
        guard let scheme = parsed.scheme?.lowercased() else {
            throw FetchError.invalidURL(url: url, reason: "it has no scheme (expected http:// or https://)")
        }
        guard scheme == "http" || scheme == "https" else {
            throw FetchError.unsupportedScheme(url: url, scheme: scheme)
        }
        // The host as written (URLComponents would run it through IDNA, which loads ICU's data for
        // every fetch; a host that is not plain ASCII is refused below anyway).
        guard let raw = authorityHost(of: url), !raw.isEmpty else {
            throw FetchError.invalidURL(url: url, reason: "it has no host")
        }
        let host: String
        if raw.hasPrefix("[") && raw.hasSuffix("]") {
            host = String(raw.dropFirst().dropLast())
            guard let address = IPv6Address(host) else {
                throw FetchError.invalidURL(url: url, reason: "its host \(printable(raw)) is not an IPv6 address")
            }
            literal = .v6(address)
        } else if let address = IPv4Address(raw) {
            host = raw
            literal = .v4(address)
        } else if let problem = hostNameProblem(raw) {
            throw FetchError.invalidURL(url: url, reason: "its host '\(printable(raw))' \(problem)")
        } else {
            host = raw
            literal = nil
        }
        // The name checked here must be the name AsyncHTTPClient connects to (it reads URL.host and
        // trims brackets), or the DNS pin keyed on it would not apply.
        var seen = parsed.host ?? ""
        if seen.hasPrefix("[") && seen.hasSuffix("]") { seen = String(seen.dropFirst().dropLast()) }
        guard seen == host else {
            throw FetchError.invalidURL(
                url: url, reason: "its host reads '\(printable(host))' or '\(printable(seen))' depending on the parser")
        }
        self.url = url
        self.host = host
    }
}

/// The host of `url`'s authority as written (an IPv6 literal keeps its brackets): after `//`,
/// without user information and port; nil when the URL has no authority.
func authorityHost(of url: String) -> String? {
    guard let start = url.range(of: "://") else { return nil }
    let rest = url[start.upperBound...]
    let authority = rest[..<(rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex)]
    let hostAndPort = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
    if hostAndPort.hasPrefix("[") {
        guard let close = hostAndPort.firstIndex(of: "]") else { return String(hostAndPort) }
        return String(hostAndPort[...close])
    }
    return String(hostAndPort[..<(hostAndPort.firstIndex(of: ":") ?? hostAndPort.endIndex)])
}

/// Why `name` is not a host name sfnode fetches from, or nil when it is one: letters, digits and
/// hyphens (LDH) in dot-separated labels of 1 to 63 bytes that neither start nor end with a
/// hyphen, at most 253 bytes, one trailing dot allowed. A name whose last label is all digits is an
/// address written some other way (`127.1`, `2130706433`, `0x7f.1`), which resolvers read as
/// numbers: it must be written as a dotted quad.
func hostNameProblem(_ name: String) -> String? {
    let bytes = Array(name.utf8)
    let body = bytes.last == UInt8(ascii: ".") ? Array(bytes.dropLast()) : bytes
    guard !body.isEmpty, body.count <= 253 else { return "is not 1 to 253 bytes long" }
    let labels = body.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
    for label in labels {
        guard (1...63).contains(label.count) else { return "has an empty label or one longer than 63 bytes" }
        guard label.allSatisfy({ isLetterOrDigit($0) || $0 == UInt8(ascii: "-") }) else {
            return "is not a host name (letters, digits, '-' and '.'), a dotted quad or a bracketed IPv6 address"
        }
        guard label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else {
            return "has a label that starts or ends with '-'"
        }
    }
    if let last = labels.last, last.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
        return "is a numeric address not written as a dotted quad (a.b.c.d)"
    }
    if let last = labels.last, last.count > 2, last.prefix(2).elementsEqual("0x".utf8) || last.prefix(2).elementsEqual("0X".utf8),
        last.dropFirst(2).allSatisfy({ isHexDigit($0) })
    {
        return "is a numeric address not written as a dotted quad (a.b.c.d)"
    }
    return nil
}

private func isLetterOrDigit(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
        || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
}

private func isHexDigit(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || ((byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "f"))
}

private enum Lookup: Sendable {
    case success([IPAddress])
    case failure(Int32)
}

/// getaddrinfo for both families; every distinct address, in the resolver's order.
private func lookup(_ host: String) -> Lookup {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, nil, &hints, &list)
    guard rc == 0 else { return .failure(rc) }
    defer { freeaddrinfo(list) }
    var addresses: [IPAddress] = []
    var entry = list
    while let info = entry {
        if let raw = info.pointee.ai_addr {
            var address: IPAddress?
            if info.pointee.ai_family == AF_INET {
                address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    .v4(IPv4Address(networkOrder: $0.pointee.sin_addr.s_addr))
                }
            } else if info.pointee.ai_family == AF_INET6 {
                address = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { .v6(IPv6Address($0.pointee.sin6_addr)) }
            }
            if let address, !addresses.contains(address) { addresses.append(address) }
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

/// Content-Length when sent as a plain non-negative number; anything else counts as not sent
/// (the byte cap still applies while streaming).
private func contentLength(_ headers: HTTPHeaders) -> Int64? {
    headers.first(name: "content-length").flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }.flatMap { $0 >= 0 ? $0 : nil }
}

/// NIO's spelling of `duration`, saturating rather than trapping on a duration beyond Int64
/// nanoseconds (292 years).
private func timeAmount(_ duration: Duration) -> TimeAmount {
    let (seconds, attoseconds) = duration.components
    let (nanoseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return .nanoseconds(seconds < 0 ? .min : .max) }
    let (sum, overflowSum) = nanoseconds.addingReportingOverflow(attoseconds / 1_000_000_000)
    return .nanoseconds(overflowSum ? .max : sum)
}
