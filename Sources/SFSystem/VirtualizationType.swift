#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// The libvirt domain type sfnode asks for: `kvm` (hardware virtualisation), `qemu` (TCG software
/// emulation), or `auto`, which is resolved on the node before any domain is defined.
///
/// It is configuration, never guessed from libvirt's capabilities alone: a host can report `kvm` and
/// still crash KVM guests (nested virtualisation without the CPU flags), where only `qemu` works.
public enum VirtualizationType: String, Sendable, CaseIterable, Codable {
    /// Hardware virtualisation through KVM.
    case kvm
    /// Software emulation (TCG): works anywhere, much slower.
    case qemu
    /// Decided on the node by ``resolved(logger:facts:)``: `kvm` when the host can run it, else `qemu`.
    case auto

    /// What the host offers that decides `auto`.
    public struct HostFacts: Sendable, Equatable {
        /// Whether the KVM device opened read-write.
        public var kvmDeviceUsable: Bool
        /// The CPU feature flags from `/proc/cpuinfo`.
        public var cpuFlags: Set<String>

        /// Facts given directly, for tests of the decision.
        public init(kvmDeviceUsable: Bool, cpuFlags: Set<String>) {
            self.kvmDeviceUsable = kvmDeviceUsable
            self.cpuFlags = cpuFlags
        }

        /// Reads the facts from the host. The paths are parameters so tests can point them at files
        /// they wrote; an unreadable cpuinfo means no flags.
        public static func probe(kvmDevice: String = "/dev/kvm", cpuinfo: String = "/proc/cpuinfo") -> HostFacts {
            let fd = open(kvmDevice, O_RDWR | O_CLOEXEC)
            if fd >= 0 { close(fd) }
            let text = (try? String(contentsOfFile: cpuinfo, encoding: .utf8)) ?? ""
            return HostFacts(kvmDeviceUsable: fd >= 0, cpuFlags: parseCPUFlags(text))
        }

        /// The flags of the first `flags` line of a cpuinfo text (every core lists the same).
        public static func parseCPUFlags(_ cpuinfo: String) -> Set<String> {
            for line in cpuinfo.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == "flags" else { continue }
                return Set(parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init))
            }
            return []
        }
    }

    /// The decision for `auto`: `kvm` only when the device is usable and the CPU has `vmx` (Intel) or
    /// `svm` (AMD); otherwise `qemu` and the reason why. `kvm` and `qemu` resolve to themselves.
    public func decide(given facts: HostFacts) -> (type: VirtualizationType, reason: String?) {
        switch self {
        case .kvm, .qemu:
            return (self, nil)
        case .auto:
            let hasExtensions = facts.cpuFlags.contains("vmx") || facts.cpuFlags.contains("svm")
            switch (facts.kvmDeviceUsable, hasExtensions) {
            case (true, true):
                return (.kvm, nil)
            case (false, true):
                return (.qemu, "the KVM device cannot be opened read-write")
            case (true, false):
                return (.qemu, "the CPU flags include neither vmx nor svm, so KVM guests would not run reliably")
            case (false, false):
                return (.qemu, "the KVM device cannot be opened read-write and the CPU flags include neither vmx nor svm")
            }
        }
    }

    /// Resolves `auto` against the host (or the given facts), warning when it falls back to software
    /// emulation, which is much slower than KVM.
    public func resolved(logger: Logger, facts: HostFacts? = nil) -> VirtualizationType {
        guard self == .auto else { return self }
        let (type, reason) = decide(given: facts ?? .probe())
        if let reason {
            logger.warning(
                "virtualization type auto resolved to qemu (software emulation, slow): \(reason)",
                metadata: ["virt.type": "\(type.rawValue)"])
        } else {
            logger.info("virtualization type auto resolved to kvm", metadata: ["virt.type": "kvm"])
        }
        return type
    }
}
