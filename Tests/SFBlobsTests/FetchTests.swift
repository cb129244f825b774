import Foundation
import Logging
import SFBlobs
import SFSystem
import SFTestSupport
import Synchronization
import Testing

/// Image fetching against a server on 127.0.0.1: every URL here is loopback (opened explicitly:
/// the default rules refuse it), except the two that must be refused before any connection is
/// attempted (the metadata address and a 10/8 redirect).
@Suite struct FetchTests {
    let logger = Logger(label: "sfnode.test.fetch")
    static let loopback = DestinationRules(allow: [IPRange("127.0.0.0/8")].compactMap { $0 }, deny: [])

    /// Fast retries, so a test with drops does not wait seconds.
    func fetcher(rules: DestinationRules = FetchTests.loopback, retries: Int = 4) -> HTTPFetcher {
        HTTPFetcher(
            configuration: .init(rules: rules, retries: retries, firstRetryDelay: .milliseconds(20)), logger: logger)
    }

    /// Downloads into memory, counting restarts.
    func download(
        _ fetcher: HTTPFetcher, _ url: String, sha512: String? = nil
    ) async throws -> (FetchResult, Data, restarts: Int, progress: [FetchProgress]) {
        var data = Data()
        var restarts = 0
        let reports = Mutex<[FetchProgress]>([])
        let result = try await fetcher.fetch(
            url, expectedSHA512: sha512, progress: { report in reports.withLock { $0.append(report) } },
            restart: {
                restarts += 1
                data.removeAll()
            },
            into: { data.append(contentsOf: $0) })
        return (result, data, restarts, reports.withLock { $0 })
    }

    func randomData(_ count: Int) -> Data {
        Data((0..<count).map { _ in UInt8.random(in: 0...255) })
    }

    @Test func fetchHashesLikeSha512sum() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/image.raw"
        let payload = randomData(3 << 20)
        try payload.write(to: URL(fileURLWithPath: path))
        let sum = try ChildProcess.run(["/usr/bin/sha512sum", path])
        let expected = String(sum.stdout.prefix(128))

        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/image.raw", file: path)
        let (result, data, restarts, progress) = try await download(fetcher(), server.url("/image.raw"), sha512: expected)
        #expect(result.sha512 == expected)
        #expect(result.size == Int64(payload.count))
        #expect(result.contentLength == Int64(payload.count))
        #expect(result.attempts == 1)
        #expect(result.lastModified == Date(timeIntervalSince1970: 1_445_412_480))
        #expect(data == payload)
        #expect(restarts == 0)
        #expect(progress.last?.percent == 100)
        #expect(progress.count <= 102)
        #expect(server.requestCount("/image.raw", method: "GET") == 1)
    }

    @Test func droppedConnectionIsRetriedAndSucceeds() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let payload = randomData(1 << 20)
        server.register("/drop", data: payload, behaviour: .dropAfter(bytes: 200_000, times: 2))
        let (result, data, restarts, _) = try await download(fetcher(), server.url("/drop"))
        #expect(data == payload)
        #expect(result.attempts == 3)
        #expect(restarts == 2)
        #expect(server.requestCount("/drop", method: "GET") == 3)
    }

    @Test("a body dropped mid-way is resumed with Range and If-Range: only the rest is sent, and the hash covers the whole")
    func dropsAreResumed() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let payload = randomData(1 << 20)
        server.register("/drop", body: .data(payload), behaviour: .dropAfter(bytes: 300_000, times: 2), etag: "\"v1\"", ranges: true)
        let (result, data, restarts, _) = try await download(fetcher(), server.url("/drop"))
        #expect(data == payload && restarts == 0 && result.attempts == 3 && result.size == Int64(payload.count))
        server.register("/whole", data: payload)
        let whole = try await download(fetcher(), server.url("/whole")).0
        #expect(result.sha512 != nil && result.sha512 == whole.sha512)
        // Each dropped response sent 300 000 bytes; the client asks for the rest after what reached it.
        let asked = server.rangesAsked("/drop")
        #expect(asked.count == 2 && asked[0] > 0 && asked[0] <= 300_000 && asked[1] > asked[0] && asked[1] <= asked[0] + 300_000, "\(asked)")
        #expect(server.bytesSent("/drop") == 600_000 + Int64(payload.count) - (asked.last ?? 0), "only what was lost is sent again")
    }

    @Test("a resumed download whose image changed on the server is sent whole, and the caller starts over")
    func staleResumeStartsOver() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let payload = randomData(200_000)
        server.register("/changed", body: .data(payload), etag: "\"v2\"", ranges: true)
        var data = Data(repeating: 7, count: 50_000)  // what an earlier process held of the old image
        var restarts = 0
        let validators = Mutex<[String?]>([])
        let result = try await fetcher().fetch(
            server.url("/changed"), hashing: false, resuming: FetchResume(offset: 50_000, validator: "\"v1\""),
            validated: { validator in validators.withLock { $0.append(validator) } },
            restart: {
                restarts += 1
                data.removeAll()
            },
            into: { data.append(contentsOf: $0) })
        #expect(data == payload && restarts == 1 && result.size == Int64(payload.count))
        #expect(server.rangesAsked("/changed") == [50_000])
        #expect(validators.withLock { $0 } == ["\"v2\""])
    }

    @Test("a fetch that hashes cannot resume bytes it never saw: the caller's are dropped first and the whole body comes once")
    func hashingFetchDoesNotResume() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let payload = randomData(100_000)
        server.register("/whole", body: .data(payload), etag: "\"v1\"", ranges: true)
        var data = Data(payload.prefix(30_000))
        var restarts = 0
        let result = try await fetcher().fetch(
            server.url("/whole"), resuming: FetchResume(offset: 30_000, validator: "\"v1\""),
            restart: {
                restarts += 1
                data.removeAll()
            },
            into: { data.append(contentsOf: $0) })
        #expect(data == payload && restarts == 1 && result.size == Int64(payload.count) && result.sha512 != nil)
        #expect(server.rangesAsked("/whole").isEmpty)
    }

    @Test func dropsBeyondTheRetryLimitFail() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/drop", data: randomData(500_000), behaviour: .dropAfter(bytes: 1000, times: 10))
        await #expect {
            _ = try await download(fetcher(retries: 2), server.url("/drop"))
        } throws: { error in
            guard let error = error as? FetchError else { return false }
            return error.isRetryable && error.description.contains(server.url("/drop"))
        }
        #expect(server.requestCount("/drop", method: "GET") == 3)
    }

    @Test func notFoundFailsAtOnceWithItsOwnMessage() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/gone", data: Data(), behaviour: .status(404))
        let url = server.url("/gone")
        await #expect(throws: FetchError.notFound(url: url)) {
            _ = try await download(fetcher(), url)
        }
        #expect(FetchError.notFound(url: url).description.contains("404"))
        #expect(FetchError.notFound(url: url).description.contains(url))
        #expect(!FetchError.notFound(url: url).isRetryable)
        #expect(server.requestCount("/gone") == 1)
    }

    @Test func serverErrorIsRetried() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/broken", data: Data(), behaviour: .status(500))
        await #expect {
            _ = try await download(fetcher(retries: 2), server.url("/broken"))
        } throws: { error in
            guard case .httpStatus(_, 500, _) = error as? FetchError else { return false }
            return (error as? FetchError)?.isRetryable == true
        }
        #expect(server.requestCount("/broken") == 3)
    }

    @Test func wrongChecksumFailsWithItsOwnMessage() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let payload = randomData(100_000)
        server.register("/good", data: payload)
        server.register("/bad", data: payload, behaviour: .wrongBytes)
        let (good, _, _, _) = try await download(fetcher(), server.url("/good"))
        let url = server.url("/bad")
        await #expect {
            _ = try await download(fetcher(), url, sha512: (good.sha512 ?? "").uppercased())
        } throws: { error in
            guard let error = error as? FetchError, case .checksumMismatch(url, good.sha512 ?? "", let actual) = error else {
                return false
            }
            return actual != good.sha512 && !error.isRetryable && error.description.contains("sha512 mismatch")
                && error.description.contains(url)
        }
        #expect(server.requestCount("/bad") == 1)
    }

    @Test func metadataAddressIsRefusedBeforeConnecting() async throws {
        let url = "http://169.254.169.254/latest"
        let rule = "169.254.0.0/16 (link-local, where the cloud metadata service lives), which is never fetched from"
        let refusal = FetchError.refused(url: url, host: "169.254.169.254", address: "169.254.169.254", rule: rule)
        // A refusal is raised before any socket is opened, so the error itself proves nothing was
        // attempted (a timed assertion would only add a flake on a loaded machine).
        await #expect(throws: refusal) { _ = try await download(fetcher(), url) }
        await #expect(throws: refusal) { _ = try await fetcher().head(url) }
        #expect(refusal.description.contains(rule) && refusal.description.contains(url))
    }

    @Test func redirectOutOfTheAllowedRangesIsRefusedBeforeConnecting() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/hop", data: Data(), behaviour: .redirect(to: "http://10.255.255.1/x"))
        await #expect(
            throws: FetchError.refused(
                url: "http://10.255.255.1/x", host: "10.255.255.1", address: "10.255.255.1",
                rule: "10.0.0.0/8 (private (RFC 1918)), refused unless SFNODE_FETCH_ALLOW opens it")
        ) {
            _ = try await download(fetcher(), server.url("/hop"))
        }
        #expect(server.requestCount("/hop") == 1)
    }

    @Test func headFollowsRedirectsOnLoopback() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/image", data: randomData(12345))
        server.register("/alias", data: Data(), behaviour: .redirect(to: "/image"))
        let remote = try await fetcher().head(server.url("/alias"))
        #expect(remote.finalURL == server.url("/image"))
        #expect(remote.contentLength == 12345)
        #expect(remote.lastModified == Date(timeIntervalSince1970: 1_445_412_480))
        #expect(server.requestCount("/image", method: "HEAD") == 1)
        #expect(server.requestCount("/image", method: "GET") == 0)
    }

    @Test func redirectLoopsStop() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/loop", data: Data(), behaviour: .redirect(to: "/loop"))
        await #expect {
            _ = try await fetcher().head(server.url("/loop"))
        } throws: { error in
            guard case .tooManyRedirects(_, 5) = error as? FetchError else { return false }
            return true
        }
        #expect(server.requestCount("/loop") == 6)
    }

    @Test func badURLsAreRefused() async throws {
        await #expect(throws: FetchError.unsupportedScheme(url: "ftp://127.0.0.1/x", scheme: "ftp")) {
            _ = try await fetcher().head("ftp://127.0.0.1/x")
        }
        await #expect(
            throws: FetchError.refused(
                url: "http://[::1]/x", host: "::1", address: "::1", rule: "::1/128 (IPv6 loopback), refused unless SFNODE_FETCH_ALLOW opens it")
        ) {
            _ = try await fetcher().head("http://[::1]/x")
        }
        await #expect {
            _ = try await fetcher().head("not a url")
        } throws: { error in
            guard case .invalidURL = error as? FetchError else { return false }
            return true
        }
    }

    @Test func rulesParse() throws {
        let rules = try DestinationRules.parse(allow: "127.0.0.0/8, 192.0.2.1", deny: "127.0.0.2 127.0.1.0/24")
        #expect(rules.allow.map(\.description) == ["127.0.0.0/8", "192.0.2.1/32"])
        #expect(rules.deny.map(\.description) == ["127.0.0.2/32", "127.0.1.0/24"])
        try rules.check(.v4(IPv4Address(0x7f00_0001)), host: "h", url: "u")
        #expect(throws: FetchError.refused(url: "u", host: "h", address: "127.0.0.2", rule: "127.0.0.2/32 in SFNODE_FETCH_DENY")) {
            try rules.check(.v4(IPv4Address(0x7f00_0002)), host: "h", url: "u")
        }
    }

    @Test func fetchToFileLeavesOnlyTheFinishedFile() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let payload = randomData(700_000)
        server.register("/f", data: payload, behaviour: .dropAfter(bytes: 300_000, times: 1))
        let path = directory + "/blob"
        let result = try await fetcher().fetch(server.url("/f"), toFile: path)
        #expect(result.attempts == 2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == payload)
        #expect(!FileManager.default.fileExists(atPath: path + ".partial"))

        server.register("/missing", data: Data(), behaviour: .status(404))
        await #expect(throws: FetchError.self) {
            _ = try await fetcher().fetch(server.url("/missing"), toFile: directory + "/other")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["blob"])
    }
}

/// A fresh directory under /tmp, named with the test prefix so leftovers are recognisable.
func makeTestDirectory() throws -> String {
    let path = "/tmp/" + TestNames.unique("img")
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
