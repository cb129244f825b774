#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import SFSystem

/// A node's settings, for every part of sfnode that runs there (the agent, the API, the user commands
/// and the use cases): a JSON file, then `SFNODE_<UPPER_SNAKE>` environment variables over it.
///
/// | JSON key | environment | default |
/// | --- | --- | --- |
/// | `nodeName` | `SFNODE_NODE_NAME` | the host name |
/// | `hostNamespace` | `SFNODE_HOST_NAMESPACE` | none: the root namespace (empty text means none) |
/// | `virtualizationType` | `SFNODE_VIRTUALIZATION_TYPE` | `auto` (`kvm`, `qemu`, `auto`) |
/// | `storePath` | `SFNODE_STORE_PATH` | `/var/lib/sfnode/sfnode.sqlite` |
/// | `storeURL` | `SFNODE_STORE_URL` | none: the SQLite store at `storePath`; `postgres://USER:PASSWORD@HOST:PORT/DB` shares a PostgreSQL store |
/// | `storagePath` | `SFNODE_STORAGE_PATH` | `/var/lib/sfnode/instances` |
/// | `floatingRange` | `SFNODE_FLOATING_RANGE` | `192.168.20.0/24` |
/// | `egressInterface` | `SFNODE_EGRESS_INTERFACE` | none: the interface of the default route |
/// | `isNetworkNode` | `SFNODE_IS_NETWORK_NODE` | `true` (a single node is its own network node) |
/// | `meshAddress` | `SFNODE_MESH_ADDRESS` | none: a single node needs no mesh |
/// | `meshInterface` | `SFNODE_MESH_INTERFACE` | none: the kernel routes to the other nodes |
/// | `consoleAddress` | `SFNODE_CONSOLE_LISTEN` | 127.0.0.1 (`none`: no console or display ports) |
/// | `mtu` | `SFNODE_MTU` | `1450` (1500 less VXLAN's 50 bytes) |
/// | `logLevel` | `SFNODE_LOG_LEVEL` | `info` |
/// | `libvirtURI` | `SFNODE_LIBVIRT_URI` | `qemu:///system` |
/// | `cpuOvercommit` | `SFNODE_CPU_OVERCOMMIT` | `16` vCPUs per CPU thread (placement) |
/// | `memoryOvercommit` | `SFNODE_MEMORY_OVERCOMMIT` | `1.5` (placement) |
/// | `imageDownloadURL` | `SFNODE_IMAGE_DOWNLOAD_URL` | `https://images.shakenfist.com` (short names such as `debian:12`) |
/// | `fetchAllow` | `SFNODE_FETCH_ALLOW` | empty: IPv4/IPv6 ranges opened from the built-in refusals (loopback, private ...) |
/// | `fetchDeny` | `SFNODE_FETCH_DENY` | empty: IPv4/IPv6 ranges refused on top of the built-in ones |
/// | `imageCacheGiB` | `SFNODE_IMAGE_CACHE_GIB` | `100`: above this the cache evicts unused images, oldest used first |
/// | `namePrefix` | `SFNODE_NAME_PREFIX` | `sfnode-`: network namespaces and domains (tests set their own) |
/// | `tapPrefix` | `SFNODE_TAP_PREFIX` | `sfi`: taps (at most 9 bytes) |
/// | `jobLeaseSeconds` | `SFNODE_JOB_LEASE_SECONDS` | `30`: how long a dead agent's job waits before another takes it |
/// | `apiListen` | `SFNODE_API_LISTEN` | `127.0.0.1:13000`: where `sfnode serve` and `sfnode api` listen |
/// | `metricsListen` | `SFNODE_METRICS_LISTEN` | `127.0.0.1:13001`: where `sfnode agent` serves `/metrics` (unauthenticated); `off` for nowhere |
/// | `metrics` | `SFNODE_METRICS` | `true`: `false` keeps no metrics (no `/metrics` on the API or the agent) |
/// | `clientConfig` | `SFNODE_CLIENT_CONFIG` | `/etc/sf/shakenfist.json`: the client configuration `sfnode serve` writes |
/// | `eventRetentionDays` | `SFNODE_EVENT_RETENTION_DAYS` | `30`: events older than this are pruned |
/// | `eventMaxPerObject` | `SFNODE_EVENT_MAX_PER_OBJECT` | `10000`: an object's older events beyond this are pruned |
/// | `jobRetentionDays` | `SFNODE_JOB_RETENTION_DAYS` | `7`: finished jobs are pruned this long after they finished |
/// | `deletedRetentionDays` | `SFNODE_DELETED_RETENTION_DAYS` | `7`: deleted objects stay readable by UUID this long |
/// | `pruneIntervalMinutes` | `SFNODE_PRUNE_INTERVAL_MINUTES` | `60`: how often the agent prunes the store |
/// | `fetchDeadlineSeconds` | `SFNODE_FETCH_DEADLINE_SECONDS` | `3600`: one image fetch, retries and body included |
/// | `fetchMinRateKiB` | `SFNODE_FETCH_MIN_RATE_KIB` | `16`: KiB/s a fetch must average over the window (0: no minimum) |
/// | `fetchRateWindowSeconds` | `SFNODE_FETCH_RATE_WINDOW_SECONDS` | `60`: the window that rate is averaged over |
/// | `imageMaxGiB` | `SFNODE_IMAGE_MAX_GIB` | `64`: the largest image fetched, unpacked or converted |
/// | `qemuImgTimeoutSeconds` | `SFNODE_QEMU_IMG_TIMEOUT_SECONDS` | `1800`: each qemu-img run, then it is killed |
/// | `apiAuthBodyBytes` … `nodeMissingSeconds` | `SFNODE_API_…`, `SFNODE_LOGIN_…`, `SFNODE_QUOTA_…` | see ``wholeNumberFields`` |
/// | `jobWorkers` | `SFNODE_JOB_WORKERS` | `4`: jobs (other than downloads) run at once, for different objects |
/// | `jobDownloadWorkers` | `SFNODE_JOB_DOWNLOAD_WORKERS` | `4`: artifact.fetch, instance.create and instance.snapshot jobs run at once, beside those |
/// | `jobMaxDeaths` | `SFNODE_JOB_MAX_DEATHS` | `2`: a job in flight when the agent died this often is failed, never run again (1 to 4) |
/// | `dnsZone` | `SFNODE_DNS_ZONE` | `shakenfist`: instances resolve as `<name>.<namespace>.<zone>` on networks with DNS |
/// | `dnsServer` | `SFNODE_DNS_SERVER` | `auto`: the first non-loopback nameserver of /etc/resolv.conf; `none` or an IPv4 address |
/// | `pingsAtOnce` | `SFNODE_PINGS_AT_ONCE` | `8`: network pings running at once (each holds a thread for ~10 s) |
/// | `networkDNSEntries` | `SFNODE_NETWORK_DNS_ENTRIES` | `256`: extra DNS records (`POST /networks/<ref>/dns`) per network |
/// | `namespaceThreads` | `SFNODE_NAMESPACE_THREADS` | `64`: network namespaces' threads kept between uses (least recently used go first) |
/// | `peerPort` | `SFNODE_PEER_PORT` | `13001`: where each node serves blobs and console logs to the others, on its mesh address |
///
/// The file is found at the `--config` path, else `$SFNODE_CONFIG`, else ``defaultPath``.
public struct NodeConfiguration: Codable, Sendable, Equatable {
    /// How guests are run: `kvm`, `qemu` (TCG) or `auto` (SFSystem's ``VirtualizationType``).
    public typealias Virtualization = VirtualizationType

    /// This node's name in the cluster.
    public var nodeName: String
    /// The network namespace that stands for the host's own network, nil for the root namespace.
    /// Tests run a whole node inside a namespace this way.
    public var hostNamespace: String?
    /// How guests are run.
    public var virtualizationType: Virtualization
    /// The SQLite database holding the node's desired and observed state, when ``storeURL`` is nil.
    public var storePath: String
    /// A `postgres://` URL: the store is the cluster's PostgreSQL database instead of the SQLite
    /// file. It may hold a password, so it is never logged (the store logs its redacted form).
    public var storeURL: String?

    /// What the store opens: ``storeURL`` when set, else ``storePath``.
    public var storeLocation: String { storeURL ?? storePath }
    /// The directory holding instance disks and other per-instance files.
    public var storagePath: String
    /// The network floating addresses are taken from.
    ///
    /// The default, 192.168.20.0/24, is Shaken Fist's: private (RFC 1918) and rarely a LAN's own
    /// range, so a test node works out of the box without clashing with the usual 192.168.0/1.x
    /// home networks. Floating addresses are only reachable from elsewhere when this range is
    /// routed to the network node, so production must set it to its own routed range.
    public var floatingRange: IPv4Prefix
    /// The interface floating traffic leaves by; nil picks the interface of the default route.
    public var egressInterface: String?
    /// Whether this node carries the cluster's floating and NAT traffic.
    public var isNetworkNode: Bool
    /// This node's address on the mesh, the underlay VXLANs run over: other nodes send this node's
    /// share of a network's traffic there. Nil on a single node, which has no one to send to.
    public var meshAddress: IPv4Address?
    /// The interface holding ``meshAddress``, which VXLANs are bound to; nil lets the kernel route.
    public var meshInterface: String?
    /// Where instances' serial consoles (telnet) and displays (VNC, SPICE) listen, each on a port
    /// of its own (`SFNODE_CONSOLE_LISTEN`): loopback unless the operator opens it; `none` keeps
    /// consoles readable through their logs only.
    public var consoleAddress: IPv4Address? = IPv4Address(0x7f00_0001)
    /// The MTU of instance-facing interfaces. 1450 leaves room for VXLAN's 50-byte encapsulation on
    /// a 1500-byte underlay.
    public var mtu: Int
    /// The least severe level logged.
    public var logLevel: Logger.Level
    /// The libvirt connection URI.
    public var libvirtURI: String
    /// vCPUs placement lets a node run per CPU thread.
    public var cpuOvercommit = 16.0
    /// Instance memory placement lets a node have per MiB of its own.
    public var memoryOvercommit = 1.5
    /// Where short image names are found: `<url>/<name>/latest.qcow2`.
    public var imageDownloadURL = "https://images.shakenfist.com"
    /// Ranges image downloads may reach although the built-in rules refuse them (loopback,
    /// private and the other ranges of SFBlobs' `DestinationRules.refusedByDefault`) when the
    /// entry is at least as long as the built-in range.
    public var fetchAllow: [IPRange] = []
    /// Ranges image downloads may not reach, checked on every resolved address and redirect, on top
    /// of the built-in refusals; the longest matching range of the two lists decides, and a deny
    /// entry wins over an allow entry of the same length.
    public var fetchDeny: [IPRange] = []
    /// The image cache's high-water mark in GiB.
    public var imageCacheGiB = 100
    /// The prefix of the network namespaces and domains the agent makes; nil is the agent's default.
    public var namePrefix: String?
    /// The prefix of the taps the agent makes (at most 9 bytes); nil is the agent's default.
    public var tapPrefix: String?
    /// How long a claimed job stays the agent's without a heartbeat.
    public var jobLeaseSeconds = 30
    // Job concurrency and containment (the agent's job runner).
    /// How many jobs other than downloads run at once (jobs for one object always run one at a time).
    public var jobWorkers = 4
    /// How many jobs that may download (artifact.fetch, instance.create) run at once, in their own
    /// lane, so that slow downloads never hold the workers a network.create needs.
    public var jobDownloadWorkers = 4
    /// How many times a job may be in flight when the agent dies before it is failed for good; below
    /// systemd's StartLimitBurst=5, so that no single job keeps the agent down.
    public var jobMaxDeaths = 2
    /// Where the REST API listens, `HOST:PORT` (Shaken Fist's port, on loopback).
    public var apiListen = "127.0.0.1:13000"
    /// Where `sfnode agent` serves `/metrics`, `HOST:PORT`, or nil for nowhere. It has no
    /// authentication (Prometheus scrapes it as it is), so it is on loopback until an operator opens
    /// it. The API serves the same figures to the system namespace.
    public var metricsListen: String? = "127.0.0.1:13001"
    /// Whether the process keeps metrics at all: false serves no `/metrics` (API or listener) and
    /// counts no requests.
    public var metrics = true
    /// Where `sfnode serve` writes the local client's configuration (the client reads it there).
    public var clientConfig = "/etc/sf/shakenfist.json"
    /// Days events are kept (Shaken Fist keeps its event log for a set period too).
    public var eventRetentionDays = 30
    /// The most events kept per object, the newest; one busy object cannot fill the store.
    public var eventMaxPerObject = 10_000
    /// Days finished (succeeded or failed) jobs are kept.
    public var jobRetentionDays = 7
    /// Days deleted instances, networks, artifacts and blobs stay readable by UUID before their
    /// rows go (Shaken Fist: an hour).
    public var deletedRetentionDays = 7
    /// Minutes between two prunes of the store.
    public var pruneIntervalMinutes = 60
    // Limits on image fetches and preparation: a tenant names the server and the file.
    /// The wall-clock limit of one image fetch, retries and body included.
    public var fetchDeadlineSeconds = 3600
    /// The least average rate of a fetch over ``fetchRateWindowSeconds``, in KiB/s; 0 for none.
    public var fetchMinRateKiB = 16
    /// The window a fetch's rate is averaged over.
    public var fetchRateWindowSeconds = 60
    /// The largest image fetched, unpacked or converted, in GiB.
    public var imageMaxGiB = 64
    /// The wall-clock limit of each qemu-img run.
    public var qemuImgTimeoutSeconds = 1800

    // The API's limits on what a request or client may cost, and each namespace's quotas (the
    // admin is exempt): see ``wholeNumberFields`` for their settings and ranges.
    /// The largest `POST /auth` body, in bytes.
    public var apiAuthBodyBytes = 4096
    /// The largest JSON body of any other route, in bytes (upload chunks take 4 MiB).
    public var apiJSONBodyBytes = 1 << 20
    /// How deeply a JSON body may nest.
    public var apiJSONDepth = 32
    /// Seconds before an idle API connection is closed.
    public var apiIdleTimeoutSeconds = 60
    /// Seconds an API connection has to send a whole request head.
    public var apiHeaderTimeoutSeconds = 30
    /// Open API connections at most.
    public var apiMaxConnections = 1024
    /// Failed logins of one namespace per login window before 429.
    public var loginFailuresPerNamespace = 10
    /// Failed logins from one client address per login window before 429.
    public var loginFailuresPerAddress = 30
    /// The window failed logins are counted in, in seconds.
    public var loginWindowSeconds = 60
    /// bcrypt checks one namespace may have waiting at once before 429.
    public var loginQueuePerNamespace = 8
    /// Keys one namespace may have.
    public var keysPerNamespace = 32
    /// Live instances per namespace.
    public var quotaInstances = 100
    /// vCPUs per namespace.
    public var quotaVCPUs = 400
    /// Instance memory per namespace, in GiB.
    public var quotaMemoryGiB = 1024
    /// Instance disk per namespace, in GiB.
    public var quotaDiskGiB = 10_240
    /// Bytes of artifacts and uploads per namespace, in GiB.
    public var quotaBlobGiB = 500
    /// Uploads in progress per namespace.
    public var quotaPendingUploads = 10
    /// The largest single upload, in GiB.
    public var uploadMaxGiB = 100
    /// Live networks per namespace.
    public var quotaNetworks = 50
    /// Floating addresses (floats and NAT gateways) per namespace.
    public var quotaFloatingAddresses = 50
    /// Jobs queued and not yet started per namespace.
    public var quotaQueuedJobs = 200
    /// Metadata keys per object.
    public var quotaMetadataKeys = 256
    /// Namespaces one namespace may trust (`SFNODE_QUOTA_TRUSTS`).
    public var quotaTrusts = 64
    /// Versions one snapshot artifact may keep (`max_versions` of a snapshot).
    public var quotaSnapshotVersions = 100
    /// Requests of one namespace waiting at once for their jobs (`SFNODE_QUOTA_WAITING_REQUESTS`).
    public var quotaWaitingRequests = 16
    /// Seconds without a check-in after which a node is missing: placed nothing, its instances'
    /// power state shown as unknown (`SFNODE_NODE_MISSING_SECONDS`).
    public var nodeMissingSeconds = 120
    /// The port every node of the cluster serves blob data and console logs to the others on, at
    /// its mesh address (`SFNODE_PEER_PORT`); the same on every node.
    public var peerPort = 13001

    // Network DNS and ping (issue 14).
    /// The zone instance names resolve in on networks with DNS: `<instance>.<namespace>.<zone>`.
    public var dnsZone = "shakenfist"
    /// Where networks with DNS forward names outside their zone: `auto` (the first nameserver of
    /// /etc/resolv.conf that is not loopback, read when the agent starts), `none`, or an address.
    public var dnsServer = "auto"
    /// How many network pings may run at once.
    public var pingsAtOnce = 8
    /// How many extra DNS records one network may have.
    public var networkDNSEntries = 256
    /// How many network namespaces' threads the agent keeps between uses; past that the least
    /// recently used goes, so that a network node's threads do not grow with its networks.
    public var namespaceThreads = 64

    /// ``dnsServer`` resolved: nil for `none`, or for `auto` when resolv.conf names no usable server.
    public func resolvedDNSServer(resolvConf: String = "/etc/resolv.conf") -> IPv4Address? {
        switch dnsServer {
        case "none": return nil
        case "auto": return Self.firstNameserver(in: (try? String(contentsOfFile: resolvConf, encoding: .utf8)) ?? "")
        default: return IPv4Address(dnsServer)
        }
    }

    /// The first `nameserver` line's IPv4 address that is not loopback (a local stub resolver such
    /// as systemd-resolved's 127.0.0.53 is unreachable from a network's namespace).
    public static func firstNameserver(in resolvConf: String) -> IPv4Address? {
        for line in resolvConf.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0] == "nameserver", let address = IPv4Address(String(words[1])) else { continue }
            if address.octets[0] != 127 { return address }
        }
        return nil
    }

    /// Where the configuration file is unless `--config` or `SFNODE_CONFIG` says otherwise.
    public static let defaultPath = "/etc/sfnode/agent.json"
    /// The floating range used unless configured; see ``floatingRange``.
    public static let defaultFloatingRange = "192.168.20.0/24"
    /// The environment variable naming the configuration file.
    public static let pathVariable = "SFNODE_CONFIG"

    private static let defaultFloatingPrefix: IPv4Prefix = {
        guard let prefix = IPv4Prefix(defaultFloatingRange) else { preconditionFailure("the default floating range parses") }
        return prefix
    }()

    /// The defaults, with `nodeName` as this node's name.
    public static func defaults(nodeName: String = NodeConfiguration.hostname()) -> NodeConfiguration {
        NodeConfiguration(
            nodeName: nodeName, hostNamespace: nil, virtualizationType: .auto,
            storePath: "/var/lib/sfnode/sfnode.sqlite", storagePath: "/var/lib/sfnode/instances",
            floatingRange: defaultFloatingPrefix,
            egressInterface: nil, isNetworkNode: true, mtu: 1450, logLevel: .info, libvirtURI: "qemu:///system")
    }

    /// Every setting given explicitly.
    public init(
        nodeName: String, hostNamespace: String?, virtualizationType: Virtualization, storePath: String,
        storagePath: String, floatingRange: IPv4Prefix, egressInterface: String?, isNetworkNode: Bool, mtu: Int,
        logLevel: Logger.Level, libvirtURI: String, meshAddress: IPv4Address? = nil, meshInterface: String? = nil
    ) {
        self.meshAddress = meshAddress
        self.meshInterface = meshInterface
        self.nodeName = nodeName
        self.hostNamespace = hostNamespace
        self.virtualizationType = virtualizationType
        self.storePath = storePath
        self.storagePath = storagePath
        self.floatingRange = floatingRange
        self.egressInterface = egressInterface
        self.isNetworkNode = isNetworkNode
        self.mtu = mtu
        self.logLevel = logLevel
        self.libvirtURI = libvirtURI
    }

    // MARK: Loading

    /// The configuration file's path, and whether it was named explicitly (`--config` or
    /// `SFNODE_CONFIG`) rather than being the default.
    public static func configurationPath(
        commandLine: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> (path: String, isExplicit: Bool) {
        if let commandLine, !commandLine.isEmpty { return (commandLine, true) }
        if let fromEnvironment = environment[pathVariable], !fromEnvironment.isEmpty { return (fromEnvironment, true) }
        return (defaultPath, false)
    }

    /// Loads the configuration: defaults, then the file, then the environment.
    ///
    /// A missing file at the default path means defaults; a missing file that was named explicitly
    /// is an error, because a mistyped `--config` must not silently run with defaults.
    public static func load(
        commandLinePath: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
        defaultNodeName: String = NodeConfiguration.hostname()
    ) throws -> NodeConfiguration {
        let (path, isExplicit) = configurationPath(commandLine: commandLinePath, environment: environment)
        var configuration = defaults(nodeName: defaultNodeName)
        if FileManager.default.fileExists(atPath: path) {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: path))
            } catch {
                throw ConfigurationError.unreadableFile(path: path, reason: "\(error.localizedDescription)")
            }
            configuration = try decode(json: data, source: path, defaults: configuration)
        } else if isExplicit {
            throw ConfigurationError.unreadableFile(path: path, reason: "no such file")
        }
        try configuration.applyEnvironment(environment)
        if !configuration.isNetworkNode && configuration.meshAddress == nil {
            throw ConfigurationError.missing(
                setting: "SFNODE_MESH_ADDRESS (meshAddress)",
                reason: "when SFNODE_IS_NETWORK_NODE is false: the network node and the other nodes reach this one there")
        }
        return configuration
    }

    /// `defaults` with the settings in the JSON object `data` over them; `source` names the file in errors.
    public static func decode(json data: Data, source: String, defaults: NodeConfiguration) throws -> NodeConfiguration {
        let decoder = JSONDecoder()
        decoder.userInfo[defaultsKey] = DecodingDefaults(configuration: defaults, source: source)
        do {
            return try decoder.decode(NodeConfiguration.self, from: data)
        } catch let error as ConfigurationError {
            throw error
        } catch DecodingError.dataCorrupted(let context) {
            let underlying = context.underlyingError.map { " (\($0.localizedDescription))" } ?? ""
            throw ConfigurationError.malformedFile(path: source, reason: "not valid JSON\(underlying)")
        } catch {
            throw ConfigurationError.malformedFile(path: source, reason: "\(error)")
        }
    }

    /// Applies every `SFNODE_<UPPER_SNAKE>` variable present in `environment`.
    public mutating func applyEnvironment(_ environment: [String: String]) throws {
        for field in Self.fields {
            guard let value = environment[field.environmentName] else { continue }
            do {
                try field.apply(&self, value)
            } catch let invalid as InvalidValue {
                throw ConfigurationError.invalidValue(setting: field.environmentName, value: value, reason: invalid.reason)
            }
        }
    }

    /// The host name, as `gethostname(2)` reports it; `localhost` if that fails.
    public static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }

    // MARK: Codable

    /// Decodes the file format: every key optional (absent keys keep the defaults), unknown keys
    /// refused (a misspelt key must not be silently ignored), and each value checked as the
    /// environment's text is. Defaults come from the decoder's user info when ``decode(json:source:defaults:)``
    /// set them, else from ``defaults(nodeName:)``.
    public init(from decoder: any Decoder) throws {
        let context = decoder.userInfo[Self.defaultsKey] as? DecodingDefaults
        var configuration = context?.configuration ?? Self.defaults()
        let source = context?.source ?? "configuration"
        let container = try decoder.container(keyedBy: AnyKey.self)
        let known = Dictionary(uniqueKeysWithValues: Self.fields.map { ($0.key, $0) })
        for key in container.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) {
            guard let field = known[key.stringValue] else {
                throw ConfigurationError.unknownKey(path: source, key: key.stringValue, known: Self.fields.map(\.key))
            }
            let scalar: JSONScalar
            do {
                scalar = try container.decode(JSONScalar.self, forKey: key)
            } catch {
                throw ConfigurationError.invalidValue(
                    setting: "\(source): \(key.stringValue)", value: "(not a scalar)",
                    reason: "must be a string, a whole number or a boolean")
            }
            do {
                try field.apply(&configuration, scalar.text)
            } catch let invalid as InvalidValue {
                throw ConfigurationError.invalidValue(
                    setting: "\(source): \(key.stringValue)", value: scalar.text ?? "null", reason: invalid.reason)
            }
        }
        self = configuration
    }

    /// Encodes the file format, every setting present except the absent optional ones.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: AnyKey.self)
        try container.encode(nodeName, forKey: AnyKey("nodeName"))
        try container.encodeIfPresent(hostNamespace, forKey: AnyKey("hostNamespace"))
        try container.encode(virtualizationType.rawValue, forKey: AnyKey("virtualizationType"))
        try container.encode(storePath, forKey: AnyKey("storePath"))
        try container.encodeIfPresent(storeURL, forKey: AnyKey("storeURL"))
        try container.encode(storagePath, forKey: AnyKey("storagePath"))
        try container.encode(floatingRange.description, forKey: AnyKey("floatingRange"))
        try container.encodeIfPresent(egressInterface, forKey: AnyKey("egressInterface"))
        try container.encode(isNetworkNode, forKey: AnyKey("isNetworkNode"))
        try container.encodeIfPresent(meshAddress?.description, forKey: AnyKey("meshAddress"))
        try container.encodeIfPresent(meshInterface, forKey: AnyKey("meshInterface"))
        try container.encode(consoleAddress?.description ?? "none", forKey: AnyKey("consoleAddress"))
        try container.encode(mtu, forKey: AnyKey("mtu"))
        try container.encode(logLevel.rawValue, forKey: AnyKey("logLevel"))
        try container.encode(libvirtURI, forKey: AnyKey("libvirtURI"))
        try container.encode(String(cpuOvercommit), forKey: AnyKey("cpuOvercommit"))
        try container.encode(String(memoryOvercommit), forKey: AnyKey("memoryOvercommit"))
        try container.encode(imageDownloadURL, forKey: AnyKey("imageDownloadURL"))
        try container.encode(fetchAllow.map(\.description).joined(separator: ","), forKey: AnyKey("fetchAllow"))
        try container.encode(fetchDeny.map(\.description).joined(separator: ","), forKey: AnyKey("fetchDeny"))
        try container.encode(imageCacheGiB, forKey: AnyKey("imageCacheGiB"))
        try container.encodeIfPresent(namePrefix, forKey: AnyKey("namePrefix"))
        try container.encodeIfPresent(tapPrefix, forKey: AnyKey("tapPrefix"))
        for field in Self.wholeNumberFields { try container.encode(self[keyPath: field.path], forKey: AnyKey(field.key)) }
        try container.encode(dnsZone, forKey: AnyKey("dnsZone"))
        try container.encode(dnsServer, forKey: AnyKey("dnsServer"))
    }

    private static let defaultsKey: CodingUserInfoKey = {
        guard let key = CodingUserInfoKey(rawValue: "sfnode.configuration.defaults") else {
            preconditionFailure("a non-empty CodingUserInfoKey is always valid")
        }
        return key
    }()

    private struct DecodingDefaults: Sendable {
        let configuration: NodeConfiguration
        let source: String
    }

    // MARK: Fields

    /// One setting: its JSON key, its environment variable, and how text becomes its value.
    struct Field: Sendable {
        let key: String
        let environmentName: String
        /// Parses the text (nil for JSON null) into the configuration, throwing ``InvalidValue``.
        let apply: @Sendable (inout NodeConfiguration, String?) throws -> Void
    }

    /// Why a value was refused, completed by the caller with the setting's name and the value.
    struct InvalidValue: Error {
        let reason: String
    }

    /// Every setting, in documentation order. The environment name is `SFNODE_` and the key in upper snake case.
    static let fields: [Field] = [
        Field(key: "nodeName", environmentName: "SFNODE_NODE_NAME") { configuration, text in
            let name = try required(text)
            guard (1...253).contains(name.utf8.count), name.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f })
            else { throw InvalidValue(reason: "is not a node name (1 to 253 printable ASCII characters, no spaces)") }
            configuration.nodeName = name
        },
        Field(key: "hostNamespace", environmentName: "SFNODE_HOST_NAMESPACE") { configuration, text in
            guard let name = text, !name.isEmpty else {
                configuration.hostNamespace = nil
                return
            }
            guard (try? NetworkNamespace.validate(name: name)) != nil else {
                throw InvalidValue(
                    reason: "is not a network namespace name (1 to \(NetworkNamespace.maximumNameLength) printable ASCII "
                        + "characters, no '/', no leading '.')")
            }
            configuration.hostNamespace = name
        },
        Field(key: "virtualizationType", environmentName: "SFNODE_VIRTUALIZATION_TYPE") { configuration, text in
            guard let type = Virtualization(rawValue: try required(text).lowercased()) else {
                throw InvalidValue(reason: "is not one of kvm, qemu, auto")
            }
            configuration.virtualizationType = type
        },
        Field(key: "storePath", environmentName: "SFNODE_STORE_PATH") { configuration, text in
            configuration.storePath = try absolutePath(text)
        },
        Field(key: "storeURL", environmentName: "SFNODE_STORE_URL") { configuration, text in
            let value = text?.trimmingCharacters(in: .whitespaces) ?? ""
            guard !value.isEmpty else {
                configuration.storeURL = nil
                return
            }
            guard value.hasPrefix("postgres://") || value.hasPrefix("postgresql://") else {
                throw InvalidValue(reason: "is not a postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
            }
            configuration.storeURL = value
        },
        Field(key: "storagePath", environmentName: "SFNODE_STORAGE_PATH") { configuration, text in
            configuration.storagePath = try absolutePath(text)
        },
        Field(key: "floatingRange", environmentName: "SFNODE_FLOATING_RANGE") { configuration, text in
            let value = try required(text)
            guard value.contains("/"), let prefix = IPv4Prefix(value) else {
                throw InvalidValue(reason: "is not an IPv4 prefix (a.b.c.d/n)")
            }
            guard prefix.network == prefix else {
                throw InvalidValue(reason: "has host bits set (the network is \(prefix.network))")
            }
            // A /31 or /32 leaves no address to float once the network and broadcast are set aside.
            guard prefix.length <= 30 else { throw InvalidValue(reason: "is too small for floating addresses (at most /30)") }
            configuration.floatingRange = prefix
        },
        Field(key: "egressInterface", environmentName: "SFNODE_EGRESS_INTERFACE") { configuration, text in
            configuration.egressInterface = try interfaceName(text)
        },
        Field(key: "isNetworkNode", environmentName: "SFNODE_IS_NETWORK_NODE") { configuration, text in
            configuration.isNetworkNode = try boolean(text)
        },
        Field(key: "metrics", environmentName: "SFNODE_METRICS") { configuration, text in
            configuration.metrics = try boolean(text)
        },
        Field(key: "meshAddress", environmentName: "SFNODE_MESH_ADDRESS") { configuration, text in
            guard let text, !text.isEmpty else {
                configuration.meshAddress = nil
                return
            }
            guard let address = IPv4Address(text) else { throw InvalidValue(reason: "is not an IPv4 address (a.b.c.d)") }
            configuration.meshAddress = address
        },
        Field(key: "consoleAddress", environmentName: "SFNODE_CONSOLE_LISTEN") { configuration, text in
            let text = try required(text)
            if text == "none" {
                configuration.consoleAddress = nil
                return
            }
            guard let address = IPv4Address(text) else { throw InvalidValue(reason: "is not an IPv4 address (a.b.c.d) or none") }
            configuration.consoleAddress = address
        },
        Field(key: "meshInterface", environmentName: "SFNODE_MESH_INTERFACE") { configuration, text in
            configuration.meshInterface = try interfaceName(text)
        },
        Field(key: "mtu", environmentName: "SFNODE_MTU") { configuration, text in
            // 576 is the least every IPv4 host must take; 9216 the largest jumbo frame switches carry.
            guard let mtu = Int(try required(text)), (576...9216).contains(mtu) else {
                throw InvalidValue(reason: "is not an MTU (a whole number from 576 to 9216)")
            }
            configuration.mtu = mtu
        },
        Field(key: "logLevel", environmentName: "SFNODE_LOG_LEVEL") { configuration, text in
            guard let level = Logger.Level(rawValue: try required(text).lowercased()) else {
                throw InvalidValue(
                    reason: "is not a log level (\(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            configuration.logLevel = level
        },
        Field(key: "libvirtURI", environmentName: "SFNODE_LIBVIRT_URI") { configuration, text in
            let uri = try required(text)
            guard isURIWithScheme(uri) else { throw InvalidValue(reason: "is not a libvirt URI (such as qemu:///system)") }
            configuration.libvirtURI = uri
        },
        Field(key: "apiListen", environmentName: "SFNODE_API_LISTEN") { configuration, text in
            configuration.apiListen = try listenAddress(required(text), example: "127.0.0.1:13000")
        },
        Field(key: "metricsListen", environmentName: "SFNODE_METRICS_LISTEN") { configuration, text in
            let listen = try required(text)
            configuration.metricsListen = listen == "off" ? nil : try listenAddress(listen, example: "127.0.0.1:13001, or off")
        },
        Field(key: "clientConfig", environmentName: "SFNODE_CLIENT_CONFIG") { configuration, text in
            let path = try required(text)
            guard path.hasPrefix("/") else { throw InvalidValue(reason: "is not an absolute path") }
            configuration.clientConfig = path
        },
        Field(key: "cpuOvercommit", environmentName: "SFNODE_CPU_OVERCOMMIT") { configuration, text in
            configuration.cpuOvercommit = try ratio(text)
        },
        Field(key: "memoryOvercommit", environmentName: "SFNODE_MEMORY_OVERCOMMIT") { configuration, text in
            configuration.memoryOvercommit = try ratio(text)
        },
        Field(key: "imageDownloadURL", environmentName: "SFNODE_IMAGE_DOWNLOAD_URL") { configuration, text in
            let url = try required(text)
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme?.lowercased() ?? ""), parsed.host != nil else {
                throw InvalidValue(reason: "is not an http or https URL")
            }
            configuration.imageDownloadURL = url
        },
        Field(key: "fetchAllow", environmentName: "SFNODE_FETCH_ALLOW") { configuration, text in
            configuration.fetchAllow = try prefixList(text)
        },
        Field(key: "fetchDeny", environmentName: "SFNODE_FETCH_DENY") { configuration, text in
            configuration.fetchDeny = try prefixList(text)
        },
        Field(key: "imageCacheGiB", environmentName: "SFNODE_IMAGE_CACHE_GIB") { configuration, text in
            guard let size = Int(try required(text)), (1...1_000_000).contains(size) else {
                throw InvalidValue(reason: "is not a size in GiB (1 or more)")
            }
            configuration.imageCacheGiB = size
        },
        Field(key: "namePrefix", environmentName: "SFNODE_NAME_PREFIX") { configuration, text in
            guard let prefix = text, !prefix.isEmpty else {
                configuration.namePrefix = nil
                return
            }
            // A namespace is the prefix and 8 hex digits, within the kernel's limit.
            guard prefix.utf8.count <= NetworkNamespace.maximumNameLength - 8,
                prefix.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_".unicodeScalars.contains($0)) })
            else { throw InvalidValue(reason: "is not a name prefix (letters, digits, '-' and '_', at most \(NetworkNamespace.maximumNameLength - 8) bytes)") }
            configuration.namePrefix = prefix
        },
        Field(key: "tapPrefix", environmentName: "SFNODE_TAP_PREFIX") { configuration, text in
            guard let prefix = text, !prefix.isEmpty else {
                configuration.tapPrefix = nil
                return
            }
            // A tap's name is the prefix and six hex digits, within the kernel's 15 bytes.
            guard prefix.utf8.count <= 9, prefix.unicodeScalars.allSatisfy({ $0.isASCII && CharacterSet.alphanumerics.contains($0) }) else {
                throw InvalidValue(reason: "is not a tap prefix (letters and digits, at most 9 bytes)")
            }
            configuration.tapPrefix = prefix
        },
        Field(key: "dnsZone", environmentName: "SFNODE_DNS_ZONE") { configuration, text in
            let zone = try required(text).lowercased()
            // Names become `<instance>.<namespace>.<zone>`: the zone leaves room for both (253 in all).
            let labels = zone.split(separator: ".", omittingEmptySubsequences: false)
            guard (1...120).contains(zone.utf8.count),
                labels.allSatisfy({ label in
                    (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                        && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
                })
            else { throw InvalidValue(reason: "is not a DNS zone (labels of letters, digits and '-', separated by '.', at most 120 bytes)") }
            configuration.dnsZone = zone
        },
        Field(key: "dnsServer", environmentName: "SFNODE_DNS_SERVER") { configuration, text in
            let value = (text ?? "").lowercased()
            if value.isEmpty || value == "none" {
                configuration.dnsServer = "none"
            } else if value == "auto" || IPv4Address(value) != nil {
                configuration.dnsServer = value
            } else {
                throw InvalidValue(reason: "is not auto, none or an IPv4 address (a.b.c.d)")
            }
        },
    ] + wholeNumberFields.map { limit in
        Field(key: limit.key, environmentName: limit.environmentName) { configuration, text in
            configuration[keyPath: limit.path] = try wholeNumber(text, in: limit.range, of: limit.unit)
        }
    }

    /// One whole-number limit: its JSON key, environment variable, the value's range and unit.
    struct WholeNumberLimit: Sendable {
        let key: String
        let environmentName: String
        let path: WritableKeyPath<NodeConfiguration, Int> & Sendable
        let range: ClosedRange<Int>
        let unit: String
    }

    /// The settings that are whole numbers in a range: the fetch and image limits, retention, the job
    /// runner's workers, the API's limits and the namespaces' quotas.
    static let wholeNumberFields: [WholeNumberLimit] = [
        .init(key: "eventRetentionDays", environmentName: "SFNODE_EVENT_RETENTION_DAYS", path: \.eventRetentionDays, range: 1...36_500, unit: "days"),
        .init(key: "eventMaxPerObject", environmentName: "SFNODE_EVENT_MAX_PER_OBJECT", path: \.eventMaxPerObject, range: 100...100_000_000, unit: "events"),
        .init(key: "jobRetentionDays", environmentName: "SFNODE_JOB_RETENTION_DAYS", path: \.jobRetentionDays, range: 1...36_500, unit: "days"),
        .init(key: "deletedRetentionDays", environmentName: "SFNODE_DELETED_RETENTION_DAYS", path: \.deletedRetentionDays, range: 1...36_500, unit: "days"),
        .init(key: "pruneIntervalMinutes", environmentName: "SFNODE_PRUNE_INTERVAL_MINUTES", path: \.pruneIntervalMinutes, range: 1...10_080, unit: "minutes"),
        .init(key: "fetchDeadlineSeconds", environmentName: "SFNODE_FETCH_DEADLINE_SECONDS", path: \.fetchDeadlineSeconds, range: 1...604_800, unit: "seconds"),
        .init(key: "fetchMinRateKiB", environmentName: "SFNODE_FETCH_MIN_RATE_KIB", path: \.fetchMinRateKiB, range: 0...1_048_576, unit: "KiB/s (0 for no minimum)"),
        .init(key: "fetchRateWindowSeconds", environmentName: "SFNODE_FETCH_RATE_WINDOW_SECONDS", path: \.fetchRateWindowSeconds, range: 1...3600, unit: "seconds"),
        .init(key: "imageMaxGiB", environmentName: "SFNODE_IMAGE_MAX_GIB", path: \.imageMaxGiB, range: 1...65_536, unit: "GiB"),
        .init(key: "qemuImgTimeoutSeconds", environmentName: "SFNODE_QEMU_IMG_TIMEOUT_SECONDS", path: \.qemuImgTimeoutSeconds, range: 1...86_400, unit: "seconds"),
        .init(key: "jobLeaseSeconds", environmentName: "SFNODE_JOB_LEASE_SECONDS", path: \.jobLeaseSeconds, range: 1...3600, unit: "seconds"),
        .init(key: "jobWorkers", environmentName: "SFNODE_JOB_WORKERS", path: \.jobWorkers, range: 1...64, unit: "workers"),
        .init(key: "jobDownloadWorkers", environmentName: "SFNODE_JOB_DOWNLOAD_WORKERS", path: \.jobDownloadWorkers, range: 1...64, unit: "workers"),
        // Five would let one job use up systemd's StartLimitBurst=5 on its own.
        .init(key: "jobMaxDeaths", environmentName: "SFNODE_JOB_MAX_DEATHS", path: \.jobMaxDeaths, range: 1...4, unit: "deaths (systemd gives up after 5 restarts)"),
        .init(key: "apiAuthBodyBytes", environmentName: "SFNODE_API_AUTH_BODY_BYTES", path: \.apiAuthBodyBytes, range: 256...(1 << 20), unit: "bytes"),
        .init(key: "apiJSONBodyBytes", environmentName: "SFNODE_API_JSON_BODY_BYTES", path: \.apiJSONBodyBytes, range: 1024...(4 << 20), unit: "bytes"),
        .init(key: "apiJSONDepth", environmentName: "SFNODE_API_JSON_DEPTH", path: \.apiJSONDepth, range: 4...256, unit: "levels"),
        .init(key: "apiIdleTimeoutSeconds", environmentName: "SFNODE_API_IDLE_TIMEOUT_SECONDS", path: \.apiIdleTimeoutSeconds, range: 1...3600, unit: "seconds"),
        .init(key: "apiHeaderTimeoutSeconds", environmentName: "SFNODE_API_HEADER_TIMEOUT_SECONDS", path: \.apiHeaderTimeoutSeconds, range: 1...3600, unit: "seconds"),
        .init(key: "apiMaxConnections", environmentName: "SFNODE_API_MAX_CONNECTIONS", path: \.apiMaxConnections, range: 1...60_000, unit: "connections"),
        .init(key: "loginFailuresPerNamespace", environmentName: "SFNODE_LOGIN_FAILURES_PER_NAMESPACE", path: \.loginFailuresPerNamespace, range: 1...1_000_000, unit: "failures"),
        .init(key: "loginFailuresPerAddress", environmentName: "SFNODE_LOGIN_FAILURES_PER_ADDRESS", path: \.loginFailuresPerAddress, range: 1...1_000_000, unit: "failures"),
        .init(key: "loginWindowSeconds", environmentName: "SFNODE_LOGIN_WINDOW_SECONDS", path: \.loginWindowSeconds, range: 1...86_400, unit: "seconds"),
        .init(key: "loginQueuePerNamespace", environmentName: "SFNODE_LOGIN_QUEUE_PER_NAMESPACE", path: \.loginQueuePerNamespace, range: 1...10_000, unit: "waiting logins"),
        .init(key: "keysPerNamespace", environmentName: "SFNODE_KEYS_PER_NAMESPACE", path: \.keysPerNamespace, range: 1...10_000, unit: "keys"),
        .init(key: "quotaInstances", environmentName: "SFNODE_QUOTA_INSTANCES", path: \.quotaInstances, range: 0...1_000_000, unit: "instances"),
        .init(key: "quotaVCPUs", environmentName: "SFNODE_QUOTA_VCPUS", path: \.quotaVCPUs, range: 0...10_000_000, unit: "vCPUs"),
        .init(key: "quotaMemoryGiB", environmentName: "SFNODE_QUOTA_MEMORY_GIB", path: \.quotaMemoryGiB, range: 0...1_000_000_000, unit: "GiB"),
        .init(key: "quotaDiskGiB", environmentName: "SFNODE_QUOTA_DISK_GIB", path: \.quotaDiskGiB, range: 0...1_000_000_000, unit: "GiB"),
        .init(key: "quotaBlobGiB", environmentName: "SFNODE_QUOTA_BLOB_GIB", path: \.quotaBlobGiB, range: 0...1_000_000_000, unit: "GiB"),
        .init(key: "quotaPendingUploads", environmentName: "SFNODE_QUOTA_PENDING_UPLOADS", path: \.quotaPendingUploads, range: 0...100_000, unit: "uploads"),
        .init(key: "uploadMaxGiB", environmentName: "SFNODE_UPLOAD_MAX_GIB", path: \.uploadMaxGiB, range: 1...1_000_000, unit: "GiB"),
        .init(key: "quotaNetworks", environmentName: "SFNODE_QUOTA_NETWORKS", path: \.quotaNetworks, range: 0...100_000, unit: "networks"),
        .init(key: "quotaFloatingAddresses", environmentName: "SFNODE_QUOTA_FLOATING_ADDRESSES", path: \.quotaFloatingAddresses, range: 0...1_000_000, unit: "addresses"),
        .init(key: "quotaQueuedJobs", environmentName: "SFNODE_QUOTA_QUEUED_JOBS", path: \.quotaQueuedJobs, range: 1...1_000_000, unit: "jobs"),
        .init(key: "quotaMetadataKeys", environmentName: "SFNODE_QUOTA_METADATA_KEYS", path: \.quotaMetadataKeys, range: 1...100_000, unit: "keys"),
        .init(key: "quotaTrusts", environmentName: "SFNODE_QUOTA_TRUSTS", path: \.quotaTrusts, range: 0...10_000, unit: "namespaces"),
        .init(key: "pingsAtOnce", environmentName: "SFNODE_PINGS_AT_ONCE", path: \.pingsAtOnce, range: 1...256, unit: "pings"),
        .init(key: "networkDNSEntries", environmentName: "SFNODE_NETWORK_DNS_ENTRIES", path: \.networkDNSEntries, range: 0...100_000, unit: "DNS entries"),
        .init(key: "quotaSnapshotVersions", environmentName: "SFNODE_QUOTA_SNAPSHOT_VERSIONS", path: \.quotaSnapshotVersions, range: 1...10_000, unit: "versions"),
        .init(key: "quotaWaitingRequests", environmentName: "SFNODE_QUOTA_WAITING_REQUESTS", path: \.quotaWaitingRequests, range: 1...10_000, unit: "requests"),
        .init(key: "nodeMissingSeconds", environmentName: "SFNODE_NODE_MISSING_SECONDS", path: \.nodeMissingSeconds, range: 60...86_400, unit: "seconds"),
        .init(key: "namespaceThreads", environmentName: "SFNODE_NAMESPACE_THREADS", path: \.namespaceThreads, range: 1...100_000, unit: "threads"),
        .init(key: "peerPort", environmentName: "SFNODE_PEER_PORT", path: \.peerPort, range: 1...65_535, unit: "port"),
    ]

    /// A whole number within `range`, read strictly (no sign, no spaces): limits must mean what
    /// they say.
    private static func wholeNumber(_ text: String?, in range: ClosedRange<Int>, of unit: String) throws -> Int {
        let value = try required(text)
        guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let number = Int(value), range.contains(number)
        else { throw InvalidValue(reason: "is not a whole number of \(unit) from \(range.lowerBound) to \(range.upperBound)") }
        return number
    }

    private static func ratio(_ text: String?) throws -> Double {
        guard let value = Double(try required(text)), value > 0, value <= 64 else {
            throw InvalidValue(reason: "is not a ratio above 0 and at most 64")
        }
        return value
    }

    private static func prefixList(_ text: String?) throws -> [IPRange] {
        var ranges: [IPRange] = []
        for entry in (text ?? "").split(whereSeparator: { $0 == "," || $0.isWhitespace }) {
            guard let range = IPRange(String(entry)) else {
                throw InvalidValue(
                    reason: "is not a list of IPv4 or IPv6 networks (a.b.c.d/n or x:y::/n, separated by commas): '\(entry)' is not one")
            }
            ranges.append(range)
        }
        return ranges
    }

    /// `HOST:PORT`, with a port in range.
    private static func listenAddress(_ listen: String, example: String) throws -> String {
        guard hostAndPort(listen) != nil else { throw InvalidValue(reason: "is not HOST:PORT (such as \(example))") }
        return listen
    }

    /// The host (an IPv6 address without its brackets) and port of a listening address such as
    /// `127.0.0.1:13001` or `[::1]:13001`; nil when it is not one.
    public static func hostAndPort(_ listen: String) -> (host: String, port: Int)? {
        guard let colon = listen.lastIndex(of: ":"), colon != listen.startIndex,
            let port = Int(listen[listen.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    private static func boolean(_ text: String?) throws -> Bool {
        switch try required(text).lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw InvalidValue(reason: "is not a boolean (true or false)")
        }
    }

    private static func required(_ text: String?) throws -> String {
        guard let text else { throw InvalidValue(reason: "must not be null") }
        return text
    }

    /// An interface name, or nil for null or empty text.
    private static func interfaceName(_ text: String?) throws -> String? {
        guard let name = text, !name.isEmpty else { return nil }
        if let problem = LinkName.problem(with: name) { throw InvalidValue(reason: "is not an interface name: it \(problem)") }
        return name
    }

    private static func absolutePath(_ text: String?) throws -> String {
        let path = try required(text)
        guard path.hasPrefix("/"), !path.utf8.contains(0) else { throw InvalidValue(reason: "is not an absolute path") }
        return path
    }

    /// `scheme:rest` with an RFC 3986 scheme (a letter, then letters, digits, `+`, `-`, `.`) and no
    /// white space: what `virConnectOpen` can parse.
    private static func isURIWithScheme(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")), colon > 0, colon + 1 < bytes.count else { return false }
        func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z") }
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        guard isLetter(bytes[0]),
            bytes[..<colon].allSatisfy({ isLetter($0) || isDigit($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") })
        else { return false }
        return bytes.allSatisfy { $0 > 0x20 && $0 != 0x7f }
    }
}

/// A configuration that cannot be used, with a message naming the setting and the value.
public enum ConfigurationError: Error, Equatable, CustomStringConvertible, Sendable {
    /// `setting` (an environment variable, or `file: key`) has the unusable `value`; `reason`
    /// completes the sentence, such as "is not an IPv4 prefix (a.b.c.d/n)".
    case invalidValue(setting: String, value: String, reason: String)
    /// The file names a setting that does not exist.
    case unknownKey(path: String, key: String, known: [String])
    /// The file could not be read.
    case unreadableFile(path: String, reason: String)
    /// The file is not a JSON object.
    case malformedFile(path: String, reason: String)
    /// A setting that the others make necessary is not given.
    case missing(setting: String, reason: String)

    /// One line, such as `SFNODE_FLOATING_RANGE: '10.0.0.0/33' is not an IPv4 prefix (a.b.c.d/n)`.
    public var description: String {
        switch self {
        case .invalidValue(let setting, let value, let reason): return "\(setting): '\(value)' \(reason)"
        case .unknownKey(let path, let key, let known):
            return "\(path): unknown setting '\(key)' (known: \(known.joined(separator: ", ")))"
        case .unreadableFile(let path, let reason): return "\(path): cannot read the configuration file: \(reason)"
        case .malformedFile(let path, let reason): return "\(path): \(reason)"
        case .missing(let setting, let reason): return "\(setting) must be set \(reason)"
        }
    }
}

/// A JSON string, whole number, boolean or null, kept as the text the environment would give.
private enum JSONScalar: Decodable {
    case text(String)
    case null

    var text: String? {
        if case .text(let value) = self { return value }
        return nil
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .text(flag ? "true" : "false")
        } else if let number = try? container.decode(Int.self) {
            self = .text(String(number))
        } else if let number = try? container.decode(Double.self) {
            self = .text(String(number))
        } else {
            self = .text(try container.decode(String.self))
        }
    }
}

/// A coding key for any string, so the decoder can see (and refuse) keys it does not know.
private struct AnyKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
