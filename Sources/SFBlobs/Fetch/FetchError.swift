/// Why an image fetch failed. Each message names the URL and what is wrong; ``isRetryable`` says
/// whether trying again later can help (a network blip, a 5xx) or not (a 404, a wrong checksum, a
/// refused destination, a limit).
///
/// Messages show URLs through ``redactedURL(_:)``: a URL's credentials and query string (a presigned
/// token, say) never reach events or logs. No message quotes a fetched body.
public enum FetchError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The text is not a URL sfnode can fetch.
    case invalidURL(url: String, reason: String)
    /// Only http and https are fetched.
    case unsupportedScheme(url: String, scheme: String)
    /// The host resolved to no address at all.
    case noAddress(url: String, host: String)
    /// The host name did not resolve; `transient` when the resolver said to try again (EAI_AGAIN).
    case resolutionFailed(url: String, host: String, message: String, transient: Bool)
    /// The destination rules forbid `address`, one of `host`'s; `rule` names the range and why.
    case refused(url: String, host: String, address: String, rule: String)
    /// The server answered 404.
    case notFound(url: String)
    /// Any other unexpected HTTP status; 5xx, 408 and 429 are retryable, other 4xx are not.
    case httpStatus(url: String, status: Int, reason: String)
    /// More redirects than the limit.
    case tooManyRedirects(url: String, limit: Int)
    /// A redirect without a usable Location header.
    case badRedirect(url: String, location: String?)
    /// The body's sha512 is not the one expected.
    case checksumMismatch(url: String, expected: String, actual: String)
    /// Fewer bytes arrived than Content-Length announced: the connection dropped mid-body.
    case shortBody(url: String, received: Int64, expected: Int64)
    /// The connection failed, was reset or timed out.
    case transport(url: String, message: String)
    /// A destination rule setting holds an entry that is not an IPv4 or IPv6 CIDR.
    case invalidRule(setting: String, entry: String)
    /// The body is larger than the image size limit: announced so by Content-Length (refused
    /// before any of it was read) or found so while streaming (`bytes` is then the limit reached).
    case tooLarge(url: String, bytes: Int64, limit: Int64, announced: Bool)
    /// The fetch, retries and body included, ran past its wall-clock deadline.
    case deadlineExceeded(url: String, seconds: Int64, received: Int64)
    /// Fewer than `minimumBytesPerSecond` arrived on average over the last `windowSeconds`.
    case tooSlow(url: String, received: Int64, windowSeconds: Int64, minimumBytesPerSecond: Int64)

    /// Whether trying the same fetch again later may succeed.
    public var isRetryable: Bool {
        switch self {
        case .transport, .shortBody: return true
        case .resolutionFailed(_, _, _, let transient): return transient
        case .httpStatus(_, let status, _): return status >= 500 || status == 408 || status == 429
        // A limit is not retried: the same server would be as large or as slow again, and each
        // retry would hold the job for as long again.
        case .invalidURL, .unsupportedScheme, .noAddress, .refused, .notFound, .tooManyRedirects,
            .badRedirect, .checksumMismatch, .invalidRule, .tooLarge, .deadlineExceeded, .tooSlow:
            return false
        }
    }

    /// The URL the error is about (nil for a bad rule setting).
    public var url: String? {
        switch self {
        case .invalidURL(let url, _), .unsupportedScheme(let url, _), .noAddress(let url, _),
            .resolutionFailed(let url, _, _, _), .refused(let url, _, _, _), .notFound(let url), .httpStatus(let url, _, _),
            .tooManyRedirects(let url, _), .badRedirect(let url, _), .checksumMismatch(let url, _, _),
            .shortBody(let url, _, _), .transport(let url, _), .tooLarge(let url, _, _, _), .deadlineExceeded(let url, _, _),
            .tooSlow(let url, _, _, _):
            return url
        case .invalidRule: return nil
        }
    }

    /// The message, naming the URL (redacted) and what to do.
    public var description: String {
        switch self {
        case .invalidURL(let url, let reason):
            return "cannot fetch '\(redactedURL(url))': \(reason)"
        case .unsupportedScheme(let url, let scheme):
            return "cannot fetch \(redactedURL(url)): scheme '\(scheme)' is not supported (only http and https)"
        case .noAddress(let url, let host):
            return "cannot fetch \(redactedURL(url)): host \(host) has no address"
        case .resolutionFailed(let url, let host, let message, let transient):
            return "cannot fetch \(redactedURL(url)): resolving \(host) failed: \(message)"
                + (transient ? " (temporary; will retry)" : "")
        case .refused(let url, let host, let address, let rule):
            return "refusing to fetch \(redactedURL(url)): host \(host) has the address \(address), in \(rule) "
                + "(SFNODE_FETCH_ALLOW and SFNODE_FETCH_DENY set which destinations are reachable)"
        case .notFound(let url):
            return "fetching \(redactedURL(url)) failed: the server answered 404 Not Found; check the image URL"
        case .httpStatus(let url, let status, let reason):
            return "fetching \(redactedURL(url)) failed: the server answered \(status) \(printable(reason))"
        case .tooManyRedirects(let url, let limit):
            return "fetching \(redactedURL(url)) failed: more than \(limit) redirects"
        case .badRedirect(let url, let location):
            return "fetching \(redactedURL(url)) failed: a redirect with "
                + (location.map { "an unusable Location '\(redactedURL(printable($0)))'" } ?? "no Location header")
        case .checksumMismatch(let url, let expected, let actual):
            return "fetching \(redactedURL(url)) failed: sha512 mismatch: expected \(expected), got \(actual); "
                + "the image changed or was corrupted in transit"
        case .shortBody(let url, let received, let expected):
            return "fetching \(redactedURL(url)) failed: the connection ended after \(received) of \(expected) bytes"
        case .transport(let url, let message):
            return "fetching \(redactedURL(url)) failed: \(message)"
        case .invalidRule(let setting, let entry):
            return "\(setting): '\(entry)' is not an IPv4 or IPv6 address or CIDR (a.b.c.d/n or x:y::/n)"
        case .tooLarge(let url, let bytes, let limit, let announced):
            let what = announced ? "the server announced \(bytes) bytes" : "the body reached \(bytes) bytes and was cut off"
            return "fetching \(redactedURL(url)) failed: \(what), above the image size limit of \(limit) bytes "
                + "(SFNODE_IMAGE_MAX_GIB)"
        case .deadlineExceeded(let url, let seconds, let received):
            return "fetching \(redactedURL(url)) failed: not finished within its deadline of \(seconds) s "
                + "(\(received) bytes received in the last attempt; SFNODE_FETCH_DEADLINE_SECONDS)"
        case .tooSlow(let url, let received, let window, let minimum):
            return "fetching \(redactedURL(url)) failed: only \(received) bytes arrived in the last \(window) s, below the "
                + "minimum rate of \(minimum) bytes/s (SFNODE_FETCH_MIN_RATE_KIB over SFNODE_FETCH_RATE_WINDOW_SECONDS)"
        }
    }
}

/// `url` without its credentials and query string, for messages and logs:
/// `https://user:secret@host/x.qcow2?token=abc` reads `https://***@host/x.qcow2?***`. A presigned
/// URL's token and basic-auth passwords are secrets of the tenant who gave them.
public func redactedURL(_ url: String) -> String {
    var text = Substring(url)
    var result = ""
    if let schemeEnd = text.range(of: "://") {
        result += text[..<schemeEnd.upperBound]
        text = text[schemeEnd.upperBound...]
    }
    let authorityEnd = text.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? text.endIndex
    let authority = text[..<authorityEnd]
    if let at = authority.lastIndex(of: "@") {
        result += "***" + authority[at...]
    } else {
        result += authority
    }
    let rest = text[authorityEnd...]
    if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
        result += rest[..<query] + (rest[query] == "?" ? "?***" : "")
    } else {
        result += rest
    }
    return result
}

/// `text` with control characters (terminal escapes included) shown as `?`: a server's reason
/// phrase or Location header ends up in events that a terminal prints.
func printable(_ text: String) -> String {
    String(String.UnicodeScalarView(text.unicodeScalars.prefix(200).map { $0.properties.generalCategory == .control ? "?" : $0 }))
}
