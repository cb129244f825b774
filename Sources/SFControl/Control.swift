import Foundation
import Logging
import SFBlobs
import SFStore
import SFSystem

/// The use cases of an sfnode cloud: what a user can ask for, checked, stored and handed to the
/// agents as jobs. The command line and the REST API are thin layers over this; neither talks to
/// the agent other than through the jobs queued here.
///
/// Every method validates its input before it touches the store, stores the object and queues its
/// job in one transaction (so a crash never leaves an object without its job), and throws only
/// ``ControlError``.
public struct Control: Sendable {
    let store: any NodeStore
    public let settings: ControlSettings
    let logger: Logger
    /// The requests waiting for their jobs, shared by the copies of this Control.
    let waiters = JobWaiters()
    /// Which nodes are missing, cached for the views.
    let nodeStates = MissingNodeCache()
    /// The other nodes, for what only an instance's own node has (its console log); nil when this
    /// process has no mesh, and then only this node's instances' consoles can be read.
    let peers: PeerClient?

    public init(store: any NodeStore, settings: ControlSettings = ControlSettings(), peers: PeerClient? = nil, logger: Logger) {
        self.store = store
        self.settings = settings
        self.peers = peers
        self.logger = logger
    }

    /// Runs `body`, which waits for a job of `namespace`'s, in one of the namespace's
    /// ``NamespaceQuotas/waitingRequests`` places (429 when none is free; `system` is not limited).
    public func waitingForJobs<T: Sendable>(namespace: String, _ body: () async throws -> T) async throws -> T {
        guard namespace != Namespace.system else { return try await body() }
        return try await waiters.waiting(namespace: namespace, limit: settings.quotas.waitingRequests, body)
    }

    /// Runs `body`, turning whatever it throws into a ``ControlError``.
    func controlled<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw ControlError(classifying: error)
        }
    }
}

/// The settings the use cases need.
public struct ControlSettings: Sendable, Equatable {
    /// The namespace objects go to when a request names none; `system` is the admin namespace.
    public var defaultNamespace = Namespace.system
    /// How many vCPUs placement lets a node run per CPU thread (Shaken Fist's CPU_OVERCOMMIT_RATIO).
    public var cpuOvercommit = 16.0
    /// How much instance memory placement lets a node have per MiB of its own (RAM_OVERCOMMIT_RATIO).
    public var memoryOvercommit = 1.5
    /// A node that has not checked in for this long gets no new instances (Shaken Fist: 120 s).
    public var checkInTimeout: Duration = .seconds(120)
    /// How long a power operation waits for its job before answering: Shaken Fist answers when it
    /// is done, and a poweron that builds a domain takes seconds.
    public var powerWait: Duration = .seconds(60)
    /// Where short image names such as `debian:11` are found: `<url>/<name>/latest.qcow2`.
    public var imageDownloadURL = "https://images.shakenfist.com"
    /// This node's storage path (`SFNODE_STORAGE_PATH`), under which the agent keeps each instance's
    /// directory (``InstanceFiles``): the console log is read from there.
    public var storagePath = "/var/lib/sfnode/instances"
    /// This node's name (`SFNODE_NODE_NAME`): only the console of an instance placed here can be
    /// read here. Empty when this process is not on a node (reading a console then fails).
    public var nodeName = ""
    /// What each namespace may hold and queue (the admin is exempt).
    public var quotas = NamespaceQuotas()
    /// The prefix of the networks' namespaces on this node (`SFNODE_NAME_PREFIX`), where ping runs.
    public var networkNamespacePrefix = "sfnode-"
    /// Pings that may run at once in this process (`SFNODE_PINGS_AT_ONCE`); each holds a thread.
    public var pingsAtOnce = 8
    /// The echo requests of one network ping and the gap between them (Shaken Fist's `ping -c 10`).
    public var pingCount = 10
    public var pingInterval: Duration = .seconds(1)
    /// Extra DNS records one network may have (`SFNODE_NETWORK_DNS_ENTRIES`).
    public var networkDNSEntries = 256

    public init() {}
}
