import Metrics

/// What downloads and the image cache record for `/metrics`: bytes fetched, failures by reason,
/// cache hits and misses and the cache's size.
enum BlobMetrics {
    /// A download finished: its bytes count towards `sfnode_fetch_bytes_total`.
    static func fetched(_ result: FetchResult) {
        Counter(label: "sfnode_fetch_bytes_total").increment(by: Int64(clamping: max(result.size, 0)))
    }

    /// A download failed for good (after its retries): `sfnode_fetch_failures_total{reason}`.
    static func fetchFailed(_ error: any Error) {
        Counter(label: "sfnode_fetch_failures_total", dimensions: [("reason", (error as? FetchError)?.reason ?? "other")]).increment()
    }

    /// A base asked of the image cache: present already (hit) or made now (miss).
    static func cacheLookup(hit: Bool) {
        Counter(label: "sfnode_image_cache_requests_total", dimensions: [("result", hit ? "hit" : "miss")]).increment()
    }

    /// The bytes the cache's bases take, after it changed.
    static func cacheSize(_ bytes: Int64) {
        Gauge(label: "sfnode_image_cache_bytes").record(bytes)
    }
}

extension FetchError {
    /// The kind of failure, as a metric label: a fixed set, never the URL.
    var reason: String {
        switch self {
        case .invalidURL: return "invalid_url"
        case .unsupportedScheme: return "unsupported_scheme"
        case .noAddress, .resolutionFailed: return "resolution"
        case .refused: return "refused"
        case .notFound: return "not_found"
        case .httpStatus: return "http_status"
        case .tooManyRedirects, .badRedirect: return "redirect"
        case .checksumMismatch: return "checksum"
        case .shortBody: return "short_body"
        case .transport: return "transport"
        case .invalidRule: return "invalid_rule"
        case .tooLarge: return "too_large"
        case .deadlineExceeded: return "deadline"
        case .tooSlow: return "too_slow"
        }
    }
}
