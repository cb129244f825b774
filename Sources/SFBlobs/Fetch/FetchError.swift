/// Why an image fetch failed. Each message names the URL and what is wrong; ``isRetryable`` says
/// whether trying again later can help (a network blip, a 5xx) or not (a 404, a wrong checksum, a
/// refused destination).
public enum FetchError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The text is not a URL sfnode can fetch.
    case invalidURL(url: String, reason: String)
    /// Only http and https are fetched.
    case unsupportedScheme(url: String, scheme: String)
    /// The host is (or resolves only to) IPv6, which the IPv4-only destination rules cannot check.
    case unsupportedAddressFamily(url: String, host: String)
    /// The host name did not resolve; `transient` when the resolver said to try again (EAI_AGAIN).
    case resolutionFailed(url: String, host: String, message: String, transient: Bool)
    /// The destination rules forbid this address; `rule` names the rule (`deny 169.254.0.0/16`).
    case refused(url: String, address: String, rule: String)
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
    /// A destination rule setting holds an entry that is not an IPv4 CIDR.
    case invalidRule(setting: String, entry: String)

    /// Whether trying the same fetch again later may succeed.
    public var isRetryable: Bool {
        switch self {
        case .transport, .shortBody: return true
        case .resolutionFailed(_, _, _, let transient): return transient
        case .httpStatus(_, let status, _): return status >= 500 || status == 408 || status == 429
        case .invalidURL, .unsupportedScheme, .unsupportedAddressFamily, .refused, .notFound, .tooManyRedirects,
            .badRedirect, .checksumMismatch, .invalidRule:
            return false
        }
    }

    /// The URL the error is about (nil for a bad rule setting).
    public var url: String? {
        switch self {
        case .invalidURL(let url, _), .unsupportedScheme(let url, _), .unsupportedAddressFamily(let url, _),
            .resolutionFailed(let url, _, _, _), .refused(let url, _, _), .notFound(let url), .httpStatus(let url, _, _),
            .tooManyRedirects(let url, _), .badRedirect(let url, _), .checksumMismatch(let url, _, _),
            .shortBody(let url, _, _), .transport(let url, _):
            return url
        case .invalidRule: return nil
        }
    }

    /// The message, naming the URL and what to do.
    public var description: String {
        switch self {
        case .invalidURL(let url, let reason):
            return "cannot fetch '\(url)': \(reason)"
        case .unsupportedScheme(let url, let scheme):
            return "cannot fetch \(url): scheme '\(scheme)' is not supported (only http and https)"
        case .unsupportedAddressFamily(let url, let host):
            return "cannot fetch \(url): host \(host) has no IPv4 address; IPv6 destinations are refused because "
                + "SFNODE_FETCH_ALLOW/SFNODE_FETCH_DENY only hold IPv4 CIDRs"
        case .resolutionFailed(let url, let host, let message, let transient):
            return "cannot fetch \(url): resolving \(host) failed: \(message)"
                + (transient ? " (temporary; will retry)" : "")
        case .refused(let url, let address, let rule):
            return "refusing to fetch \(url): its address \(address) is forbidden by rule '\(rule)' "
                + "(change SFNODE_FETCH_ALLOW/SFNODE_FETCH_DENY if this destination is meant to be reachable)"
        case .notFound(let url):
            return "fetching \(url) failed: the server answered 404 Not Found; check the image URL"
        case .httpStatus(let url, let status, let reason):
            return "fetching \(url) failed: the server answered \(status) \(reason)"
        case .tooManyRedirects(let url, let limit):
            return "fetching \(url) failed: more than \(limit) redirects"
        case .badRedirect(let url, let location):
            return "fetching \(url) failed: a redirect with "
                + (location.map { "an unusable Location '\($0)'" } ?? "no Location header")
        case .checksumMismatch(let url, let expected, let actual):
            return "fetching \(url) failed: sha512 mismatch: expected \(expected), got \(actual); "
                + "the image changed or was corrupted in transit"
        case .shortBody(let url, let received, let expected):
            return "fetching \(url) failed: the connection ended after \(received) of \(expected) bytes"
        case .transport(let url, let message):
            return "fetching \(url) failed: \(message)"
        case .invalidRule(let setting, let entry):
            return "\(setting): '\(entry)' is not an IPv4 address or CIDR (a.b.c.d or a.b.c.d/n); IPv6 is not supported"
        }
    }
}
