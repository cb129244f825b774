import CLinux
import Foundation
import Logging
import SFDaemonSupport
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// What `sfnode doctor` checks, and what the agent checks at start: each way a host has been seen to
/// fail sfnode late and obscurely, checked early and said plainly, with what to do.
///
/// Reads only; changes nothing on the host. Every input is a parameter, so that tests can point a
/// check at a broken path, binary or interface.
public struct HostChecks: Sendable {
    /// How guests are meant to run.
    public var virtualization: VirtualizationType
    /// Where instance disks live: qemu's user must reach it.
    public var storagePath: String
    /// The SQLite store's file, when the store is one (its disk must not fill).
    public var storeFile: String?
    /// Where the store is (a SQLite path or a `postgres://` URL), for its schema's check; nil skips it.
    public var storeLocation: String?
    /// The uplink the egress bridge masquerades through, if one is set.
    public var egressInterface: String?
    /// The interface carrying the mesh (VXLAN) between nodes, if one is set.
    public var meshInterface: String?
    /// The guests' MTU.
    public var guestMTU: Int
    /// The namespace standing for the host's network (nil: this process's own).
    public var hostNamespace: String?
    public var libvirtURI: String
    /// The programs sfnode starts, by absolute path, and whether each is required.
    public var programs: [(name: String, path: String, required: Bool)]
    /// The user QEMU runs as (from libvirt's qemu.conf, else Debian's `libvirt-qemu`).
    public var qemuUser: String
    /// Where virtlogd listens; libvirt cannot start a guest with a console log without it.
    public var virtlogdSocket = "/run/libvirt/virtlogd-sock"
    /// Where the kernel's devices and module state are read (tests point these elsewhere).
    public var devices = "/dev"
    public var modules = "/sys/module"

    /// What a VXLAN adds to each frame (outer Ethernet, IPv4, UDP and VXLAN headers).
    public static let vxlanOverhead = 50
    /// The kernel modules sfnode's plumbing uses: legacy x_tables NAT and filter (libiptc), VXLAN,
    /// bridges, veths, taps, and the tc pieces of the anti-spoofing filters.
    public static let kernelModules: [(module: String, use: String)] = [
        ("bridge", "network bridges"), ("vxlan", "the mesh between nodes"), ("veth", "router links into network namespaces"),
        ("ip_tables", "libiptc's tables"), ("iptable_nat", "NAT and floating addresses"),
        ("iptable_filter", "forwarding rules"), ("nf_conntrack", "NAT's connection tracking"),
        ("sch_ingress", "the taps' clsact qdisc (anti-spoofing)"), ("cls_bpf", "the taps' anti-spoofing filters"),
    ]

    public init(
        virtualization: VirtualizationType, storagePath: String, storeFile: String?, egressInterface: String?, meshInterface: String?,
        guestMTU: Int, hostNamespace: String?, libvirtURI: String, programs: [(name: String, path: String, required: Bool)] = Self.defaultPrograms,
        qemuUser: String = Self.configuredQEMUUser()
    ) {
        self.virtualization = virtualization
        self.storagePath = storagePath
        self.storeFile = storeFile
        self.egressInterface = egressInterface
        self.meshInterface = meshInterface
        self.guestMTU = guestMTU
        self.hostNamespace = hostNamespace
        self.libvirtURI = libvirtURI
        self.programs = programs
        self.qemuUser = qemuUser
    }

    /// The checks of a node's configuration.
    public init(configuration settings: NodeConfiguration) {
        self.init(
            virtualization: settings.virtualizationType, storagePath: settings.storagePath,
            storeFile: settings.storeURL == nil ? settings.storePath : nil, egressInterface: settings.egressInterface,
            meshInterface: settings.meshInterface, guestMTU: settings.mtu, hostNamespace: settings.hostNamespace,
            libvirtURI: settings.libvirtURI)
        storeLocation = settings.storeLocation
    }

    public static let defaultPrograms: [(name: String, path: String, required: Bool)] = [
        ("dnsmasq", "/usr/sbin/dnsmasq", true), ("qemu-img", "/usr/bin/qemu-img", true), ("prlimit", "/usr/bin/prlimit", false),
    ]

    /// The `user` of libvirt's qemu.conf, else Debian's default.
    public static func configuredQEMUUser(configFile: String = "/etc/libvirt/qemu.conf") -> String {
        let text = (try? String(contentsOfFile: configFile, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, parts[0] == "user" else { continue }
            return parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return "libvirt-qemu"
    }

    /// Runs every check. Blocking file and kernel reads run off the cooperative pool; libvirt is
    /// given `libvirtTimeout` to answer.
    public func run(libvirtTimeout: Duration = .seconds(10), logger: Logger) async -> HostReport {
        var checks: [HostCheck] = []
        let local = self
        checks += (try? await runBlocking { local.localChecks() }) ?? []
        checks.append(await libvirtCheck(timeout: libvirtTimeout, logger: logger))
        if let storeLocation { checks.append(await schemaCheck(storeLocation, timeout: libvirtTimeout, logger: logger)) }
        checks += await interfaceChecks(logger: logger)
        return HostReport(checks: checks)
    }

    /// The checks that read files and the kernel only.
    public func localChecks() -> [HostCheck] {
        var checks = [kvmCheck(), deviceCheck("tun", "net/tun", fail: true, use: "guest network taps", hint: "modprobe tun")]
        checks.append(deviceCheck("vhost-net", "vhost-net", fail: false, use: "in-kernel virtio networking", hint: "modprobe vhost_net (guests' networking is slower without it)"))
        checks += moduleChecks()
        checks.append(bridgeNetfilterCheck())
        checks.append(virtlogdCheck())
        checks.append(storageAccessCheck())
        checks.append(diskCheck("storage-disk", storagePath))
        if let storeFile { checks.append(diskCheck("store-disk", (storeFile as NSString).deletingLastPathComponent)) }
        checks += programs.map(programCheck)
        checks.append(firewallManagerCheck())
        checks.append(clockCheck())
        return checks
    }

    func kvmCheck() -> HostCheck {
        let facts = VirtualizationType.HostFacts.probe(kvmDevice: devices + "/kvm")
        let (resolved, reason) = virtualization.decide(given: facts)
        switch (virtualization, resolved) {
        case (.kvm, _) where !facts.kvmDeviceUsable:
            return HostCheck("kvm", .fail, "virtualizationType is kvm, but \(devices)/kvm cannot be opened read-write",
                hint: "load kvm_intel or kvm_amd (and enable virtualization in the firmware), or set virtualizationType to qemu")
        case (_, .kvm):
            return HostCheck("kvm", .pass, "\(devices)/kvm is usable: guests run with hardware virtualization")
        default:
            return HostCheck("kvm", .warn, "guests will run under QEMU's software emulation (TCG), many times slower: \(reason ?? "virtualizationType is qemu")",
                hint: "load kvm_intel or kvm_amd, enable virtualization in the firmware (or nested virtualization on a VM)")
        }
    }

    func deviceCheck(_ name: String, _ device: String, fail: Bool, use: String, hint: String) -> HostCheck {
        let path = devices + "/" + device
        guard access(path, R_OK | W_OK) == 0 else {
            return HostCheck(name, fail ? .fail : .warn, "\(path) is missing or not usable (\(String(cString: strerror(errno)))); it serves \(use)", hint: hint)
        }
        return HostCheck(name, .pass, "\(path) is usable")
    }

    /// One line per module that is loaded, or found among the kernel's modules (loadable or built
    /// in); one warning per module that is neither. A kernel whose module lists are absent (a
    /// container, a kernel with everything built in) cannot be judged: one warning says so.
    func moduleChecks() -> [HostCheck] {
        var release = utsname()
        uname(&release)
        let kernel = withUnsafeBytes(of: &release.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let lists = ["modules.builtin", "modules.dep"].compactMap { try? String(contentsOfFile: "/lib/modules/\(kernel)/\($0)", encoding: .utf8) }
        var checks: [HostCheck] = []
        var unknown: [String] = []
        for (module, use) in Self.kernelModules {
            if FileManager.default.fileExists(atPath: modules + "/" + module) {
                checks.append(HostCheck("module-\(module)", .pass, "\(module) is loaded (\(use))"))
            } else if lists.contains(where: { $0.contains("/\(module).ko") }) {
                checks.append(HostCheck("module-\(module)", .pass, "\(module) is available and loads on first use (\(use))"))
            } else if lists.isEmpty {
                unknown.append(module)
            } else {
                checks.append(HostCheck("module-\(module)", .warn, "\(module) is neither loaded nor among kernel \(kernel)'s modules: \(use) will fail",
                    hint: "modprobe \(module), or install the kernel's modules package"))
            }
        }
        if !unknown.isEmpty {
            checks.append(HostCheck("modules", .warn,
                "kernel \(kernel) lists no modules (/lib/modules/\(kernel) is absent): \(unknown.joined(separator: ", ")) are not loaded as modules, and whether they are built in cannot be told",
                hint: "on a container or a custom kernel, make sure these are built in or loaded on the host"))
        }
        return checks
    }

    func bridgeNetfilterCheck() -> HostCheck {
        let setting = "/proc/sys/net/bridge/bridge-nf-call-iptables"
        guard let value = try? String(contentsOfFile: setting, encoding: .utf8) else {
            return HostCheck("br-netfilter", .pass, "br_netfilter is not loaded: bridged guest traffic does not pass through iptables")
        }
        if value.trimmingCharacters(in: .whitespacesAndNewlines) == "1" {
            return HostCheck("br-netfilter", .warn, "br_netfilter sends bridged guest traffic through iptables (\(setting) is 1): other tools' rules then filter guests' frames",
                hint: "unless another tool needs it, sysctl net.bridge.bridge-nf-call-iptables=0 or unload br_netfilter")
        }
        return HostCheck("br-netfilter", .pass, "br_netfilter is loaded but bridged traffic skips iptables (\(setting) is 0)")
    }

    func virtlogdCheck() -> HostCheck {
        guard FileManager.default.fileExists(atPath: virtlogdSocket) else {
            return HostCheck("virtlogd", .fail, "virtlogd's socket \(virtlogdSocket) is missing: libvirt cannot start a guest with a console log",
                hint: "systemctl enable --now virtlogd.socket (or start virtlogd)")
        }
        return HostCheck("virtlogd", .pass, "virtlogd listens at \(virtlogdSocket)")
    }

    /// Whether qemu's user can reach the storage path: search permission on every directory down to
    /// it. libvirt gives qemu the disk files themselves, but not the directories above them, and a
    /// directory it cannot enter fails every instance with "Permission denied" deep in a libvirt message.
    public func storageAccessCheck() -> HostCheck {
        guard let user = getpwnam(qemuUser) else {
            return HostCheck("storage-access", .warn, "qemu's user '\(qemuUser)' does not exist here, so its access to \(storagePath) cannot be checked",
                hint: "install libvirt-daemon-system, or set user in /etc/libvirt/qemu.conf")
        }
        let uid = user.pointee.pw_uid
        let gid = user.pointee.pw_gid
        guard uid != 0 else { return HostCheck("storage-access", .pass, "qemu runs as root and reaches \(storagePath)") }
        var groups = [gid_t](repeating: 0, count: 64)
        var count = Int32(groups.count)
        if getgrouplist(qemuUser, gid, &groups, &count) < 0 { count = 0 }
        let member = Set(groups.prefix(Int(max(count, 0))) + [gid])
        var path = ""
        for component in [""] + storagePath.split(separator: "/").map(String.init) {
            path = component.isEmpty ? "/" : (path == "/" ? "" : path) + "/" + component
            var info = stat()
            guard stat(path, &info) == 0 else {
                return HostCheck("storage-access", .warn,
                    "\(path) does not exist yet (storagePath \(storagePath)); qemu's user \(qemuUser) can reach the directories above it",
                    hint: "the agent makes it at start; or set storagePath (SFNODE_STORAGE_PATH) to where instance disks belong")
            }
            let mode = info.st_mode
            let searchable = info.st_uid == uid ? mode & S_IXUSR != 0 : member.contains(info.st_gid) ? mode & S_IXGRP != 0 : mode & S_IXOTH != 0
            guard searchable else {
                let octal = String(mode & 0o7777, radix: 8)
                return HostCheck("storage-access", .fail,
                    "qemu's user \(qemuUser) cannot enter \(path) (mode \(octal), owner uid \(info.st_uid)): every instance would fail with Permission denied",
                    hint: "chmod o+x \(path) (or give \(qemuUser) search permission another way)")
            }
        }
        return HostCheck("storage-access", .pass, "qemu's user \(qemuUser) can reach \(storagePath)")
    }

    func diskCheck(_ name: String, _ path: String) -> HostCheck {
        var info = statvfs()
        // The nearest existing directory: the path itself may not be made yet.
        var probe = path
        while statvfs(probe, &info) != 0 {
            let parent = (probe as NSString).deletingLastPathComponent
            guard parent != probe, !parent.isEmpty else {
                return HostCheck(name, .fail, "cannot read free space at \(path): \(String(cString: strerror(errno)))", hint: "check that \(path) exists")
            }
            probe = parent
        }
        let free = Double(info.f_bavail) * Double(info.f_frsize)
        let total = Double(info.f_blocks) * Double(info.f_frsize)
        let gib = free / Double(1 << 30)
        let share = total > 0 ? free / total * 100 : 0
        let found = String(format: "%.1f GiB free at %@ (%.0f %%)", gib, probe, share)
        if gib < 1 { return HostCheck(name, .fail, found, hint: "free space on the filesystem holding \(probe)") }
        if gib < 10 || share < 5 { return HostCheck(name, .warn, found, hint: "free space on the filesystem holding \(probe): images and disks need room") }
        return HostCheck(name, .pass, found)
    }

    func programCheck(_ program: (name: String, path: String, required: Bool)) -> HostCheck {
        guard FileManager.default.isExecutableFile(atPath: program.path) else {
            let package = ["dnsmasq": "dnsmasq-base", "qemu-img": "qemu-utils", "prlimit": "util-linux"][program.name] ?? program.name
            return HostCheck("program-\(program.name)", program.required ? .fail : .warn,
                "\(program.path) is missing or not executable" + (program.required ? "" : ": untrusted images are inspected without resource limits"),
                hint: "apt install \(package)")
        }
        return HostCheck("program-\(program.name)", .pass, "\(program.path) is present")
    }

    /// firewalld and nftables.service both replace the host's rules on a reload, taking sfnode's
    /// chains and their hooks with them.
    func firewallManagerCheck() -> HostCheck {
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        let firewalld = processes.contains { entry in
            Int(entry) != nil && ((try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8)) ?? "").hasPrefix("firewalld")
        }
        if firewalld {
            return HostCheck("firewall-manager", .fail, "firewalld runs: its reloads remove sfnode's SFNODE-* chains, and guests lose NAT and floating addresses",
                hint: "systemctl disable --now firewalld (sfnode's agent puts its rules back at its next pass, not at once)")
        }
        if FileManager.default.fileExists(atPath: "/etc/systemd/system/multi-user.target.wants/nftables.service") {
            return HostCheck("firewall-manager", .warn, "nftables.service is enabled: a restart or reload flushes every rule, sfnode's included",
                hint: "systemctl disable nftables, or keep its ruleset from flushing tables it does not own")
        }
        return HostCheck("firewall-manager", .pass, "neither firewalld nor nftables.service manages the rules")
    }

    func clockCheck() -> HostCheck {
        switch csys_clock_synchronised() {
        case 1:
            return HostCheck("clock", .pass, "the clock is synchronised")
        case 0:
            return HostCheck("clock", .warn, "the clock is not synchronised: leases and node check-ins are timed by the store's clock, but logs and events by this one",
                hint: "run an NTP client (systemd-timesyncd, chrony)")
        case let code:
            return HostCheck("clock", .warn, "adjtimex cannot say whether the clock is synchronised: \(String(cString: strerror(-code)))",
                hint: "run an NTP client (systemd-timesyncd, chrony)")
        }
    }

    /// `probe`'s result, or nil when it has not answered within `timeout`. A blocking call (libvirt's,
    /// a database's connect) cannot be cancelled, so the probe is not awaited past the timeout: a
    /// task group would wait for it however long a stuck daemon kept it.
    func answer<Value: Sendable>(within timeout: Duration, _ probe: @escaping @Sendable () async throws -> Value) async -> Result<Value, any Error>? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, any Error>?, Never>) in
            let decided = OnceFlag()
            let running = Task {
                let result: Result<Value, any Error>
                do {
                    result = .success(try await probe())
                } catch {
                    result = .failure(error)
                }
                if decided.claim() { continuation.resume(returning: result) }
            }
            Task {
                try? await Task.sleep(for: timeout)
                if decided.claim() {
                    running.cancel()
                    continuation.resume(returning: nil)
                }
            }
        }
    }

    func libvirtCheck(timeout: Duration, logger: Logger) async -> HostCheck {
        let uri = libvirtURI
        let answer = await answer(within: timeout) {
            let connection = try LibvirtConnection(uri: uri, logger: logger)
            let versions = try await connection.versions()
            await connection.close()
            return versions
        }
        switch answer {
        case .success(let versions):
            return HostCheck("libvirt", .pass, "libvirtd at \(uri) answers: libvirt \(versions.libvirt), QEMU \(versions.hypervisor)")
        case .failure(let error):
            return HostCheck("libvirt", .fail, "libvirtd at \(uri) does not answer: \(error)", hint: "systemctl enable --now libvirtd (or start libvirtd)")
        case nil:
            return HostCheck("libvirt", .fail, "libvirtd at \(uri) did not answer within \(timeout)", hint: "systemctl restart libvirtd")
        }
    }

    /// Whether the store's schema is one this binary reads: a store a newer sfnode migrated fails;
    /// one that lacks migrations passes (the next start applies them). Reads only.
    func schemaCheck(_ location: String, timeout: Duration, logger: Logger) async -> HostCheck {
        let shown = (try? PostgresStoreConfiguration(url: location))?.redactedURL ?? location
        switch await answer(within: timeout, { try await runBlocking { try StoreSchemaStatus.read(location: location, logger: logger) } }) {
        case .success(let status) where status.applied == nil:
            return HostCheck("store-schema", .pass, "no store at \(shown) yet: the first start makes it, at schema \(status.current)")
        case .success(let status) where !status.unknown.isEmpty:
            return HostCheck("store-schema", .fail,
                "the store at \(shown) has migrations this sfnode does not know (\(status.unknown.joined(separator: ", "))): a newer sfnode migrated it, and this one would misread it",
                hint: "run the sfnode that migrated it (or newer), or restore the store from before the upgrade")
        case .success(let status) where !status.pending.isEmpty:
            return HostCheck("store-schema", .pass,
                "the store at \(shown) lacks \(status.pending.count) of this sfnode's migrations; the next start applies them (to \(status.current))")
        case .success(let status):
            return HostCheck("store-schema", .pass, "the store at \(shown) is at schema \(status.current), this sfnode's")
        case .failure(let error):
            return HostCheck("store-schema", .warn, "cannot read the store's schema at \(shown): \(error)",
                hint: "check that the store exists and is readable (SFNODE_STORE_PATH or SFNODE_STORE_URL)")
        case nil:
            return HostCheck("store-schema", .warn, "the store at \(shown) did not answer within \(timeout)", hint: "check the database server")
        }
    }

    /// The egress interface's and the mesh's checks (none when neither is set).
    public func interfaceChecks(logger: Logger) async -> [HostCheck] {
        guard egressInterface != nil || meshInterface != nil else { return [] }
        let session: NetlinkSession
        do {
            session = try NetlinkSession(namespace: hostNamespace, logger: logger)
        } catch {
            return [HostCheck("interfaces", .fail, "cannot read the host's interfaces: \(error)", hint: "run sfnode doctor as root")]
        }
        var checks: [HostCheck] = []
        if let egress = egressInterface {
            if let link = try? await session.link(named: egress) {
                checks.append(HostCheck("egress-interface", link.isUp ? .pass : .warn, "egress interface \(egress) exists" + (link.isUp ? "" : " but is down"),
                    hint: "bring \(egress) up"))
            } else {
                checks.append(HostCheck("egress-interface", .fail, "egress interface \(egress) does not exist: guests would have no way out",
                    hint: "set egressInterface (SFNODE_EGRESS_INTERFACE) to the uplink's name (ip link lists them)"))
            }
        }
        if let mesh = meshInterface {
            let needed = guestMTU + Self.vxlanOverhead
            if let link = try? await session.link(named: mesh) {
                if link.mtu >= needed {
                    checks.append(HostCheck("mesh-mtu", .pass, "mesh interface \(mesh) has MTU \(link.mtu), room for the guests' \(guestMTU) plus VXLAN's \(Self.vxlanOverhead)"))
                } else {
                    checks.append(HostCheck("mesh-mtu", .fail,
                        "mesh interface \(mesh) has MTU \(link.mtu), less than the guests' \(guestMTU) plus VXLAN's \(Self.vxlanOverhead): large packets between nodes are lost",
                        hint: "raise \(mesh)'s MTU to \(needed) or more, or lower mtu (SFNODE_MTU) to \(link.mtu - Self.vxlanOverhead)"))
                }
            } else {
                checks.append(HostCheck("mesh-mtu", .fail, "mesh interface \(mesh) does not exist", hint: "set meshInterface (SFNODE_MESH_INTERFACE) to the interface holding the mesh address"))
            }
        }
        return checks
    }
}
