import Logging
import SFLibvirt
import SFMetrics

/// Each of this node's domains, under libvirt-exporter's names and labels (so that its dashboards
/// work as they are), from one bulk read (``LibvirtConnection/allDomainStats()``). Wrapped in a
/// ``CachedCollector``, scrapes cost at most one such read per cache lifetime.
///
/// Only sfnode's domains (named as its layout names them): another program's guests on the host are
/// not this agent's to report. The `domain` label is the domain's name, which holds the instance's
/// UUID; no tenant-chosen name becomes a label.
public struct DomainStatsCollector: MetricsCollector {
    let libvirt: LibvirtConnection
    let isOurs: @Sendable (DomainIdentity) -> Bool
    let logger: Logger

    /// Reports the domains of `libvirt` that `isOurs` accepts.
    public init(libvirt: LibvirtConnection, isOurs: @escaping @Sendable (DomainIdentity) -> Bool, logger: Logger) {
        self.libvirt = libvirt
        self.isOurs = isOurs
        self.logger = logger
    }

    public func collect(into text: inout MetricsText) async {
        let domains: [DomainStats]
        do {
            domains = try await libvirt.allDomainStats().filter { isOurs($0.identity) }
        } catch {
            logger.warning("could not read the domains' statistics for a metrics scrape", metadata: ["error": "\(error)"])
            text.family("libvirt_up", .gauge, help: "Whether reading libvirt's statistics succeeded.")
            text.sample("libvirt_up", 0)
            return
        }
        text.family("libvirt_up", .gauge, help: "Whether reading libvirt's statistics succeeded.")
        text.sample("libvirt_up", 1)
        Self.write(domains, into: &text)
    }

    /// One family at a time, every domain's samples under it, as the format wants.
    static func write(_ domains: [DomainStats], into text: inout MetricsText) {
        func each(
            _ name: String, _ kind: MetricsText.Kind, _ help: String, _ value: (DomainStats) -> Double?
        ) {
            text.family(name, kind, help: help)
            for domain in domains {
                if let value = value(domain) { text.sample(name, ["domain": domain.identity.name], value) }
            }
        }
        each("libvirt_domain_state_code", .gauge, "The domain's state, as libvirt's virDomainState numbers it.") { Double($0.state) }
        each("libvirt_domain_info_maximum_memory_bytes", .gauge, "Maximum allowed memory of the domain, in bytes.") {
            $0.maximumMemoryKiB.map { Double($0) * 1024 }
        }
        each("libvirt_domain_info_memory_usage_bytes", .gauge, "Memory usage of the domain, in bytes.") {
            $0.memoryKiB.map { Double($0) * 1024 }
        }
        each("libvirt_domain_info_virtual_cpus", .gauge, "Number of virtual CPUs for the domain.") { $0.vcpus.map { Double($0) } }
        each("libvirt_domain_info_cpu_time_seconds_total", .counter, "Amount of CPU time used by the domain, in seconds.") {
            $0.cpuTimeNanoseconds.map { Double($0) / 1e9 }
        }

        text.family("libvirt_domain_vcpu_time_seconds_total", .counter, help: "Amount of CPU time used by the vCPU, in seconds.")
        for domain in domains {
            for (vcpu, nanoseconds) in domain.vcpuTimeNanoseconds.sorted(by: { $0.key < $1.key }) {
                text.sample(
                    "libvirt_domain_vcpu_time_seconds_total", ["domain": domain.identity.name, "vcpu": String(vcpu)],
                    Double(nanoseconds) / 1e9)
            }
        }

        /// Each device family's samples, one family at a time.
        func deviceFamilies<Device>(
            _ prefix: String, _ families: [(suffix: String, help: String, field: KeyPath<Device, UInt64?>)],
            devices: (DomainStats) -> [Device], labels: (DomainStats, Device) -> [(key: String, value: String)]
        ) {
            for family in families {
                let name = prefix + family.suffix
                text.family(name, .counter, help: family.help)
                for domain in domains {
                    for device in devices(domain) {
                        guard let value = device[keyPath: family.field] else { continue }
                        text.sample(name, labels: labels(domain, device), Double(value))
                    }
                }
            }
        }

        let disks: [(suffix: String, help: String, field: KeyPath<DomainStats.Disk, UInt64?>)] = [
            ("read_bytes_total", "Number of bytes read from a block device, in bytes.", \.readBytes),
            ("read_requests_total", "Number of read requests from a block device.", \.readRequests),
            ("write_bytes_total", "Number of bytes written to a block device, in bytes.", \.writtenBytes),
            ("write_requests_total", "Number of write requests to a block device.", \.writeRequests),
        ]
        deviceFamilies("libvirt_domain_block_stats_", disks, devices: \.disks) { domain, disk in
            [("domain", domain.identity.name), ("source_file", disk.path ?? ""), ("target_device", disk.device)]
        }

        let interfaces: [(suffix: String, help: String, field: KeyPath<DomainStats.Interface, UInt64?>)] = [
            ("receive_bytes_total", "Number of bytes received on a network interface, in bytes.", \.receivedBytes),
            ("receive_packets_total", "Number of packets received on a network interface.", \.receivedPackets),
            ("receive_errors_total", "Number of packet receive errors on a network interface.", \.receiveErrors),
            ("receive_drops_total", "Number of packet receive drops on a network interface.", \.receiveDrops),
            ("transmit_bytes_total", "Number of bytes transmitted on a network interface, in bytes.", \.transmittedBytes),
            ("transmit_packets_total", "Number of packets transmitted on a network interface.", \.transmittedPackets),
            ("transmit_errors_total", "Number of packet transmit errors on a network interface.", \.transmitErrors),
            ("transmit_drops_total", "Number of packet transmit drops on a network interface.", \.transmitDrops),
        ]
        deviceFamilies("libvirt_domain_interface_stats_", interfaces, devices: \.interfaces) { domain, interface in
            [("domain", domain.identity.name), ("target_device", interface.device)]
        }
    }
}
