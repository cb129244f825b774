import CLibvirt
import Foundation

/// One domain's figures from libvirt's bulk read (`virConnectGetAllDomainStats`): what a metrics
/// scrape reports per domain. A figure libvirt did not give (a shut-off domain has no CPU time, a
/// guest without a balloon driver no balloon figures) is nil.
public struct DomainStats: Sendable, Equatable {
    /// Which domain.
    public let identity: DomainIdentity
    /// libvirt's `virDomainState`.
    public let state: Int32
    /// CPU time the domain has used (`cpu.time`), in nanoseconds.
    public let cpuTimeNanoseconds: UInt64?
    /// The memory the guest has now (`balloon.current`), in KiB.
    public let memoryKiB: UInt64?
    /// The most memory the guest may have (`balloon.maximum`), in KiB.
    public let maximumMemoryKiB: UInt64?
    /// vCPUs the domain has now (`vcpu.current`).
    public let vcpus: UInt64?
    /// Each vCPU's time (`vcpu.<n>.time`), in nanoseconds, by vCPU number.
    public let vcpuTimeNanoseconds: [Int: UInt64]
    /// The domain's network interfaces.
    public let interfaces: [Interface]
    /// The domain's disks.
    public let disks: [Disk]

    /// One network interface's counters (`net.<n>.*`).
    public struct Interface: Sendable, Equatable {
        /// The host-side device (the tap), such as `vnet3`.
        public let device: String
        public let receivedBytes: UInt64?
        public let receivedPackets: UInt64?
        public let receiveErrors: UInt64?
        public let receiveDrops: UInt64?
        public let transmittedBytes: UInt64?
        public let transmittedPackets: UInt64?
        public let transmitErrors: UInt64?
        public let transmitDrops: UInt64?
    }

    /// One disk's counters (`block.<n>.*`).
    public struct Disk: Sendable, Equatable {
        /// The guest-side target, such as `vda`.
        public let device: String
        /// The file behind it, when it has one.
        public let path: String?
        public let readBytes: UInt64?
        public let readRequests: UInt64?
        public let writtenBytes: UInt64?
        public let writeRequests: UInt64?
    }

    /// Interfaces, disks and vCPUs read per domain at most: libvirt's own figures, but a count
    /// from outside sfnode's code is bounded before it drives a loop.
    static let maximumDevices = 1024

    /// The figures of one record, from its typed parameters by name.
    init(identity: DomainIdentity, parameters: TypedParameters) {
        self.identity = identity
        state = Int32(clamping: parameters.integer("state.state") ?? 0)
        cpuTimeNanoseconds = parameters.unsigned("cpu.time")
        memoryKiB = parameters.unsigned("balloon.current")
        maximumMemoryKiB = parameters.unsigned("balloon.maximum")
        vcpus = parameters.unsigned("vcpu.current")
        var vcpuTimes: [Int: UInt64] = [:]
        for index in 0..<Self.count(parameters.unsigned("vcpu.maximum")) {
            if let time = parameters.unsigned("vcpu.\(index).time") { vcpuTimes[index] = time }
        }
        vcpuTimeNanoseconds = vcpuTimes
        interfaces = (0..<Self.count(parameters.unsigned("net.count"))).compactMap { index in
            let key = "net.\(index)."
            guard let device = parameters.string(key + "name") else { return nil }
            return Interface(
                device: device, receivedBytes: parameters.unsigned(key + "rx.bytes"),
                receivedPackets: parameters.unsigned(key + "rx.pkts"), receiveErrors: parameters.unsigned(key + "rx.errs"),
                receiveDrops: parameters.unsigned(key + "rx.drop"), transmittedBytes: parameters.unsigned(key + "tx.bytes"),
                transmittedPackets: parameters.unsigned(key + "tx.pkts"), transmitErrors: parameters.unsigned(key + "tx.errs"),
                transmitDrops: parameters.unsigned(key + "tx.drop"))
        }
        disks = (0..<Self.count(parameters.unsigned("block.count"))).compactMap { index in
            let key = "block.\(index)."
            guard let device = parameters.string(key + "name") else { return nil }
            return Disk(
                device: device, path: parameters.string(key + "path"), readBytes: parameters.unsigned(key + "rd.bytes"),
                readRequests: parameters.unsigned(key + "rd.reqs"), writtenBytes: parameters.unsigned(key + "wr.bytes"),
                writeRequests: parameters.unsigned(key + "wr.reqs"))
        }
    }

    private static func count(_ value: UInt64?) -> Int {
        Int(min(value ?? 0, UInt64(maximumDevices)))
    }
}

/// A record's typed parameters (`virTypedParameter`), copied out by name.
struct TypedParameters {
    enum Value: Equatable {
        case signed(Int64)
        case unsigned(UInt64)
        case double(Double)
        case string(String)
    }

    private(set) var values: [String: Value] = [:]

    init(_ values: [String: Value]) {
        self.values = values
    }

    /// Copies `count` parameters from libvirt's array.
    init(_ parameters: UnsafeMutablePointer<virTypedParameter>?, count: Int32) {
        guard let parameters, count > 0 else { return }
        for index in 0..<Int(count) {
            var parameter = parameters[index]
            let name = withUnsafeBytes(of: &parameter.field) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            switch UInt32(bitPattern: parameter.type) {
            case VIR_TYPED_PARAM_INT.rawValue: values[name] = .signed(Int64(parameter.value.i))
            case VIR_TYPED_PARAM_UINT.rawValue: values[name] = .unsigned(UInt64(parameter.value.ui))
            case VIR_TYPED_PARAM_LLONG.rawValue: values[name] = .signed(parameter.value.l)
            case VIR_TYPED_PARAM_ULLONG.rawValue: values[name] = .unsigned(parameter.value.ul)
            case VIR_TYPED_PARAM_DOUBLE.rawValue: values[name] = .double(parameter.value.d)
            case VIR_TYPED_PARAM_BOOLEAN.rawValue: values[name] = .unsigned(parameter.value.b != 0 ? 1 : 0)
            case VIR_TYPED_PARAM_STRING.rawValue:
                if let text = parameter.value.s { values[name] = .string(String(cString: text)) }
            default: continue
            }
        }
    }

    /// The parameter as a count: a negative or non-integral one is nil rather than a trap.
    func unsigned(_ name: String) -> UInt64? {
        switch values[name] {
        case .unsigned(let value): return value
        case .signed(let value): return value >= 0 ? UInt64(value) : nil
        case .double(let value): return value.isFinite && value >= 0 && value < 0x1p64 ? UInt64(value) : nil
        default: return nil
        }
    }

    /// The parameter as a signed integer, clamped into range.
    func integer(_ name: String) -> Int64? {
        switch values[name] {
        case .signed(let value): return value
        case .unsigned(let value): return Int64(clamping: value)
        default: return nil
        }
    }

    func string(_ name: String) -> String? {
        if case .string(let value) = values[name] { return value }
        return nil
    }
}
