import Foundation

/// Where an instance's files live on its node: one directory per instance under the storage path,
/// holding its disks, its config drive and its console log.
///
/// One rule for the agent, which writes these files, and for the use cases, which read the console
/// log for the API and the command line: SFControl cannot depend on SFAgent, so the rule lives here.
public struct InstanceFiles: Sendable, Equatable {
    /// The node's storage path (`SFNODE_STORAGE_PATH`).
    public var storagePath: String

    /// The files of instances under `storagePath`.
    public init(storagePath: String) {
        self.storagePath = storagePath
    }

    /// The instance's directory of disks, config drive and console log.
    public func directory(of instance: UUID) -> String { storagePath + "/" + instance.lowercasedString }

    /// The guest's serial console, as virtlogd writes it (Shaken Fist's `console.log`).
    public func consoleLog(of instance: UUID) -> String { directory(of: instance) + "/console.log" }

    /// The instance's config drive, a config-2 ISO 9660 image attached as a read-only disk.
    public func configDrive(of instance: UUID) -> String { directory(of: instance) + "/config-drive.iso" }

    /// A UEFI instance's firmware variables (NVRAM), which libvirt makes from OVMF's template.
    public func firmwareVariables(of instance: UUID) -> String { directory(of: instance) + "/nvram.fd" }
}
