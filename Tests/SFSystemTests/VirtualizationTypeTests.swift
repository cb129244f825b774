import Foundation
import Logging
import Testing

@testable import SFSystem

@Suite struct VirtualizationTypeTests {
    typealias Facts = VirtualizationType.HostFacts

    @Test func autoNeedsBothTheDeviceAndTheCPUFlags() {
        #expect(VirtualizationType.auto.decide(given: Facts(kvmDeviceUsable: true, cpuFlags: ["fpu", "vmx"])).type == .kvm)
        #expect(VirtualizationType.auto.decide(given: Facts(kvmDeviceUsable: true, cpuFlags: ["svm"])).type == .kvm)
        #expect(VirtualizationType.auto.decide(given: Facts(kvmDeviceUsable: true, cpuFlags: ["fpu", "sse2"])).type == .qemu)
        #expect(VirtualizationType.auto.decide(given: Facts(kvmDeviceUsable: false, cpuFlags: ["vmx"])).type == .qemu)
        #expect(VirtualizationType.auto.decide(given: Facts(kvmDeviceUsable: false, cpuFlags: [])).type == .qemu)
        #expect(VirtualizationType.auto.decide(given: Facts(kvmDeviceUsable: true, cpuFlags: ["vmx"])).reason == nil)
        #expect(VirtualizationType.auto.decide(given: Facts(kvmDeviceUsable: true, cpuFlags: [])).reason?.contains("vmx") == true)
    }

    @Test func explicitTypesAreKept() {
        let none = Facts(kvmDeviceUsable: false, cpuFlags: [])
        #expect(VirtualizationType.kvm.decide(given: none).type == .kvm)
        #expect(VirtualizationType.qemu.decide(given: Facts(kvmDeviceUsable: true, cpuFlags: ["vmx"])).type == .qemu)
        #expect(VirtualizationType.kvm.resolved(logger: Logger(label: "test"), facts: none) == .kvm)
    }

    @Test func parsesCPUFlags() {
        let cpuinfo = """
            processor\t: 0
            vendor_id\t: GenuineIntel
            flags\t\t: fpu vme de pse vmx sse2
            bugs\t\t: spectre_v1

            processor\t: 1
            flags\t\t: fpu
            """
        #expect(Facts.parseCPUFlags(cpuinfo) == ["fpu", "vme", "de", "pse", "vmx", "sse2"])
        #expect(Facts.parseCPUFlags("processor : 0\n").isEmpty)
    }

    @Test func probesInjectedPaths() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sftvirt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let device = dir.appendingPathComponent("kvm").path
        let cpuinfo = dir.appendingPathComponent("cpuinfo").path
        try "flags : fpu svm\n".write(toFile: cpuinfo, atomically: true, encoding: .utf8)

        // No device file: not usable.
        var facts = Facts.probe(kvmDevice: device, cpuinfo: cpuinfo)
        #expect(facts == Facts(kvmDeviceUsable: false, cpuFlags: ["fpu", "svm"]))
        #expect(VirtualizationType.auto.resolved(logger: Logger(label: "test"), facts: facts) == .qemu)

        // A file that opens read-write stands in for a usable device.
        #expect(FileManager.default.createFile(atPath: device, contents: nil))
        facts = Facts.probe(kvmDevice: device, cpuinfo: cpuinfo)
        #expect(facts.kvmDeviceUsable)
        #expect(VirtualizationType.auto.resolved(logger: Logger(label: "test"), facts: facts) == .kvm)

        // A missing cpuinfo means no flags, so no KVM.
        facts = Facts.probe(kvmDevice: device, cpuinfo: dir.appendingPathComponent("absent").path)
        #expect(facts.cpuFlags.isEmpty)
        #expect(VirtualizationType.auto.decide(given: facts).type == .qemu)
    }

    @Test func thisHostResolvesAutoFromWhatItProbes() {
        // Whatever this host offers, auto must follow it: kvm only with a usable device and vmx or
        // svm (the lab's CPUs have neither, and KVM guests crash there, so it must pick qemu).
        let facts = Facts.probe()
        #expect(!facts.cpuFlags.isEmpty, "/proc/cpuinfo has a flags line")
        let hasExtensions = facts.cpuFlags.contains("vmx") || facts.cpuFlags.contains("svm")
        let expected: VirtualizationType = facts.kvmDeviceUsable && hasExtensions ? .kvm : .qemu
        let resolved = VirtualizationType.auto.resolved(logger: Logger(label: "test"))
        #expect(
            resolved == expected,
            "device usable: \(facts.kvmDeviceUsable), vmx or svm: \(hasExtensions), resolved: \(resolved)")
    }
}
