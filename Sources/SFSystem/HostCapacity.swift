import Foundation

/// What this machine has to give guests, as a node reports it at check-in.
public enum HostCapacity {
    /// CPU threads online.
    public static var cpus: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Physical memory in MiB.
    public static var memoryMiB: Int { Int(ProcessInfo.processInfo.physicalMemory / (1 << 20)) }

    /// The size in GiB of the filesystem holding `path` (or its nearest existing ancestor), nil when
    /// it cannot be read.
    public static func diskGiB(at path: String) -> Int? {
        var candidate = path
        while !FileManager.default.fileExists(atPath: candidate), candidate != "/" {
            candidate = (candidate as NSString).deletingLastPathComponent
            if candidate.isEmpty { candidate = "/" }
        }
        guard let size = (try? FileManager.default.attributesOfFileSystem(forPath: candidate))?[.systemSize] as? NSNumber else {
            return nil
        }
        return Int(size.uint64Value >> 30)
    }
}
