import Foundation
import SFSystem

/// A guest described with typed values, from which sfnode writes domain XML.
///
/// Everything that reaches libvirt's parser goes through ``XMLWriter``, and device models come from
/// closed enums (allow-lists), so no user string can become markup or pick an arbitrary QEMU device.
public struct DomainSpec: Sendable, Equatable {
    /// The domain name. libvirt refuses `/` and newlines in it; so does ``validate()``.
    public var name: String
    /// The domain UUID; nil lets libvirt choose one.
    public var uuid: UUID?
    /// `kvm` or `qemu`; resolve `auto` first with ``VirtualizationType/resolved(logger:facts:)``.
    public var type: VirtualizationType
    /// Guest memory in MiB.
    public var memoryMiB: Int
    /// Virtual CPUs.
    public var vcpus: Int
    /// How the guest CPU is modelled. Host CPU modes need KVM: under TCG they abort QEMU.
    public var cpuMode: CPUMode
    /// Disks; the guest boots from the first hard disk (`<boot dev='hd'/>`).
    public var disks: [Disk]
    /// Network interfaces, each on a tap device that sfnode created beforehand.
    public var interfaces: [NetworkInterface]
    /// Where the first serial port is logged, or nil for no serial port. The port is a pty (the
    /// guest's console, for `virsh console`) whose output virtlogd appends to this file: the file is
    /// how sfnode (its console data use case) and tests see a guest's console without a client.
    public var serialLogPath: String?
    /// The video device, or nil for libvirt's default.
    public var video: Video?
    /// The console's and display's ports; nil keeps the console a pty (read through its log only).
    public var consoles: Consoles?
    /// UEFI firmware; nil boots with SeaBIOS.
    public var firmware: Firmware?
    /// The sfnode instance this domain belongs to, stored in sfnode's metadata namespace so that
    /// sfnode can tell the domains it owns from everything else on the host.
    public var instanceUUID: UUID?

    /// A spec; only `name`, `type`, `memoryMiB` and `vcpus` have no sensible default.
    public init(
        name: String, uuid: UUID? = nil, type: VirtualizationType, memoryMiB: Int, vcpus: Int,
        cpuMode: CPUMode = .emulatorDefault, disks: [Disk] = [], interfaces: [NetworkInterface] = [],
        serialLogPath: String? = nil, video: Video? = nil, instanceUUID: UUID? = nil
    ) {
        self.name = name
        self.uuid = uuid
        self.type = type
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.cpuMode = cpuMode
        self.disks = disks
        self.interfaces = interfaces
        self.serialLogPath = serialLogPath
        self.video = video
        self.instanceUUID = instanceUUID
    }

    /// The XML namespace of sfnode's `<metadata>` element.
    public static let metadataNamespace = "https://sfnode.dev/xmlns/instance/1"
    /// The prefix libvirt stores sfnode's metadata element under.
    public static let metadataPrefix = "sfnode"

    /// How the guest CPU is presented.
    public enum CPUMode: String, Sendable, CaseIterable {
        /// No `<cpu>` element: QEMU's default model, the only choice that works under TCG.
        case emulatorDefault
        /// `host-model`: a named model close to the host's, migratable between similar hosts.
        case hostModel = "host-model"
        /// `host-passthrough`: the host CPU as is; fastest, not migratable between different CPUs.
        case hostPassthrough = "host-passthrough"
    }

    /// A disk image attached to the guest.
    public struct Disk: Sendable, Equatable {
        /// The image file on the host.
        public var path: String
        /// The image format, which QEMU must be told rather than guess (guessing lets a raw image
        /// that looks like qcow2 name a backing file on the host).
        public var format: Format
        /// Hard disk or CD-ROM.
        public var device: Device
        /// The bus the guest finds it on.
        public var bus: Bus
        /// Whether the guest may not write. A CD-ROM is always read-only.
        public var readonly: Bool

        /// A disk; a CD-ROM must not use the virtio bus (QEMU has no virtio CD-ROM).
        public init(path: String, format: Format = .qcow2, device: Device = .disk, bus: Bus = .virtio, readonly: Bool = false) {
            self.path = path
            self.format = format
            self.device = device
            self.bus = bus
            self.readonly = readonly || device == .cdrom
        }

        /// Image formats sfnode accepts.
        public enum Format: String, Sendable, CaseIterable {
            /// QEMU's copy-on-write format, used for overlays on a shared base image.
            case qcow2
            /// A plain image, byte for byte the guest's disk.
            case raw
        }
        /// What the guest sees.
        public enum Device: String, Sendable, CaseIterable {
            /// A hard disk.
            case disk
            /// A CD-ROM drive, always read-only.
            case cdrom
        }
        /// Disk buses sfnode accepts (SFSystem's allow-list).
        public typealias Bus = DiskBus
    }

    /// A NIC on a tap device sfnode created (`managed='no'`: libvirt must not create or delete it).
    public struct NetworkInterface: Sendable, Equatable {
        /// The tap device's name on the host.
        public var tapDevice: String
        /// The guest's MAC address: unicast, and unique among the guest's NICs.
        public var mac: MACAddress
        /// The emulated NIC.
        public var model: NICModel

        /// A NIC on the existing tap device `tapDevice`.
        public init(tapDevice: String, mac: MACAddress, model: NICModel = .virtio) {
            self.tapDevice = tapDevice
            self.mac = mac
            self.model = model
        }
    }

    /// NIC models sfnode lets a guest have (SFSystem's allow-list).
    public typealias NICModel = SFSystem.NICModel

    /// The video device.
    /// UEFI firmware: OVMF's code, read-only, and the guest's own variable store (NVRAM), which
    /// libvirt makes from the template the first time the domain starts and keeps after.
    public struct Firmware: Sendable, Equatable {
        /// The firmware code (`OVMF_CODE_4M.fd`, or `OVMF_CODE_4M.ms.fd` for secure boot).
        public var code: String
        /// What a new variable store is copied from.
        public var variablesTemplate: String
        /// The guest's variable store.
        public var variables: String
        /// Secure boot: only signed boot loaders run. Needs SMM, so the machine is q35.
        public var secureBoot: Bool

        public init(code: String, variablesTemplate: String, variables: String, secureBoot: Bool) {
            self.code = code
            self.variablesTemplate = variablesTemplate
            self.variables = variables
            self.secureBoot = secureBoot
        }

        /// Debian's OVMF (package `ovmf`): the 4 MiB builds, with Microsoft's keys enrolled for
        /// secure boot.
        public static func ovmf(secureBoot: Bool, variables: String) -> Firmware {
            Firmware(
                code: secureBoot ? "/usr/share/OVMF/OVMF_CODE_4M.ms.fd" : "/usr/share/OVMF/OVMF_CODE_4M.fd",
                variablesTemplate: secureBoot ? "/usr/share/OVMF/OVMF_VARS_4M.ms.fd" : "/usr/share/OVMF/OVMF_VARS_4M.fd",
                variables: variables, secureBoot: secureBoot)
        }
    }

    /// Where a guest's serial console and display listen: an address of the node and a port each.
    public struct Consoles: Sendable, Equatable {
        /// What the display speaks, Shaken Fist's `vdi`.
        public enum Display: String, Sendable, CaseIterable {
            case vnc, spice
        }
        /// The address they listen on (never 0.0.0.0 unless the operator says so).
        public var address: String
        /// The serial console's port: telnet, logged to ``DomainSpec/serialLogPath`` as well.
        public var consolePort: Int
        /// The display's kind and port; nil for none.
        public var display: (kind: Display, port: Int)?

        public init(address: String, consolePort: Int, display: (kind: Display, port: Int)?) {
            self.address = address
            self.consolePort = consolePort
            self.display = display
        }

        public static func == (lhs: Consoles, rhs: Consoles) -> Bool {
            lhs.address == rhs.address && lhs.consolePort == rhs.consolePort && lhs.display?.kind == rhs.display?.kind
                && lhs.display?.port == rhs.display?.port
        }
    }

    public struct Video: Sendable, Equatable {
        /// The emulated video card.
        public var model: VideoModel
        /// Video memory in KiB (libvirt's `vram`); ignored for `none`.
        public var memoryKiB: Int

        /// A video card with `memoryKiB` of video memory.
        public init(model: VideoModel, memoryKiB: Int = 16384) {
            self.model = model
            self.memoryKiB = memoryKiB
        }
    }

    /// Video models sfnode lets a guest have (SFSystem's allow-list).
    public typealias VideoModel = SFSystem.VideoModel

    /// Checks everything libvirt would otherwise reject later with a less helpful message, or
    /// accept and misbehave on.
    public func validate() throws {
        guard !name.isEmpty else { throw DomainSpecError.invalidName(name, reason: "it is empty") }
        guard !name.contains("/"), !name.contains("\n"), XMLWriter.isRepresentable(name) else {
            throw DomainSpecError.invalidName(name, reason: "it contains '/', a newline or a control character")
        }
        guard type != .auto else { throw DomainSpecError.unresolvedVirtualizationType }
        guard memoryMiB > 0 else { throw DomainSpecError.invalidValue(field: "memoryMiB", value: "\(memoryMiB)", reason: "must be more than 0") }
        guard vcpus > 0 else { throw DomainSpecError.invalidValue(field: "vcpus", value: "\(vcpus)", reason: "must be more than 0") }
        if type == .qemu && cpuMode != .emulatorDefault {
            throw DomainSpecError.invalidValue(
                field: "cpuMode", value: cpuMode.rawValue, reason: "host CPU modes need KVM; under qemu (TCG) use emulatorDefault")
        }
        if let firmware {
            try Self.checkPath(firmware.code, field: "firmware path")
            try Self.checkPath(firmware.variablesTemplate, field: "firmware variables template")
            try Self.checkPath(firmware.variables, field: "firmware variables path")
        }
        for disk in disks {
            try Self.checkPath(disk.path, field: "disk path")
            if disk.device == .cdrom && disk.bus == .virtio {
                throw DomainSpecError.invalidValue(field: "disk bus", value: disk.path, reason: "a cdrom cannot be on the virtio bus; use sata or ide")
            }
        }
        for bus in DomainSpec.Disk.Bus.allCases {
            let count = disks.filter { $0.bus == bus }.count
            if count > bus.capacity {
                throw DomainSpecError.invalidValue(field: "disks", value: "\(count) on \(bus.rawValue)", reason: "the bus takes at most \(bus.capacity)")
            }
        }
        var macs = Set<MACAddress>()
        for nic in interfaces {
            let tap = nic.tapDevice
            guard !tap.isEmpty, tap.utf8.count <= 15, tap != ".", tap != "..",
                tap.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7f && $0 != "/" && $0 != ":" })
            else {
                throw DomainSpecError.invalidValue(field: "tap device", value: tap, reason: "must be 1 to 15 printable ASCII characters without '/', ':' or spaces")
            }
            guard nic.mac.octets[0] & 0x01 == 0 else {
                throw DomainSpecError.invalidValue(field: "mac", value: "\(nic.mac)", reason: "a NIC needs a unicast address (first octet even)")
            }
            guard nic.mac != .zero else {
                throw DomainSpecError.invalidValue(field: "mac", value: "\(nic.mac)", reason: "the all-zeros address is not a NIC address")
            }
            guard macs.insert(nic.mac).inserted else {
                throw DomainSpecError.invalidValue(field: "mac", value: "\(nic.mac)", reason: "two interfaces share it")
            }
        }
        if let serialLogPath { try Self.checkPath(serialLogPath, field: "serial log path") }
        if let video, video.model != .none, video.memoryKiB <= 0 {
            throw DomainSpecError.invalidValue(field: "video memory", value: "\(video.memoryKiB)", reason: "must be more than 0 KiB")
        }
    }

    private static func checkPath(_ path: String, field: String) throws {
        guard path.hasPrefix("/"), XMLWriter.isRepresentable(path), !path.contains("\n") else {
            throw DomainSpecError.invalidValue(field: field, value: path, reason: "must be an absolute path without control characters")
        }
    }

    /// The domain XML, after ``validate()``.
    public func xml() throws -> String {
        try validate()
        var writer = XMLWriter()
        writer.element("domain", ["type": type.rawValue]) { w in
            w.element("name", text: name)
            if let uuid { w.element("uuid", text: uuid.lowercasedString) }
            if let instanceUUID {
                w.element("metadata") { w in
                    w.element("sfnode:instance", ["xmlns:sfnode": Self.metadataNamespace, "uuid": instanceUUID.lowercasedString])
                }
            }
            w.element("memory", ["unit": "MiB"], text: String(memoryMiB))
            w.element("vcpu", text: String(vcpus))
            w.element("os") { w in
                w.element("type", ["arch": "x86_64", "machine": firmware?.secureBoot == true ? "q35" : "pc"], text: "hvm")
                if let firmware {
                    w.element("loader", ["readonly": "yes", "secure": firmware.secureBoot ? "yes" : "no", "type": "pflash"], text: firmware.code)
                    w.element("nvram", ["template": firmware.variablesTemplate], text: firmware.variables)
                }
                w.element("boot", ["dev": "hd"])
            }
            // ACPI is what makes the power-button shutdown and reboot reach the guest.
            w.element("features") { w in
                w.element("acpi")
                w.element("apic")
                if firmware?.secureBoot == true { w.element("smm", ["state": "on"]) }
            }
            if cpuMode != .emulatorDefault { w.element("cpu", ["mode": cpuMode.rawValue]) }
            w.element("on_poweroff", text: "destroy")
            w.element("on_reboot", text: "restart")
            w.element("on_crash", text: "destroy")
            w.element("devices") { w in
                // SCSI disks on virtio-scsi: libvirt's default controller (LSI) has no driver in
                // many guests.
                if disks.contains(where: { $0.bus == .scsi }) { w.element("controller", ["type": "scsi", "index": "0", "model": "virtio-scsi"]) }
                for (disk, target) in zip(disks, DiskBus.deviceNames(disks.map(\.bus))) {
                    w.element("disk", ["type": "file", "device": disk.device.rawValue]) { w in
                        w.element("driver", ["name": "qemu", "type": disk.format.rawValue])
                        w.element("source", ["file": disk.path])
                        w.element("target", ["dev": target, "bus": disk.bus.rawValue])
                        if disk.readonly { w.element("readonly") }
                    }
                }
                for nic in interfaces {
                    w.element("interface", ["type": "ethernet"]) { w in
                        w.element("mac", ["address": nic.mac.description])
                        w.element("target", ["dev": nic.tapDevice, "managed": "no"])
                        w.element("model", ["type": nic.model.rawValue])
                    }
                }
                if let serialLogPath {
                    // With a log either way: virtlogd writes it, so it survives a QEMU restart and is
                    // rotated rather than growing without bound. With a port, the console is also
                    // telnet on it, as Shaken Fist's; without, a pty (for `virsh console`).
                    let type = consoles == nil ? "pty" : "tcp"
                    w.element("serial", ["type": type]) { w in
                        if let consoles {
                            w.element("source", ["mode": "bind", "host": consoles.address, "service": String(consoles.consolePort)])
                            w.element("protocol", ["type": "telnet"])
                        }
                        w.element("log", ["file": serialLogPath, "append": "on"])
                        w.element("target", ["port": "0"])
                    }
                    w.element("console", ["type": type]) { w in
                        w.element("target", ["type": "serial", "port": "0"])
                    }
                }
                if let consoles, let display = consoles.display, video?.model != VideoModel.none {
                    w.element("graphics", ["type": display.kind.rawValue, "port": String(display.port), "autoport": "no"]) { w in
                        w.element("listen", ["type": "address", "address": consoles.address])
                    }
                }
                if let video {
                    w.element("video") { w in
                        if video.model == .none {
                            w.element("model", ["type": "none"])
                        } else {
                            w.element("model", ["type": video.model.rawValue, "vram": String(video.memoryKiB), "heads": "1"])
                        }
                    }
                }
            }
        }
        return writer.text
    }
}

/// Why a ``DomainSpec`` cannot become a domain.
public enum DomainSpecError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The domain name is not one sfnode accepts, and why.
    case invalidName(String, reason: String)
    /// A field's value is out of range or malformed: the field, the value, and why.
    case invalidValue(field: String, value: String, reason: String)
    /// A device model outside the allow-list: the kind of device, the model asked for, and the allowed ones.
    case unsupportedModel(kind: String, model: String, allowed: [String])
    /// The spec still says `auto`; it must be resolved to `kvm` or `qemu` on the node first.
    case unresolvedVirtualizationType

    /// What is wrong, naming the field and the value.
    public var description: String {
        switch self {
        case .invalidName(let name, let reason):
            return "invalid domain name '\(name)': \(reason)"
        case .invalidValue(let field, let value, let reason):
            return "invalid \(field) '\(value)': \(reason)"
        case .unsupportedModel(let kind, let model, let allowed):
            return "unsupported \(kind) model '\(model)': allowed are \(allowed.joined(separator: ", "))"
        case .unresolvedVirtualizationType:
            return "virtualization type 'auto' must be resolved to kvm or qemu before writing domain XML"
        }
    }
}

extension DiskBus {
    /// How many disks the bus takes: IDE has two channels of two.
    var capacity: Int { self == .ide ? 4 : 26 }
}

extension NICModel {
    /// Parses a model named in a request, refusing anything not on the list.
    public static func parse(_ text: String) throws -> NICModel {
        guard let model = NICModel(rawValue: text) else {
            throw DomainSpecError.unsupportedModel(kind: "network interface", model: text, allowed: allCases.map(\.rawValue))
        }
        return model
    }
}

extension VideoModel {
    /// Parses a model named in a request, refusing anything not on the list.
    public static func parse(_ text: String) throws -> VideoModel {
        guard let model = VideoModel(rawValue: text) else {
            throw DomainSpecError.unsupportedModel(kind: "video", model: text, allowed: allCases.map(\.rawValue))
        }
        return model
    }
}
