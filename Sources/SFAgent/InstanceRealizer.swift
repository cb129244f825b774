import Foundation
import Logging
import SFBlobs
import SFControl
import SFLibvirt
import SFNetlink
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// What one instance needs on this host.
public struct InstancePlan: Sendable, Equatable {
    /// One disk: a copy-on-write layer over a base image, a blank disk, or a CD-ROM of an image.
    public struct Disk: Sendable, Equatable {
        public enum Source: Sendable, Equatable {
            /// A qcow2 overlay of `sizeGiB` (nil: the base's size) over a base image in `format`.
            case overlay(base: String, format: ImageFormat, sizeGiB: Int?)
            /// An empty disk of this many GiB.
            case blank(sizeGiB: Int)
            /// A read-only CD-ROM of this image file.
            case cdrom(path: String)
        }

        public var source: Source
        public var bus: DomainSpec.Disk.Bus

        public init(source: Source, bus: DomainSpec.Disk.Bus = .virtio) {
            self.source = source
            self.bus = bus
        }
    }

    /// One network interface, on the bridge of the network with `vxid`.
    public struct Interface: Sendable, Equatable {
        public var uuid: UUID
        public var mac: MACAddress
        public var vxid: UInt32
        public var model: DomainSpec.NICModel
        /// The guest's IPv4 address on the network, the only one its tap lets it send from.
        public var address: IPv4Address?
        /// Whether the tap's anti-spoofing filter is on (the network's `spoof_filter`).
        public var spoofFilter: Bool

        public init(
            uuid: UUID, mac: MACAddress, vxid: UInt32, model: DomainSpec.NICModel = .virtio, address: IPv4Address? = nil,
            spoofFilter: Bool = true
        ) {
            self.uuid = uuid
            self.mac = mac
            self.vxid = vxid
            self.model = model
            self.address = address
            self.spoofFilter = spoofFilter
        }
    }

    public var uuid: UUID
    public var cpus: Int
    public var memoryMiB: Int
    public var disks: [Disk]
    public var interfaces: [Interface]
    public var video: DomainSpec.Video?
    /// What the config drive tells the guest; nil for an instance without one (`configdrive: none`).
    public var configDrive: ConfigDrive?
    /// Where its serial console and display listen; nil for a pty console only.
    public var consoles: DomainSpec.Consoles?
    /// UEFI firmware (OVMF) rather than BIOS, and with it secure boot when asked.
    public var uefi: Bool = false
    public var secureBoot: Bool = false
    /// The file the instance's firmware variables start as a copy of (its `nvram_template` blob);
    /// nil starts them from OVMF's own template.
    public var nvramTemplate: String?

    public init(
        uuid: UUID, cpus: Int, memoryMiB: Int, disks: [Disk], interfaces: [Interface], video: DomainSpec.Video? = nil,
        configDrive: ConfigDrive? = nil, consoles: DomainSpec.Consoles? = nil
    ) {
        self.consoles = consoles
        self.uuid = uuid
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.disks = disks
        self.interfaces = interfaces
        self.video = video
        self.configDrive = configDrive
    }
}

/// Makes an instance exist, run, and go away on this host: disks, taps, the domain.
///
/// Taps are made in the root namespace, where libvirtd opens an unmanaged tap by name, and moved into
/// the host namespace (when that is not the root one) once QEMU holds them; a tap that was moved
/// must be made again before the domain starts again.
public struct InstanceRealizer: Sendable {
    public let layout: HostLayout
    /// The netlink session in the host namespace, where the bridges are.
    public let host: NetlinkSession
    /// The netlink session in the root namespace, where taps are made.
    public let root: NetlinkSession
    public let libvirt: LibvirtConnection
    /// Where instance directories (disks, console log) live.
    public let storagePath: String
    public let virtualization: VirtualizationType
    /// Builds config drives.
    public let configDrives: ConfigDriveWriter
    /// The wall-clock limit of each qemu-img run that makes an instance's disk (SFNODE_QEMU_IMG_TIMEOUT_SECONDS).
    public let qemuImgTimeLimit: Duration
    let logger: Logger

    public init(
        layout: HostLayout, host: NetlinkSession, root: NetlinkSession, libvirt: LibvirtConnection, storagePath: String,
        virtualization: VirtualizationType, configDrives: ConfigDriveWriter = ConfigDriveWriter(),
        qemuImgTimeLimit: Duration = ImageLimits().qemuImgTimeLimit, logger: Logger
    ) {
        self.configDrives = configDrives
        self.qemuImgTimeLimit = qemuImgTimeLimit
        self.layout = layout
        self.host = host
        self.root = root
        self.libvirt = libvirt
        self.storagePath = storagePath
        self.virtualization = virtualization
        self.logger = logger
    }

    /// The domain's name: recognisably sfnode's, unique per instance.
    public func domainName(of instance: UUID) -> String { layout.namespacePrefix + instance.lowercasedString }
    /// Where each instance's files are (the rule SFControl reads console logs by, too).
    public var files: InstanceFiles { InstanceFiles(storagePath: storagePath) }
    /// The instance's directory of disks, config drive and console log.
    public func directory(of instance: UUID) -> String { files.directory(of: instance) }
    /// Where virtlogd writes the guest's first serial port.
    public func consoleLog(of instance: UUID) -> String { files.consoleLog(of: instance) }
    /// The instance's config drive image.
    public func configDrive(of instance: UUID) -> String { files.configDrive(of: instance) }

    /// Creates what is missing and starts the domain if it is not running. Re-running it after a
    /// crash at any point converges: existing disks are kept, existing taps reused, the config drive
    /// built again, the domain redefined with the same XML, and a running domain left alone.
    ///
    /// The config drive is built afresh whenever the domain is about to start (create, power on,
    /// a restart by reconciliation), as Shaken Fist rebuilds it on every power on: the guest then
    /// always boots with the instance's current interfaces and a new random seed.
    public func ensureRunning(_ plan: InstancePlan) async throws {
        let directory = directory(of: plan.uuid)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var disks: [DomainSpec.Disk] = []
        for (index, disk) in plan.disks.enumerated() {
            disks.append(try await prepare(disk, index: index, in: directory))
        }
        try CrashPoint.reach("instance.create.after-disks")
        let name = domainName(of: plan.uuid)
        if let state = try await libvirt.state(of: .name(name)), state == .on || state == .paused {
            // Running already (an earlier attempt got this far): its taps may still need plugging.
            // A paused domain is running too: its taps are in QEMU's hands and must not be remade.
            try await plugTaps(plan)
            return
        }
        let drivePath = configDrive(of: plan.uuid)
        if let drive = plan.configDrive {
            // After the instance's own disks, so that their device names (vda, vdb, …) do not depend
            // on whether there is a config drive; raw and read-only, as the guest only reads it.
            let writer = configDrives
            try await runBlocking { try writer.write(drive, to: drivePath) }
            disks.append(DomainSpec.Disk(path: drivePath, format: .raw, device: .disk, bus: .virtio, readonly: true))
        } else {
            // A drive left from when the instance had one is not attached; it should not linger either.
            unlink(drivePath)
        }
        for interface in plan.interfaces {
            // A tap left in the host namespace by an earlier run must come back to the root one.
            let tap = layout.tap(of: interface.uuid)
            if layout.hostNamespace != nil { try await host.deleteLink(tap) }
            try await root.createTap(name: tap, mtu: layout.mtu)
            try await root.ensureTapFilter(interface, device: tap)
        }
        var spec = DomainSpec(
            name: name, uuid: plan.uuid, type: virtualization, memoryMiB: plan.memoryMiB, vcpus: plan.cpus, disks: disks,
            interfaces: plan.interfaces.map { .init(tapDevice: layout.tap(of: $0.uuid), mac: $0.mac, model: $0.model) },
            serialLogPath: consoleLog(of: plan.uuid), video: plan.video, instanceUUID: plan.uuid)
        spec.consoles = plan.consoles
        if plan.uefi {
            let firmware = DomainSpec.Firmware.ovmf(secureBoot: plan.secureBoot, variables: files.firmwareVariables(of: plan.uuid))
            if let template = plan.nvramTemplate { try await Self.seedVariables(firmware, from: template) }
            spec.firmware = firmware
        }
        try await libvirt.define(spec)
        try CrashPoint.reach("instance.create.after-define")
        try await libvirt.start(.name(name))
        try CrashPoint.reach("instance.create.after-start")
        try await plugTaps(plan)
    }

    /// Makes the instance's variable store a copy of `template` when it has none yet: libvirt then
    /// keeps it rather than copying OVMF's own template, and a store the guest has written to is
    /// never replaced. A template of another size than this node's OVMF build would not boot, so it
    /// is refused by name. Written whole or not at all (a crash leaves no half-copied store).
    static func seedVariables(_ firmware: DomainSpec.Firmware, from template: String) async throws {
        let target = firmware.variables
        guard !FileManager.default.fileExists(atPath: target) else { return }
        try await runBlocking {
            let data = try Data(contentsOf: URL(fileURLWithPath: template))
            let expected = (try? FileManager.default.attributesOfItem(atPath: firmware.variablesTemplate)[.size] as? Int) ?? nil
            if let expected, expected != data.count {
                throw ControlError.invalid(
                    "nvram_template is \(data.count) bytes, but this node's OVMF variable store (\(firmware.variablesTemplate)) is \(expected): use a variable store of the same firmware build")
            }
            try AtomicFile.write(data, to: target, mode: 0o600)
        }
    }

    /// Moves the instance's taps into the host namespace if needed and enslaves them to their
    /// networks' bridges. Also what reconciliation runs when a tap lost its bridge.
    public func plugTaps(_ plan: InstancePlan) async throws {
        for interface in plan.interfaces {
            let tap = layout.tap(of: interface.uuid)
            if let namespace = layout.hostNamespace, try await root.link(named: tap) != nil {
                try await root.moveLink(tap, toNamespace: namespace)
            }
            // A move drops a device's filters: put them back before the tap comes up (a replace otherwise).
            try await host.ensureTapFilter(interface, device: tap)
            try await host.setMaster(tap, master: layout.bridge(interface.vxid))
            try await host.setMTU(tap, layout.mtu)
            try await host.setLinkUp(tap, true)
        }
    }

    /// Destroys and undefines the domain, removes its taps and its directory. Removing what is gone
    /// is not an error.
    public func remove(_ plan: InstancePlan) async throws {
        let name = domainName(of: plan.uuid)
        try await libvirt.destroy(.name(name))
        try await libvirt.undefine(.name(name))
        for interface in plan.interfaces {
            let tap = layout.tap(of: interface.uuid)
            try await host.deleteLink(tap)
            try await root.deleteLink(tap)
        }
        try? FileManager.default.removeItem(atPath: directory(of: plan.uuid))
    }

    private func prepare(_ disk: InstancePlan.Disk, index: Int, in directory: String) async throws -> DomainSpec.Disk {
        switch disk.source {
        case .cdrom(let path):
            return DomainSpec.Disk(path: path, format: .raw, device: .cdrom, bus: disk.bus == .virtio ? .sata : disk.bus)
        case .overlay(let base, let format, let sizeGiB):
            let path = directory + "/disk\(index).qcow2"
            try await createOverlay(base: base, baseFormat: format, at: path, sizeGiB: sizeGiB, timeLimit: qemuImgTimeLimit)
            return DomainSpec.Disk(path: path, bus: disk.bus)
        case .blank(let size):
            guard size > 0 else { throw ControlError.invalid("blank disk \(index) must be at least 1 GiB, not \(size)") }
            let path = directory + "/disk\(index).qcow2"
            try await createBlankDisk(at: path, sizeGiB: size, timeLimit: qemuImgTimeLimit)
            return DomainSpec.Disk(path: path, bus: disk.bus)
        }
    }
}
