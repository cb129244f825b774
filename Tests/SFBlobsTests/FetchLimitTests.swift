import Foundation
import Logging
import SFBlobs
import SFSystem
import SFTestSupport
import Testing

/// The limits on a fetch from a hostile server (on 127.0.0.1, opened explicitly): the minimum rate,
/// the total deadline and the byte cap. Each test sets the other limits far away, so that the
/// error it gets proves which limit acted.
@Suite struct FetchLimitTests {
    let logger = Logger(label: "sfnode.test.fetch-limits")

    func fetcher(
        deadline: Duration = .seconds(300), minimumBytesPerSecond: Int64 = 0, rateWindow: Duration = .seconds(60),
        maxBytes: Int64 = 1 << 40
    ) throws -> HTTPFetcher {
        HTTPFetcher(
            configuration: .init(
                rules: try DestinationRules.parse(allow: "127.0.0.0/8", deny: nil), retries: 2, firstRetryDelay: .milliseconds(20),
                deadline: deadline, minimumBytesPerSecond: minimumBytesPerSecond, rateWindow: rateWindow, maxBytes: maxBytes),
            logger: logger)
    }

    @Test func aSlowDripFailsByTheMinimumRateNotTheDeadline() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/drip", data: Data(repeating: 7, count: 1000), behaviour: .drip(every: .seconds(1)))
        // 1 KiB/s over 2 s, against a byte a second; the deadline is minutes away.
        let fetcher = try fetcher(minimumBytesPerSecond: 1024, rateWindow: .seconds(2))
        var received = 0
        await #expect {
            _ = try await fetcher.fetch(server.url("/drip"), restart: { received = 0 }, into: { received += $0.count })
        } throws: { error in
            guard let error = error as? FetchError, case .tooSlow(_, let bytes, 2, 1024) = error else { return false }
            return bytes < 2048 && !error.isRetryable && error.description.contains("SFNODE_FETCH_MIN_RATE_KIB")
        }
        #expect(received < 1000)
        // Not retried: a server this slow would be as slow again.
        #expect(server.requestCount("/drip", method: "GET") == 1)
    }

    @Test func theTotalDeadlineCoversTheBody() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        // 20 s of body at 50 KB/s: fast enough for any rate check, too long for a 5 s deadline (which
        // still leaves a busy machine time for the connection and the first bytes).
        server.register("/long", data: Data(repeating: 1, count: 1_000_000), behaviour: .throttled(bytesPerSecond: 50_000))
        let fetcher = try fetcher(deadline: .seconds(5))
        var received = 0
        await #expect {
            _ = try await fetcher.fetch(server.url("/long"), restart: { received = 0 }, into: { received += $0.count })
        } throws: { error in
            guard let error = error as? FetchError, case .deadlineExceeded(_, 5, let bytes) = error else { return false }
            return bytes > 0 && bytes < 1_000_000 && error.description.contains("SFNODE_FETCH_DEADLINE_SECONDS")
        }
        #expect(received > 0 && received < 1_000_000)
        #expect(server.requestCount("/long", method: "GET") == 1)
    }

    @Test func anAnnouncedLengthAboveTheCapIsRefusedBeforeTheBody() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/huge", data: Data(repeating: 3, count: 4096), behaviour: .claimsLength(100 << 30))
        let fetcher = try fetcher(maxBytes: 1 << 20)
        var received = 0
        await #expect(throws: FetchError.tooLarge(url: server.url("/huge"), bytes: 100 << 30, limit: 1 << 20, announced: true)) {
            _ = try await fetcher.fetch(server.url("/huge"), restart: {}, into: { received += $0.count })
        }
        #expect(received == 0)
        #expect(server.requestCount("/huge", method: "GET") == 1)
        let message = FetchError.tooLarge(url: "u", bytes: 100 << 30, limit: 1 << 20, announced: true).description
        #expect(message.contains("SFNODE_IMAGE_MAX_GIB") && message.contains("\(100 << 30)"))
    }

    @Test func aServerWithoutLengthIsStoppedAtTheCapAndLeavesNoFile() async throws {
        let directory = try makeTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/endless", data: Data(), behaviour: .endless)
        let fetcher = try fetcher(maxBytes: 3 << 20)
        var received = 0
        await #expect(throws: FetchError.tooLarge(url: server.url("/endless"), bytes: 3 << 20, limit: 3 << 20, announced: false)) {
            _ = try await fetcher.fetch(server.url("/endless"), restart: { received = 0 }, into: { received += $0.count })
        }
        #expect(received <= 3 << 20 && received > 0)
        #expect(server.requestCount("/endless", method: "GET") == 1)

        await #expect(throws: FetchError.self) {
            _ = try await fetcher.fetch(server.url("/endless"), toFile: directory + "/blob")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test func aFetchWithinEveryLimitSucceeds() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let payload = Data((0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        server.register("/fine", data: payload)
        // Exactly at the cap is allowed; a minimum rate a loopback transfer clears easily.
        let fetcher = try fetcher(deadline: .seconds(60), minimumBytesPerSecond: 1024, rateWindow: .seconds(1), maxBytes: Int64(payload.count))
        var body = Data()
        let result = try await fetcher.fetch(server.url("/fine"), restart: { body.removeAll() }, into: { body.append(contentsOf: $0) })
        #expect(body == payload)
        #expect(result.size == Int64(payload.count))
    }
}
