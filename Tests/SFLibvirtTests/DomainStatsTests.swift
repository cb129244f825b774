import Foundation
import Testing

@testable import SFLibvirt

@Suite("Domain statistics from libvirt's typed parameters")
struct DomainStatsTests {
    let identity = DomainIdentity(name: "sft-stats", uuid: UUID())

    @Test("interfaces, disks and vCPUs are read by index, and a figure libvirt left out is nil")
    func parsesEveryDevice() {
        let stats = DomainStats(
            identity: identity,
            parameters: TypedParameters([
                "state.state": .signed(1), "cpu.time": .unsigned(2_500_000_000), "balloon.current": .unsigned(262_144),
                "vcpu.current": .unsigned(2), "vcpu.maximum": .unsigned(2), "vcpu.0.time": .unsigned(7), "vcpu.1.time": .unsigned(9),
                "net.count": .unsigned(1), "net.0.name": .string("sfi1234"), "net.0.rx.bytes": .unsigned(1500), "net.0.tx.drop": .unsigned(3),
                "block.count": .unsigned(2), "block.0.name": .string("vda"), "block.0.path": .string("/d/disk0.qcow2"),
                "block.0.rd.bytes": .unsigned(4096), "block.1.name": .string("vdb"),
            ]))
        #expect(stats.state == 1 && stats.cpuTimeNanoseconds == 2_500_000_000 && stats.memoryKiB == 262_144)
        #expect(stats.maximumMemoryKiB == nil && stats.vcpus == 2 && stats.vcpuTimeNanoseconds == [0: 7, 1: 9])
        #expect(stats.interfaces.map(\.device) == ["sfi1234"])
        #expect(stats.interfaces.first?.receivedBytes == 1500 && stats.interfaces.first?.transmitDrops == 3)
        #expect(stats.interfaces.first?.transmittedBytes == nil)
        #expect(stats.disks.map(\.device) == ["vda", "vdb"] && stats.disks.last?.path == nil)
        #expect(stats.disks.first?.readBytes == 4096)
    }

    @Test("counts beyond any real domain are bounded, and negative or non-finite figures are nil, not traps")
    func hostileFigures() {
        let stats = DomainStats(
            identity: identity,
            parameters: TypedParameters([
                "state.state": .unsigned(.max), "net.count": .unsigned(.max), "block.count": .signed(-5),
                "vcpu.maximum": .double(.infinity), "cpu.time": .signed(-1), "balloon.current": .double(.nan),
                "balloon.maximum": .double(1e300),
            ]))
        #expect(stats.state == .max && stats.interfaces.isEmpty && stats.disks.isEmpty && stats.vcpuTimeNanoseconds.isEmpty)
        #expect(stats.cpuTimeNanoseconds == nil && stats.memoryKiB == nil && stats.maximumMemoryKiB == nil)
    }
}
