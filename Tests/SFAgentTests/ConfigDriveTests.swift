import Foundation
import SFAgent
import SFControl
import SFStore
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Config drives, read back with xorriso's extractor and with the kernel's own iso9660 reader:
/// what a guest mounting the disk labelled config-2 finds.
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/xorriso"), "needs xorriso to read drives back (scripts/setup-host)"))
struct ConfigDriveTests {
    static let instance = UUID(uuidString: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")!
    static let network = UUID(uuidString: "11111111-2222-4333-8444-555555555555")!
    static let first = UUID(uuidString: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")!
    static let second = UUID(uuidString: "ffffffff-1111-4222-8333-444444444444")!
    static let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test@sfnode"
    static let userData = Data("#!/bin/sh\necho 'hello from user data'\n".utf8)

    static func drive(userData: Data? = ConfigDriveTests.userData, sshKey: String? = ConfigDriveTests.key) throws -> ConfigDrive {
        ConfigDrive(
            uuid: instance, name: "web", namespace: "team1", sshKey: sshKey, userData: userData,
            interfaces: [
                // Given out of order: the drive lists them by order.
                .init(
                    uuid: second, mac: try #require(MACAddress("02:00:00:00:00:02")), order: 1, networkUUID: network,
                    netblock: try IPv4Prefix.parse("10.5.0.0/24"), address: nil),
                .init(
                    uuid: first, mac: try #require(MACAddress("02:00:00:00:00:01")), order: 0, networkUUID: network,
                    netblock: try IPv4Prefix.parse("10.5.0.0/24"), address: IPv4Address("10.5.0.7")),
            ],
            mtu: 1450)
    }

    /// A scratch directory for one test, removed afterwards.
    static func withDirectory(_ body: (String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sft-configdrive-\(UUID().lowercasedString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try body(directory)
    }

    /// Extracts the image's files into `directory` with xorriso's reader.
    static func extract(_ image: String, into directory: String) throws {
        let result = try ChildProcess.run(["/usr/bin/xorriso", "-osirrox", "on", "-indev", image, "-extract", "/", directory])
        #expect(result.status == 0, "xorriso -extract: \(result.stderr)")
    }

    static func json(_ path: String) throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: path), "\(path) is missing")
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(path) is not a JSON object")
    }

    @Test func theDriveHoldsShakenFistsFilesUnderTheConfig2Label() throws {
        try Self.withDirectory { directory in
            let image = directory + "/config-drive.iso"
            try ConfigDriveWriter().write(try Self.drive(), to: image)

            // The label is how guests (cloud-init's ds-identify, the test guest's findfs) find the drive.
            let info = try ChildProcess.run(["/usr/bin/xorriso", "-indev", image, "-pvd_info"])
            #expect(info.stdout.contains("Volume Id    : config-2"), "\(info.stdout)\(info.stderr)")
            let tree = directory + "/tree"
            try Self.extract(image, into: tree)

            for version in ["latest", "2017-02-22"] {
                let base = tree + "/openstack/\(version)"
                let meta = try Self.json(base + "/meta_data.json")
                #expect(meta["uuid"] as? String == Self.instance.lowercasedString)
                #expect(meta["name"] as? String == "web")
                #expect(meta["hostname"] as? String == "web.local")
                #expect(meta["project_id"] as? String == "team1")
                #expect(meta["launch_index"] as? Int == 0)
                #expect((meta["devices"] as? [Any])?.isEmpty == true)
                #expect(meta["availability_zone"] as? String == ConfigDrive.availabilityZone)
                #expect(meta["public_keys"] as? [String: String] == ["mykey": Self.key])
                let seed = try #require(meta["random_seed"] as? String)
                #expect(Data(base64Encoded: seed)?.count == 512)

                let network = try Self.json(base + "/network_data.json")
                let links = try #require(network["links"] as? [[String: Any]])
                #expect(links.map { $0["ethernet_mac_address"] as? String } == ["02:00:00:00:00:01", "02:00:00:00:00:02"])
                #expect(links.map { $0["id"] as? String } == ["eth0", "eth1"])
                #expect(links.map { $0["vif_id"] as? String } == [Self.first.lowercasedString, Self.second.lowercasedString])
                #expect(links.map { $0["mtu"] as? Int } == [1450, 1450])
                #expect(links.map { $0["type"] as? String } == ["vif", "vif"])
                // Only the interface with an address has a network; it carries the default route.
                let networks = try #require(network["networks"] as? [[String: Any]])
                #expect(networks.count == 1)
                let only = try #require(networks.first)
                #expect(only["id"] as? String == "\(Self.network.lowercasedString)-0")
                #expect(only["link"] as? String == "eth0")
                #expect(only["type"] as? String == "ipv4")
                #expect(only["network_id"] as? String == Self.network.lowercasedString)
                #expect(only["ip_address"] as? String == "10.5.0.7")
                #expect(only["netmask"] as? String == "255.255.255.0")
                #expect(only["routes"] as? [[String: String]] == [["network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.5.0.1"]])
                #expect(network["services"] as? [[String: String]] == [["type": "dns", "address": "8.8.8.8"]])

                #expect(FileManager.default.contents(atPath: base + "/user_data") == Self.userData)
                #expect(FileManager.default.contents(atPath: base + "/vendor_data.json") == Data("{}".utf8))
                #expect(FileManager.default.contents(atPath: base + "/vendor_data2.json") == Data("{}".utf8))
            }
            // Nothing of the build is left beside the image.
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == ["config-drive.iso", "tree"])
        }
    }

    /// Every file under `root`, by path relative to it.
    static func files(under root: String) throws -> [String: Data] {
        var files: [String: Data] = [:]
        let walker = try #require(FileManager.default.enumerator(atPath: root))
        while let relative = walker.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: root + "/" + relative, isDirectory: &isDirectory), !isDirectory.boolValue {
                files[relative] = FileManager.default.contents(atPath: root + "/" + relative)
            }
        }
        return files
    }

    /// Whether this host's kernel reads ISO 9660 (containers often lack the module).
    static let kernelReadsISO9660 = getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/loop-control")
        && ((try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8))?.contains("iso9660") ?? false)

    @Test func everyNameAndByteReadsBackAsAGuestWouldSeeThem() throws {
        try Self.withDirectory { directory in
            // Names of every length, a directory of more than one sector, names that map onto
            // one ISO 9660 name, a file of several sectors, empty files, a deep path, and the drive.
            var files: [(path: String, contents: Data)] = try Self.drive().files(randomSeed: Data(count: 512))
            for index in 0..<120 {
                files.append(("many/file-with-a-rather-long-name-\(index).json", Data("\(index)".utf8)))
            }
            files.append(("big/blob.bin", Data((0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })))
            files.append(("empty", Data()))
            files.append(("a/b/c/d/e/f/g/deep.txt", Data("deep".utf8)))
            let image = directory + "/drive.iso"
            try ConfigDriveWriter().write(files: files, to: image)
            var readers = ["xorriso": directory + "/extracted"]
            try Self.extract(image, into: directory + "/extracted")
            if Self.kernelReadsISO9660 {
                // The kernel's reader is the one guests use.
                let mountPoint = directory + "/mnt"
                try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
                let mount = try ChildProcess.run(["/usr/bin/mount", "-o", "loop,ro", "-t", "iso9660", image, mountPoint])
                try #require(mount.status == 0, "mount: \(mount.stderr)")
                readers["kernel"] = mountPoint
            }
            defer { if readers["kernel"] != nil { _ = try? ChildProcess.run(["/usr/bin/umount", directory + "/mnt"]) } }
            for (reader, root) in readers {
                let read = try Self.files(under: root)
                #expect(read.count == files.count, "\(reader) reads \(read.count) files of \(files.count)")
                for file in files {
                    #expect(read[file.path] == file.contents, "\(reader) reads \(file.path) differently")
                }
            }
        }
    }

    @Test func pathsThatCannotBeADrivesAreRefusedByName() throws {
        try Self.withDirectory { directory in
            for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", String(repeating: "n", count: 65), "1/2/3/4/5/6/7/8/9"] {
                #expect(throws: ControlError.self) { try ConfigDriveWriter().write(files: [(bad, Data())], to: directory + "/d.iso") }
            }
            // A name used as a file and as a directory, or twice.
            #expect(throws: ControlError.self) {
                try ConfigDriveWriter().write(files: [("a", Data()), ("a/b", Data())], to: directory + "/d.iso")
            }
            #expect(throws: ControlError.self) {
                try ConfigDriveWriter().write(files: [("a/b", Data()), ("a/b", Data())], to: directory + "/d.iso")
            }
            #expect(!FileManager.default.fileExists(atPath: directory + "/d.iso"))
        }
    }

    @Test func rebuildingReplacesTheDriveAndDefaultsFillTheGaps() throws {
        try Self.withDirectory { directory in
            let image = directory + "/config-drive.iso"
            try ConfigDriveWriter().write(try Self.drive(), to: image)
            // A leftover of a build that crashed is not mistaken for anything and goes.
            FileManager.default.createFile(atPath: image + ".partial", contents: Data("junk".utf8))
            FileManager.default.createFile(atPath: image + ".partial-4242", contents: Data("junk".utf8))
            try ConfigDriveWriter().write(try Self.drive(userData: nil, sshKey: nil), to: image)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["config-drive.iso"])

            let tree = directory + "/tree"
            try Self.extract(image, into: tree)
            let meta = try Self.json(tree + "/openstack/latest/meta_data.json")
            #expect(meta["public_keys"] as? [String: String] == [:])
            // No user data given: an empty cloud-config, as Shaken Fist writes.
            #expect(FileManager.default.contents(atPath: tree + "/openstack/latest/user_data") == Data("#cloud-config\n".utf8))
        }
    }

    @Test func anInstanceGetsADriveUnlessItAskedForNone() throws {
        var instance = Instance(
            uuid: Self.instance, name: "web", namespace: "team1", cpus: 1, memory: 256, diskSpec: [DiskSpec(size: 1)],
            config: InstanceConfig(sshKey: Self.key, userData: Self.userData.base64EncodedString()))
        let drive = try #require(try ConfigDrive.of(instance, interfaces: [], mtu: 1400))
        #expect(drive.userData == Self.userData)
        #expect(drive.sshKey == Self.key && drive.namespace == "team1" && drive.mtu == 1400)
        instance.config.configDrive = .none
        #expect(try ConfigDrive.of(instance, interfaces: [], mtu: 1400) == nil)
    }

    @Test func eachBuildGetsAFreshRandomSeed() throws {
        let drive = try Self.drive()
        func seed(_ files: [(path: String, contents: Data)]) throws -> String? {
            let meta = try #require(files.first { $0.path == "openstack/latest/meta_data.json" })
            return (try JSONSerialization.jsonObject(with: meta.contents) as? [String: Any])?["random_seed"] as? String
        }
        let one = try seed(drive.files(randomSeed: Data(repeating: 1, count: 512)))
        let two = try seed(drive.files(randomSeed: Data(repeating: 2, count: 512)))
        #expect(one != nil && one != two)
    }
}
