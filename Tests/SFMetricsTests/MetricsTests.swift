import Foundation
import Metrics
import Synchronization
import Testing

@testable import SFMetrics

@Suite("Metrics exposition")
struct MetricsTests {
    @Test("a sample's label values are escaped and its value is spelled as the format wants")
    func textFormat() {
        var text = MetricsText()
        text.family("sft_things_total", .counter, help: "Things, with a \\ and a\nnewline.")
        text.sample("sft_things_total", ["domain": "a\"b\\c\nd", "kind": "x"], 3)
        text.sample("sft_things_total", 0.25)
        text.sample("sft_things_total", .infinity)
        text.sample("sft_things_total", .nan)
        #expect(
            String(decoding: text.bytes, as: UTF8.self) == """
                # HELP sft_things_total Things, with a \\\\ and a\\nnewline.
                # TYPE sft_things_total counter
                sft_things_total{domain="a\\"b\\\\c\\nd",kind="x"} 3
                sft_things_total 0.25
                sft_things_total +Inf
                sft_things_total NaN

                """)
    }

    @Test("process_* comes from /proc/self: this process' memory, descriptors, CPU and start")
    func processSeries() async throws {
        let reading = try #require(ProcessMetrics().read())
        #expect(reading.residentBytes > Double(1 << 20))
        #expect(reading.virtualBytes >= reading.residentBytes)
        #expect(reading.openDescriptors >= 3)
        #expect(reading.maxDescriptors >= Double(reading.openDescriptors))
        #expect(reading.cpuSeconds > 0)
        let now = Date().timeIntervalSince1970
        #expect(reading.startTimeSeconds <= now + 1 && reading.startTimeSeconds > now - 86_400 * 365)
        // A descriptor opened now is counted.
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/stat"))
        defer { try? file.close() }
        #expect(try #require(ProcessMetrics().read()).openDescriptors == reading.openDescriptors + 1)
        var text = MetricsText()
        await ProcessMetrics().collect(into: &text)
        let exposition = String(decoding: text.bytes, as: UTF8.self)
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
            #expect(exposition.contains("\n\(name) "), "\(name) missing")
        }
    }

    @Test("a command name with spaces and parentheses does not shift /proc's stat fields")
    func statFields() throws {
        let fields = try #require(ProcessMetrics.statFields("42 (a b) (c)) S 1 2 3"))
        #expect(fields.first == "S" && fields.count == 4)
        #expect(ProcessMetrics.statFields("no parenthesis") == nil)
        #expect(ProcessMetrics.bootTime("cpu 1 2\nbtime 1700000000\nprocesses 5\n") == 1_700_000_000)
    }

    @Test("a cached collector reads its source once per lifetime, however many scrape at once")
    func cachedCollectorReadsOnce() async throws {
        let source = CountingCollector()
        let cached = CachedCollector(source, lifetime: .seconds(60))
        await withTaskGroup(of: String.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    var text = MetricsText()
                    await cached.collect(into: &text)
                    return String(decoding: text.bytes, as: UTF8.self)
                }
            }
            for await text in group { #expect(text == "sft_reads 1\n") }
        }
        #expect(source.reads.withLock { $0 } == 1)
        let expiring = CachedCollector(source, lifetime: .milliseconds(1))
        var text = MetricsText()
        await expiring.collect(into: &text)
        try await Task.sleep(for: .milliseconds(20))
        await expiring.collect(into: &text)
        #expect(source.reads.withLock { $0 } == 3)
    }

    @Test("swift-metrics instruments reach the registry under Prometheus names, with their own buckets")
    func registryNames() async {
        let exposition = MetricsExposition(registry: MetricsBootstrap.registry, collectors: [])
        Counter(label: "sft.dotted.things_total", dimensions: [("some.kind", "a")]).increment(by: 2)
        Timer(label: "sfnode_queue_pickup_seconds", dimensions: [("kind", "sft")]).recordMilliseconds(3)
        let text = String(decoding: await exposition.render(), as: UTF8.self)
        #expect(text.contains(#"sft_dotted_things_total{some_kind="a"} 2"#))
        // The pick-up's buckets start below a millisecond, not at swift-prometheus' 5 ms.
        #expect(text.contains(#"sfnode_queue_pickup_seconds_bucket{kind="sft",le="0.0005"} 0"#))
        #expect(text.contains(#"sfnode_queue_pickup_seconds_bucket{kind="sft",le="0.005"} 1"#))
    }
}

final class CountingCollector: MetricsCollector {
    let reads = Mutex(0)

    func collect(into text: inout MetricsText) async {
        let count = reads.withLock {
            $0 += 1
            return $0
        }
        try? await Task.sleep(for: .milliseconds(50))
        text.sample("sft_reads", Double(min(count, 1)))
    }
}
