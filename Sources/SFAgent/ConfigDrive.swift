import Foundation
import SFControl
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// What an instance's config drive tells its guest: an OpenStack config-2 drive as Shaken Fist
/// builds it, which cloud-init and cloudbase-init read at boot.
///
/// The drive holds `openstack/latest/` and `openstack/2017-02-22/` (the newest dated version Shaken
/// Fist writes; a guest that asks for a dated version finds the same files), each with
/// `meta_data.json`, `network_data.json`, `user_data`, `vendor_data.json` and `vendor_data2.json`.
/// Its volume label is `config-2`, which is how the guest finds it.
public struct ConfigDrive: Sendable, Equatable {
    /// One interface the guest is told about, in its network.
    public struct Interface: Sendable, Equatable {
        public var uuid: UUID
        public var mac: MACAddress
        /// Its place among the instance's interfaces: the guest names the link `eth<order>`.
        public var order: Int
        public var networkUUID: UUID
        /// The network's range: its netmask is the interface's, its index 1 the router.
        public var netblock: IPv4Prefix
        /// The interface's address; nil for an interface without one (it gets a link and no network).
        public var address: IPv4Address?

        public init(uuid: UUID, mac: MACAddress, order: Int, networkUUID: UUID, netblock: IPv4Prefix, address: IPv4Address?) {
            self.uuid = uuid
            self.mac = mac
            self.order = order
            self.networkUUID = networkUUID
            self.netblock = netblock
            self.address = address
        }
    }

    /// The volume label guests look for.
    public static let volumeID = "config-2"
    /// The versions the drive carries, each a directory under `openstack/` with the same files.
    public static let versions = ["latest", "2017-02-22"]
    /// What `user_data` holds when the instance was given none (Shaken Fist's choice): an empty
    /// cloud-config, so cloud-init does not complain about a missing or unknown user data.
    public static let emptyUserData = Data("#cloud-config\n".utf8)
    /// The availability zone the guest is told.
    public static let availabilityZone = "sfnode"
    /// The resolver the guest is told to use. Shaken Fist tells guests their router when the
    /// network's dnsmasq answers DNS and its `DNS_SERVER` (8.8.8.8 by default) otherwise; sfnode's
    /// dnsmasq serves DHCP only (`--port=0`), so guests get the default.
    public static let defaultDNSServer = IPv4Address(0x0808_0808)

    public var uuid: UUID
    public var name: String
    public var namespace: String
    /// The ssh public key for the guest's default user, if any.
    public var sshKey: String?
    /// The user data, decoded; nil when none was given.
    public var userData: Data?
    public var interfaces: [Interface]
    /// The MTU of the guest's links (the agent's, which leaves room for VXLAN).
    public var mtu: Int
    public var dnsServer: IPv4Address

    public init(
        uuid: UUID, name: String, namespace: String, sshKey: String? = nil, userData: Data? = nil, interfaces: [Interface] = [],
        mtu: Int = 1450, dnsServer: IPv4Address = ConfigDrive.defaultDNSServer
    ) {
        self.uuid = uuid
        self.name = name
        self.namespace = namespace
        self.sshKey = sshKey
        self.userData = userData
        self.interfaces = interfaces
        self.mtu = mtu
        self.dnsServer = dnsServer
    }

    /// What the instance's config drive says, or nil when it asked for none (`configdrive: none`).
    public static func of(_ instance: Instance, interfaces: [Interface], mtu: Int) throws -> ConfigDrive? {
        guard instance.config.configDrive == .openstackDisk else { return nil }
        let userData = try instance.config.userData.map { text in
            // Checked when the instance was created; a store row that fails here is corrupt.
            guard let data = Data(base64Encoded: text, options: .ignoreUnknownCharacters) else {
                throw JobError("instance \(instance.uuid): its user data is not base64")
            }
            return data
        }
        return ConfigDrive(
            uuid: instance.uuid, name: instance.name, namespace: instance.namespace, sshKey: instance.config.sshKey, userData: userData,
            interfaces: interfaces, mtu: mtu)
    }

    /// The drive's files, by path inside it. `randomSeed` becomes meta_data.json's `random_seed`
    /// (Shaken Fist gives each boot 512 fresh random bytes to seed the guest's entropy pool).
    public func files(randomSeed: Data) throws -> [(path: String, contents: Data)] {
        let encoder = JSONEncoder()
        // Sorted keys: the same instance gives the same text, which tests and diffs can rely on.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let metaData = try encoder.encode(
            MetaData(
                randomSeed: randomSeed.base64EncodedString(), uuid: uuid.lowercasedString, availabilityZone: Self.availabilityZone,
                hostname: name + ".local", launchIndex: 0, devices: [], projectID: namespace, name: name,
                publicKeys: sshKey.map { ["mykey": $0] } ?? [:]))
        let networkData = try encoder.encode(networkDataDocument())
        let empty = Data("{}".utf8)
        var files: [(path: String, contents: Data)] = []
        for version in Self.versions {
            let directory = "openstack/\(version)/"
            files.append((directory + "meta_data.json", metaData))
            files.append((directory + "network_data.json", networkData))
            files.append((directory + "user_data", userData ?? Self.emptyUserData))
            files.append((directory + "vendor_data.json", empty))
            files.append((directory + "vendor_data2.json", empty))
        }
        return files
    }

    /// network_data.json: a link per interface, an IPv4 network per interface with an address (the
    /// first of them carries the default route via its router, index 1 of its range), and the DNS
    /// service. Unlike Shaken Fist, an interface without an address gets no network entry (Shaken Fist
    /// then indexes the previous interface's network).
    func networkDataDocument() -> NetworkData {
        var links: [NetworkData.Link] = []
        var networks: [NetworkData.Network] = []
        for interface in interfaces.sorted(by: { $0.order < $1.order }) {
            let link = "eth\(interface.order)"
            links.append(.init(ethernetMacAddress: interface.mac.description, id: link, name: link, mtu: mtu, type: "vif",
                               vifID: interface.uuid.lowercasedString))
            guard let address = interface.address else { continue }
            let router = interface.netblock.host(1)
            networks.append(.init(
                id: "\(interface.networkUUID.lowercasedString)-\(interface.order)", link: link, type: "ipv4",
                networkID: interface.networkUUID.lowercasedString, ipAddress: address.description,
                netmask: interface.netblock.netmask.description,
                routes: networks.isEmpty ? [.init(network: "0.0.0.0", netmask: "0.0.0.0", gateway: router.description)] : nil))
        }
        return NetworkData(links: links, networks: networks, services: [.init(type: "dns", address: dnsServer.description)])
    }

    struct MetaData: Encodable {
        let randomSeed: String
        let uuid: String
        let availabilityZone: String
        let hostname: String
        let launchIndex: Int
        let devices: [String]
        let projectID: String
        let name: String
        let publicKeys: [String: String]

        enum CodingKeys: String, CodingKey {
            case uuid, hostname, devices, name
            case randomSeed = "random_seed"
            case availabilityZone = "availability_zone"
            case launchIndex = "launch_index"
            case projectID = "project_id"
            case publicKeys = "public_keys"
        }
    }

    struct NetworkData: Encodable {
        struct Link: Encodable {
            let ethernetMacAddress: String
            let id: String
            let name: String
            let mtu: Int
            let type: String
            let vifID: String

            enum CodingKeys: String, CodingKey {
                case id, name, mtu, type
                case ethernetMacAddress = "ethernet_mac_address"
                case vifID = "vif_id"
            }
        }

        struct Route: Encodable {
            let network: String
            let netmask: String
            let gateway: String
        }

        struct Network: Encodable {
            let id: String
            let link: String
            let type: String
            let networkID: String
            let ipAddress: String
            let netmask: String
            let routes: [Route]?

            enum CodingKeys: String, CodingKey {
                case id, link, type, netmask, routes
                case networkID = "network_id"
                case ipAddress = "ip_address"
            }
        }

        struct Service: Encodable {
            let type: String
            let address: String
        }

        let links: [Link]
        let networks: [Network]
        let services: [Service]
    }
}

/// Writes config drives: ISO 9660 images with Joliet names (``ISO9660Image``), labelled `config-2`.
///
/// Shaken Fist builds the image in-process too (pycdlib). sfnode ran `xorriso -as mkisofs` until
/// it measured that xorriso's start-up alone took 100 ms of every instance create; the image of a
/// few small files is simple enough to write directly, and its names come from sfnode, not tenants.
public struct ConfigDriveWriter: Sendable {
    public init() {}

    /// Builds the drive at `path`, replacing any drive there, atomically: the image is written to
    /// `<path>.partial`, synced and renamed over `path`. A crash leaves either the old drive or the
    /// new one, and a running guest keeps reading the drive it opened. Blocking: call it off the
    /// cooperative pool.
    public func write(_ drive: ConfigDrive, to path: String) throws {
        var seed = Data(count: 512)
        var generator = SystemRandomNumberGenerator()
        for index in seed.indices { seed[index] = generator.next() }
        try write(files: try drive.files(randomSeed: seed), to: path)
    }

    /// Builds an ISO 9660 image labelled `config-2` holding `files` (paths relative to its root).
    public func write(files: [(path: String, contents: Data)], to path: String) throws {
        let image = try ISO9660Image.build(volumeID: ConfigDrive.volumeID, files: files)
        // Leftovers of builds that crashed (`.partial-<pid>`, and xorriso's staging of older versions) go.
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        for leftover in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        where leftover.hasPrefix(name + ".partial") || leftover == name + ".staging" {
            try? FileManager.default.removeItem(atPath: directory + "/" + leftover)
        }
        // Readable by the guest's QEMU once libvirt has given it the file, and by nobody else: user
        // data may hold secrets.
        try AtomicFile.write(image, to: path, mode: 0o640)
    }
}
