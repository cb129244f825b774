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

/// Disk buses (an allow-list).
public enum DiskBus: String, Sendable, CaseIterable, Codable {
    /// Paravirtual block device (`vdX`).
    case virtio
    /// AHCI SATA (`sdX`).
    case sata
    /// Legacy IDE (`hdX`), at most four disks.
    case ide
}
