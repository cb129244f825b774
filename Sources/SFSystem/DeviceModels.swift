/// The devices sfnode lets a guest have: allow-lists shared by the use cases (which refuse anything
/// else when a request arrives) and the libvirt module (which writes them into domain XML).

/// NIC models (an allow-list: anything else is refused).
public enum NICModel: String, Sendable, CaseIterable, Codable {
    /// Paravirtual NIC: fastest, needs a virtio driver in the guest.
    case virtio
    /// Emulated Intel e1000, for guests without virtio drivers.
    case e1000
    /// Emulated Realtek RTL8139, for very old guests.
    case rtl8139
    /// Emulated NE2000 (PCI), for guests older still.
    case ne2kPCI = "ne2k_pci"
    /// Emulated AMD PCnet.
    case pcnet
    /// Emulated Intel i8255x (eepro100) variants.
    case i82551, i82557b, i82559er
}

/// Video models (an allow-list).
public enum VideoModel: String, Sendable, CaseIterable, Codable {
    /// Emulated Cirrus Logic card, for old guests.
    case cirrus
    /// Standard VGA.
    case vga
    /// Paravirtual GPU.
    case virtio
    /// QXL, for SPICE.
    case qxl
    /// No video device (the guest has only its serial console).
    case none
}

/// Disk buses (an allow-list). NVMe, which Shaken Fist names too, is not offered: libvirt 9 (the
/// distribution's) has no NVMe disk bus.
public enum DiskBus: String, Sendable, CaseIterable, Codable {
    /// Paravirtual block device (`vdX`).
    case virtio
    /// AHCI SATA (`sdX`).
    case sata
    /// SCSI on a virtio-scsi controller (`sdX`).
    case scsi
    /// A USB mass-storage device (`sdX`).
    case usb
    /// Legacy IDE (`hdX`), at most four disks; refused in requests, as Shaken Fist refuses it.
    case ide

    /// The guest-visible name prefix libvirt expects for targets on this bus: SATA, SCSI and USB
    /// disks share the `sd` names.
    public var targetPrefix: String {
        switch self {
        case .virtio: return "vd"
        case .sata, .scsi, .usb: return "sd"
        case .ide: return "hd"
        }
    }

    /// The device names of disks on `buses`, in order: each prefix counts from `a` (`vda`, `vdb`,
    /// `sda`, ...). The one rule the domain XML and the instance view name disks by.
    public static func deviceNames(_ buses: [DiskBus]) -> [String] {
        var used: [String: Int] = [:]
        return buses.map { bus in
            let slot = used[bus.targetPrefix, default: 0]
            used[bus.targetPrefix] = slot + 1
            return bus.targetPrefix + Self.letters(slot)
        }
    }

    /// `a` … `z`, then `aa`, `ab`, … as libvirt spells the 27th disk on a bus.
    private static func letters(_ index: Int) -> String {
        let letter = String(UnicodeScalar(UInt8(ascii: "a") + UInt8(index % 26)))
        return index < 26 ? letter : letters(index / 26 - 1) + letter
    }
}
