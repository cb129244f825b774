import Foundation
import SFStore
import SFSystem

/// What a user asks for when creating an instance (Shaken Fist's create body, typed).
public struct InstanceRequest: Sendable, Equatable {
    public var name: String
    public var cpus: Int
    /// Memory in MiB.
    public var memoryMiB: Int
    public var disks: [DiskSpec]
    public var networks: [NetworkRequest]
    public var video: VideoSpec?
    /// The namespace; nil is the default (`system`).
    public var namespace: String?
    /// A node the instance must go to (Shaken Fist's `placed_on`, the client's `force_placement`).
    public var forcePlacement: String?
    /// Metadata to set with it; `tags` (a list) and `affinity` (tag → integer) steer placement.
    public var metadata: [String: JSONValue]
    /// The ssh key, user data and config drive the guest is given, and machine options.
    public var config: InstanceConfig
    public var requestID: String?

    public init(
        name: String, cpus: Int, memoryMiB: Int, disks: [DiskSpec], networks: [NetworkRequest] = [], video: VideoSpec? = nil,
        namespace: String? = nil, forcePlacement: String? = nil, metadata: [String: JSONValue] = [:],
        config: InstanceConfig = InstanceConfig(), requestID: String? = nil
    ) {
        self.name = name
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.disks = disks
        self.networks = networks
        self.video = video
        self.namespace = namespace
        self.forcePlacement = forcePlacement
        self.metadata = metadata
        self.config = config
        self.requestID = requestID
    }
}

/// One network interface asked for.
public struct NetworkRequest: Sendable, Equatable {
    /// The network's UUID or unique name.
    public var network: String
    /// A specific address, `none` for no address, or nil for the lowest free one.
    public var address: String?
    public var macaddr: String?
    /// The NIC model; nil is virtio.
    public var model: String?
    /// Whether to give the interface a floating address as soon as it exists.
    public var float: Bool

    public init(network: String, address: String? = nil, macaddr: String? = nil, model: String? = nil, float: Bool = false) {
        self.network = network
        self.address = address
        self.macaddr = macaddr
        self.model = model
        self.float = float
    }

    /// sf-client's `-n NET[@ADDR]` (or `-f NET[@ADDR]` with `float`).
    public static func parse(commandLine text: String, float: Bool = false) throws -> NetworkRequest {
        let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let network = parts.first, !network.isEmpty else {
            throw ControlError.invalid("network '\(text)' names no network; use NET or NET@ADDRESS")
        }
        return NetworkRequest(network: network, address: parts.count == 2 ? parts[1] : nil, float: float)
    }
}

extension DiskSpec {
    /// sf-client's `-d SIZE[@BASE]` (a blank disk of SIZE GiB, or a disk of SIZE GiB over BASE).
    public static func parse(commandLine text: String) throws -> DiskSpec {
        let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let size = Int(parts[0]) else {
            throw ControlError.invalid("disk '\(text)': '\(parts[0])' is not a size in GiB; use SIZE or SIZE@BASE, such as 8@debian:12")
        }
        return DiskSpec(base: parts.count == 2 ? parts[1] : nil, size: size)
    }
}

/// The limits of what one instance may ask for.
public enum InstanceLimits {
    public static let cpus = 1...64
    /// Memory in MiB.
    public static let memoryMiB = 64...(1 << 20)
    /// One disk, in GiB.
    public static let diskGiB = 1...16384
    public static let disks = 1...16
    public static let interfaces = 0...16
    /// Decoded user data, in bytes (Nova's limit).
    public static let userDataBytes = 65_535
    /// The largest NVRAM template: OVMF's variable stores are 128 KiB and 528 KiB, so this leaves
    /// room for other builds while keeping a copy per instance small.
    public static let nvramTemplateBytes: Int64 = 16 << 20
    /// An `affinity` score (tag → score metadata steering placement). Shaken Fist takes any Python
    /// integer; sfnode bounds them so that a sum over every tagged instance stays meaningful, and
    /// ±10 000 leaves room for any weighting of "prefer" against "avoid" a user needs.
    public static let affinityScore = -10_000...10_000
    /// Shaken Fist's side channel names.
    public static let sideChannels: Set<String> = ["sf-agent", "sf-agent2"]
}
