import Foundation
import HTTPTypes
import Logging
import SFControl
import SFMetrics
import SFStore
import Testing

@Suite("API /metrics")
struct MetricsAPITests {
    @Test("the system namespace reads the queue, the process and the requests by route; a tenant reads nothing")
    func metricsForTheOperatorOnly() async throws {
        var fixture = try await APIFixture()
        defer { fixture.cleanup() }
        fixture.metrics = MetricsExposition(
            registry: MetricsBootstrap.registry,
            collectors: [ProcessMetrics(), QueueDepthCollector(store: fixture.store, logger: Logger(label: "sfnode.test.api"))])
        try await fixture.run { api in
            let admin = try await api.token()
            let tenant = try await api.tenant("metricsns", admin: admin)
            let made = try await api.send(
                .post, "/networks", token: tenant, body: ["netblock": "10.77.0.0/24", "name": "sftmetrics", "provide_dhcp": true, "provide_nat": false])
            #expect(made.status == .ok, "\(made.text)")
            // Paths a hostile client makes up: each is the route's template in a label, never the path.
            for _ in 0..<5 { _ = try await api.send(.get, "/instances/\(UUID().uuidString)", token: tenant) }
            // Methods too: any token is a method on the wire, and each one a label would be a series.
            for method in ["SFTPROBEA", "SFTPROBEB", "SFTPROBEC"] {
                _ = try await api.send(try #require(HTTPRequest.Method(method)), "/networks", token: tenant)
            }

            #expect(try await api.send(.get, "/metrics").status == .unauthorized)
            let refused = try await api.send(.get, "/metrics", token: tenant)
            #expect(refused.status != .ok && !refused.text.contains("process_"), "\(refused.text)")

            let scrape = try await api.send(.get, "/metrics", token: admin)
            #expect(scrape.status == .ok)
            #expect(scrape.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
            let text = scrape.text
            #expect(text.contains(#"sfnode_queue_depth{kind="network.create",state="queued"} 1"#), "\(text)")
            #expect(text.contains(#"sfnode_queue_depth{kind="instance.create",state="running"} 0"#))
            #expect(text.contains("\nprocess_resident_memory_bytes "))
            #expect(text.contains(#"sfnode_http_request_duration_seconds_count{route="/networks",method="POST",status="200"} 1"#), "\(text)")
            #expect(text.contains(#"route="/instances/{ref}""#) || text.contains(#"route="/instances/:ref""#), "\(text)")
            #expect(!text.contains("sftmetrics") && !text.contains("metricsns"), "no object or namespace names as labels")
            #expect(!text.contains("SFTPROBE") && text.contains(#"method="other""#), "an unknown method is counted as other")
            #expect(text.range(of: #"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-"#, options: .regularExpression) == nil, "no UUIDs as labels")
        }
    }
}
