import Foundation
import SFMetrics
import Testing

@testable import SFAgent
@testable import SFLibvirt

@Suite("Domain metrics under libvirt-exporter's names")
struct DomainMetricsTests {
    @Test("each family once, every domain's devices under it, labelled as libvirt-exporter labels them")
    func familiesAndLabels() {
        let domains = ["sft-a", "sft-b"].map { name in
            DomainStats(
                identity: DomainIdentity(name: name, uuid: UUID()),
                parameters: TypedParameters([
                    "state.state": .signed(1), "vcpu.current": .unsigned(1), "vcpu.maximum": .unsigned(1), "vcpu.0.time": .unsigned(1_500_000_000),
                    "net.count": .unsigned(1), "net.0.name": .string("tap-\(name)"), "net.0.rx.bytes": .unsigned(10),
                    "block.count": .unsigned(1), "block.0.name": .string("vda"), "block.0.path": .string("/d/\(name)\".qcow2"),
                    "block.0.wr.reqs": .unsigned(4),
                ]))
        }
        var text = MetricsText()
        DomainStatsCollector.write(domains, into: &text)
        let lines = String(decoding: text.bytes, as: UTF8.self).split(separator: "\n")
        #expect(lines.contains(#"libvirt_domain_info_virtual_cpus{domain="sft-a"} 1"#))
        #expect(lines.contains(#"libvirt_domain_vcpu_time_seconds_total{domain="sft-b",vcpu="0"} 1.5"#))
        #expect(lines.contains(#"libvirt_domain_interface_stats_receive_bytes_total{domain="sft-a",target_device="tap-sft-a"} 10"#))
        #expect(lines.contains(#"libvirt_domain_block_stats_write_requests_total{domain="sft-b",source_file="/d/sft-b\".qcow2",target_device="vda"} 4"#))
        // A family the domains gave no figure for is still declared once, with no samples.
        let types = lines.filter { $0.hasPrefix("# TYPE ") }
        #expect(Set(types).count == types.count && types.count == 18, "\(types)")
        #expect(!lines.contains { $0.hasPrefix("libvirt_domain_info_cpu_time_seconds_total{") })
    }
}
