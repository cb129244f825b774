import Foundation
import SFStore
import SFSystem

/// One disk of an instance as its guest sees it: Shaken Fist's entry of the instance view's
/// `disks` (`device`, `bus`, `size`, `blob_uuid`, `snapshot_ignores`).
public struct InstanceDisk: Sendable, Equatable {
    /// Its position in the instance's `disk_spec`, which is also its file (`disk<index>.qcow2`);
    /// the config drive comes after them all.
    public let index: Int
    /// The guest's device name (`vda`, `sdb`, ...), as the domain names it.
    public let device: String
    /// What the instance asked for; nil for the config drive.
    public let spec: DiskSpec?
    public let bus: DiskBus
    /// GiB; nil when the disk keeps its base's size, and for the config drive.
    public let sizeGiB: Int?
    /// The blob the disk starts from, when its base names one (`sf://blob/<uuid>`).
    public let blobUUID: UUID?
    /// What a snapshot leaves out (Shaken Fist's `snapshot_ignores`): CD-ROMs and the config drive.
    public let snapshotIgnores: Bool
    /// The config drive.
    public let isConfigDrive: Bool

    /// The bus a disk of `spec` is on: its own (virtio when it names none), except that a CD-ROM
    /// asked on virtio goes on SATA (there is no virtio CD-ROM); nil for a bus sfnode does not offer.
    public static func bus(of spec: DiskSpec) -> DiskBus? {
        guard let bus = spec.bus.map(DiskBus.init(rawValue:)) ?? .virtio else { return nil }
        return spec.type == .cdrom && bus == .virtio ? .sata : bus
    }

    /// The instance's disks in the domain's order: its own, then the config drive, which sfnode
    /// puts last so that the instance's own disks keep their names with or without one. Empty
    /// until the instance is being made on its node, as in Shaken Fist's view.
    public static func of(_ instance: Instance) -> [InstanceDisk] {
        guard ![.initial, .preflight, .initialError, .preflightError].contains(instance.state) else { return [] }
        return layout(of: instance)
    }

    /// The disks the instance's domain has, or will have, whatever its state.
    public static func layout(of instance: Instance) -> [InstanceDisk] {
        let own = instance.diskSpec.enumerated().compactMap { index, spec in bus(of: spec).map { (index, spec, $0) } }
        var buses = own.map(\.2)
        let configDrive = instance.config.configDrive == .openstackDisk
        if configDrive { buses.append(.virtio) }
        let names = DiskBus.deviceNames(buses)
        var disks = zip(own, names).map { entry, device in
            let (index, spec, bus) = entry
            var blob: UUID?
            if let base = spec.base, case .blob(let uuid)? = try? ImageReference.parse(base, imageDownloadURL: "") { blob = uuid }
            return InstanceDisk(
                index: index, device: device, spec: spec, bus: bus, sizeGiB: spec.size, blobUUID: blob, snapshotIgnores: spec.type == .cdrom,
                isConfigDrive: false)
        }
        if configDrive, let device = names.last {
            disks.append(
                InstanceDisk(
                    index: instance.diskSpec.count, device: device, spec: nil, bus: .virtio, sizeGiB: nil, blobUUID: nil, snapshotIgnores: true,
                    isConfigDrive: true))
        }
        return disks
    }
}
