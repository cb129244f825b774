import Foundation
import Logging
import SFDaemonSupport
import SFDoctor
import SFNetlink
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `sfnode doctor`'s checks on this host, and with each failure made on purpose.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root (netlink, libvirt)"))
struct HostChecksTests {
    static let logger = Logger(label: "test.doctor", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A scratch directory for one test, removed afterwards.
    static func withDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
        let directory = "/var/lib/sfnode/test-doctor-\(UUID().uuidString.lowercased().prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try await body(directory)
    }

    static func checks(storage: String, egress: String? = nil, mesh: String? = nil, namespace: String? = nil, mtu: Int = 1450,
                       programs: [(name: String, path: String, required: Bool)] = HostChecks.defaultPrograms) -> HostChecks {
        HostChecks(
            virtualization: .auto, storagePath: storage, storeFile: storage + "/store.sqlite", egressInterface: egress,
            meshInterface: mesh, guestMTU: mtu, hostNamespace: namespace, libvirtURI: "qemu:///system", programs: programs)
    }

    @Test("on this lab host what the lab provides passes, every check names what it found, and the exit code follows the worst")
    func thisHost() async throws {
        try await Self.withDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory + "/instances", withIntermediateDirectories: true)
            let report = await Self.checks(storage: directory + "/instances").run(logger: Self.logger)
            let byName = Dictionary(report.checks.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            for name in ["tun", "libvirt", "virtlogd", "storage-access", "storage-disk", "program-dnsmasq", "program-qemu-img"] {
                #expect(byName[name]?.status == .pass, "\(name): \(byName[name].map { "\($0.status) \($0.message)" } ?? "missing")")
            }
            #expect(byName["libvirt"]?.message.contains("libvirt ") == true)
            #expect(report.checks.allSatisfy { !$0.message.isEmpty && ($0.status == .pass || $0.hint != nil) })
            #expect(report.exitCode == [HostCheck.Status.pass: 0, .warn: 1, .fail: 2][report.worst])
            #expect(report.text.split(separator: "\n").first?.hasPrefix("PASS  kvm") == true || report.text.hasPrefix("WARN  kvm"))
        }
    }

    @Test("a storage path qemu's user cannot enter fails, naming the directory and the chmod that fixes it")
    func storageQEMUCannotReach() async throws {
        try await Self.withDirectory { directory in
            let closed = directory + "/closed"
            try FileManager.default.createDirectory(atPath: closed + "/instances", withIntermediateDirectories: true)
            chmod(closed, 0o700)
            let check = Self.checks(storage: closed + "/instances").storageAccessCheck()
            #expect(check.status == .fail)
            #expect(check.message.contains("cannot enter \(closed) (mode 700"), "\(check.message)")
            #expect(check.hint == "chmod o+x \(closed) (or give \(HostChecks.configuredQEMUUser()) search permission another way)")
            chmod(closed, 0o711)
            #expect(Self.checks(storage: closed + "/instances").storageAccessCheck().status == .pass)
            let missing = Self.checks(storage: directory + "/nowhere/instances").storageAccessCheck()
            #expect(missing.status == .warn && missing.message.contains("\(directory)/nowhere does not exist yet"))
        }
    }

    @Test("a missing program fails when sfnode needs it and warns when it only helps, each naming its package")
    func missingPrograms() async throws {
        try await Self.withDirectory { directory in
            let checks = Self.checks(storage: directory, programs: [
                ("dnsmasq", directory + "/no/dnsmasq", true), ("prlimit", directory + "/no/prlimit", false),
            ])
            let results = checks.localChecks().filter { $0.name.hasPrefix("program-") }
            #expect(results.map(\.status) == [.fail, .warn])
            #expect(results.first?.message == "\(directory)/no/dnsmasq is missing or not executable")
            #expect(results.map(\.hint) == ["apt install dnsmasq-base", "apt install util-linux"])
            #expect(HostReport(checks: results).exitCode == 2)
            #expect(HostReport(checks: Array(results.dropFirst())).exitCode == 1)
        }
    }

    @Test("an egress interface that does not exist fails; a mesh link too small for the guests' MTU plus VXLAN fails with the MTU to set")
    func interfaces() async throws {
        let namespace = TestNames.unique("dr")
        let teardown = Teardown()
        try teardown.createNamespaces([namespace])
        do {
            let session = try NetlinkSession(namespace: namespace, logger: Self.logger)
            try await session.createBridge(name: "mesh0", mtu: 1450, up: true)
            let report = await Self.checks(storage: "/var/lib", egress: "nosuch0", mesh: "mesh0", namespace: namespace, mtu: 1450)
                .interfaceChecks(logger: Self.logger)
            let egress = try #require(report.first { $0.name == "egress-interface" })
            #expect(egress.status == .fail && egress.message == "egress interface nosuch0 does not exist: guests would have no way out")
            let mesh = try #require(report.first { $0.name == "mesh-mtu" })
            #expect(mesh.status == .fail, "\(mesh.message)")
            #expect(mesh.hint == "raise mesh0's MTU to 1500 or more, or lower mtu (SFNODE_MTU) to 1400")
            let fits = await Self.checks(storage: "/var/lib", mesh: "mesh0", namespace: namespace, mtu: 1400).interfaceChecks(logger: Self.logger)
            #expect(fits.map(\.status) == [.pass])
        } catch {
            try await teardown.run()
            throw error
        }
        try await teardown.run()
    }

    @Test("a libvirtd that never answers fails the check at its timeout instead of holding the doctor")
    func libvirtThatHangs() async throws {
        // A loopback socket that takes connections (the kernel's backlog) and never says a word.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        try #require(bound == 0 && listen(listener, 8) == 0)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        var checks = Self.checks(storage: "/var/lib")
        checks.libvirtURI = "qemu+tcp://127.0.0.1:\(UInt16(bigEndian: address.sin_port))/system"
        let started = ContinuousClock.now
        let report = await checks.run(libvirtTimeout: .seconds(1), logger: Self.logger)
        #expect(ContinuousClock.now - started < .seconds(10))
        let libvirt = try #require(report.checks.first { $0.name == "libvirt" })
        #expect(libvirt.status == .fail && libvirt.message.contains("did not answer within"), "\(libvirt.message)")
    }

    @Test("`sfnode doctor --json` prints every check and exits 2 on a failure")
    func command() async throws {
        try await Self.withDirectory { directory in
            let closed = directory + "/closed"
            try FileManager.default.createDirectory(atPath: closed, withIntermediateDirectories: true)
            chmod(closed, 0o700)
            let config = directory + "/agent.json"
            try #"{"nodeName": "doctor-test", "storagePath": "\#(closed)/instances", "storePath": "\#(directory)/store.sqlite"}"#
                .write(toFile: config, atomically: true, encoding: .utf8)
            let result = try ChildProcess.run([try AgentProcess.executable(), "doctor", "--config", config, "--json"])
            #expect(result.status == 2, "\(result.stderr)")
            let report = try JSONDecoder().decode(HostReport.self, from: Data(result.stdout.utf8))
            #expect(report.checks.first { $0.name == "storage-access" }?.status == .fail)
            #expect(report.exitCode == 2)
        }
    }
}
