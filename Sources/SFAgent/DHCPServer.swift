import Foundation
import Logging
import SFControl
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// One interface's fixed DHCP lease.
public struct DHCPHost: Sendable, Equatable, Hashable {
    public var mac: MACAddress
    public var address: IPv4Address
    public var hostname: String?

    public init(mac: MACAddress, address: IPv4Address, hostname: String? = nil) {
        self.mac = mac
        self.address = address
        self.hostname = hostname
    }

    /// The dnsmasq hosts-file line. Hostnames are reduced to what DHCP allows, so that no user
    /// string can add fields or lines to the file.
    var line: String {
        if let name = hostname.map(DNSService.label), !name.isEmpty { return "\(mac),\(address),\(name)" }
        return "\(mac),\(address)"
    }

    /// The addn-hosts line that names the interface's address in DNS, `<address> <name>.<domain>
    /// <name>`; nil without a usable name.
    func dnsLine(domain: String) -> String? {
        guard let name = hostname.map(DNSService.label), !name.isEmpty else { return nil }
        return "\(address) \(name).\(domain) \(name)"
    }
}

/// The agent's DNS settings for networks with DNS (`SFNODE_DNS_ZONE`, `SFNODE_DNS_SERVER`).
public struct DNSSettings: Sendable, Equatable {
    /// The zone under which each namespace's names resolve: `<instance>.<namespace>.<zone>`.
    public var zone: String
    /// Where names outside the zone are forwarded; nil forwards nothing.
    public var upstream: IPv4Address?

    public init(zone: String = "shakenfist", upstream: IPv4Address? = nil) {
        self.zone = zone
        self.upstream = upstream
    }
}

/// What one network's dnsmasq serves in DNS, on its router address, port 53.
public struct DNSService: Sendable, Equatable {
    /// `<network's namespace>.<zone>`: answered from the network's hosts, never forwarded.
    public var domain: String
    /// Where other names go; nil answers them with nothing.
    public var upstream: IPv4Address?

    /// The service of a network in `namespace`, under `settings`.
    public init(namespace: String, settings: DNSSettings) {
        let label = Self.label(namespace)
        domain = (label.isEmpty ? "namespace" : label) + "." + settings.zone
        upstream = settings.upstream
    }

    /// `text` as one DNS label (and DHCP host name): lower case letters, digits and '-', at most 63
    /// bytes, so that no user string can add fields or lines to dnsmasq's files.
    static func label(_ text: String) -> String {
        String(text.lowercased().filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }.prefix(63))
    }
}

/// dnsmasq serving DHCP, and DNS when the network provides it, for one network, inside the
/// network's namespace.
///
/// Its files live in one directory per network: `hosts` (one fixed lease per interface), `dnshosts`
/// (with DNS: each interface's address and names, then the extra records), `leases` and `pid`.
/// Changing the hosts re-writes the files atomically and sends SIGHUP, which makes dnsmasq re-read
/// them without dropping leases. A dnsmasq found running from an earlier agent (its pid file names a
/// live dnsmasq for this directory) is adopted rather than duplicated; one that died is started again
/// and reaped. An adopted one keeps the DNS upstream it was started with.
public actor DHCPServer {
    public let directory: String
    private let interface: String
    private let router: IPv4Prefix
    /// Whether dnsmasq hands out addresses (the network's provide_dhcp).
    private let dhcp: Bool
    /// What it serves in DNS; nil keeps DNS off (`--port=0`).
    private let dns: DNSService?
    /// The thread in the network's namespace that dnsmasq is started from.
    public nonisolated let thread: NamespaceExecutor
    private let logger: Logger
    private var child: ChildProcess?
    /// Whether the running dnsmasq is known to have read the hosts file as it is now. Not so for one
    /// adopted from an earlier agent, which may have died between writing the file and the SIGHUP.
    private var hostsApplied = false

    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.executor.asUnownedSerialExecutor() }

    /// A server for the network whose router address is `router` on `interface`, in `thread`'s namespace.
    public init(
        directory: String, interface: String, router: IPv4Prefix, dhcp: Bool = true, dns: DNSService? = nil,
        thread: NamespaceExecutor, logger: Logger
    ) {
        self.directory = directory
        self.interface = interface
        self.router = router
        self.dhcp = dhcp
        self.dns = dns
        self.thread = thread
        var logger = logger
        logger[metadataKey: "dhcp.directory"] = "\(directory)"
        self.logger = logger
    }

    private var hostsPath: String { directory + "/hosts" }
    private var dnsHostsPath: String { directory + "/dnshosts" }
    private var pidPath: String { directory + "/pid" }
    private var leasesPath: String { directory + "/leases" }

    /// Makes dnsmasq run with exactly `hosts`, and with DNS, the network's `extraNames` (extra
    /// records, name to address; a name without a dot also answers within the network's domain).
    /// Returns what it did, for events.
    @discardableResult
    public func ensure(hosts: [DHCPHost], extraNames: [String: IPv4Address] = [:]) throws -> DHCPChange {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var files = [(hostsPath, hosts.map(\.line).sorted().joined(separator: "\n") + "\n")]
        if let dns {
            // Names the control layer checked; the records after the instances', as Shaken Fist writes them.
            let extra = extraNames.sorted { $0.key < $1.key }.map { name, address in
                name.contains(".") ? "\(address) \(name)" : "\(address) \(name).\(dns.domain) \(name)"
            }
            let lines = hosts.compactMap { $0.dnsLine(domain: dns.domain) }.sorted() + extra
            files.append((dnsHostsPath, lines.joined(separator: "\n") + "\n"))
        }
        var changed = false
        for (path, text) in files where (try? String(contentsOfFile: path, encoding: .utf8)) != text {
            // dnsmasq re-reading on SIGHUP never sees half a file.
            try AtomicFile.write(Data(text.utf8), to: path, mode: 0o644)
            changed = true
        }
        try stopStray()
        if let pid = runningPID() {
            if changed || !hostsApplied {
                hostsApplied = true
                kill(pid, SIGHUP)
                logger.info("dnsmasq told to re-read its hosts", metadata: ["dhcp.pid": "\(pid)", "dhcp.hosts": "\(hosts.count)"])
                return .reloaded
            }
            return .unchanged
        }
        try start()
        hostsApplied = true
        return .started
    }

    /// Stops dnsmasq and removes its directory. Stopping what is not running is not an error.
    public func stop() throws {
        if let pid = recordedPID() { try terminate(pid) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// ``stop()`` for a server known only by its directory (its network unknown, as when the host is
    /// reset): stopping reads nothing but the directory's pid file, so the interface and router a
    /// running server needs are left empty.
    public static func stop(directory: String, thread: NamespaceExecutor, logger: Logger) async throws {
        let server = DHCPServer(
            directory: directory, interface: "", router: try IPv4Prefix(address: IPv4Address(0), length: 32), thread: thread,
            logger: logger)
        try await server.stop()
    }

    /// The pid of the dnsmasq serving this directory in this namespace, if one runs: our child, or
    /// one an earlier agent started (found through the pid file and checked against its command line,
    /// so a reused pid is never mistaken for it).
    public func runningPID() -> Int32? {
        guard let pid = recordedPID() else { return nil }
        return NetworkNamespace.identity(ofProcess: pid) == thread.identity ? pid : nil
    }

    /// The live dnsmasq the pid file names for this directory, in whichever namespace.
    private func recordedPID() -> Int32? {
        if let child, child.isRunning { return child.processIdentifier }
        child = nil
        guard let text = try? String(contentsOfFile: pidPath, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
            let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
        else { return nil }
        let command = String(decoding: raw, as: UTF8.self)
        return command.hasPrefix("/usr/sbin/dnsmasq") && command.contains("--dhcp-hostsfile=\(hostsPath)") ? pid : nil
    }

    /// Stops this directory's dnsmasq when it runs in another namespace: the network's namespace was
    /// deleted and made again, and the old dnsmasq serves (and keeps alive) one nobody can reach.
    private func stopStray() throws {
        guard let pid = recordedPID(), NetworkNamespace.identity(ofProcess: pid) != thread.identity else { return }
        try terminate(pid)
        logger.warning("stopped a dnsmasq left in a namespace that no longer has the network's name", metadata: ["dhcp.pid": "\(pid)"])
    }

    /// Sends SIGTERM and waits (up to 2 s) for the process to go, then SIGKILL (up to 2 s more), so
    /// that it cannot remove the pid file of one started after it, nor live on unseen once its
    /// directory is gone. It is reaped when it is this process's child, even one whose
    /// ``ChildProcess`` was dropped with an earlier server object (it would stay a zombie otherwise).
    private func terminate(_ pid: Int32) throws {
        for signal in [SIGTERM, SIGKILL] {
            kill(pid, signal)
            if let child, child.processIdentifier == pid {
                // Ours: reaped through its ChildProcess (isRunning reaps), never waited for unbounded.
                let deadline = ContinuousClock.now + .seconds(2)
                while child.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
                if !child.isRunning {
                    self.child = nil
                    return
                }
            } else if ChildProcess.waitForExit(pid: pid, upTo: .seconds(2)) {
                return
            }
        }
        throw ControlError.commandFailed("stopping dnsmasq \(pid) for \(directory)", "it is still running after SIGKILL")
    }

    private func start() throws {
        var arguments = [
            "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--bind-interfaces", "--interface=\(interface)", "--except-interface=lo",
            "--dhcp-hostsfile=\(hostsPath)", "--dhcp-leasefile=\(leasesPath)", "--pid-file=\(pidPath)",
        ]
        if dhcp {
            arguments += [
                "--dhcp-range=\(router.host(2)),static,\(router.netmask),1h", "--dhcp-option=3,\(router.address)",
                "--dhcp-authoritative",
            ]
        }
        if let dns {
            // Port 53 on the router address only (bind-interfaces); the zone is answered from the
            // hosts file alone, and everything else goes to the one upstream, or nowhere.
            arguments += [
                "--listen-address=\(router.address)", "--addn-hosts=\(dnsHostsPath)", "--domain=\(dns.domain)",
                "--local=/\(dns.domain)/", "--domain-needed", "--bogus-priv",
            ]
            if let upstream = dns.upstream { arguments.append("--server=\(upstream)") }
            if dhcp { arguments.append("--dhcp-option=6,\(router.address)") }
        } else {
            arguments.append("--port=0")
        }
        arguments += [
            // A guest controls what dnsmasq logs: every DHCPDISCOVER from a random MAC is a line, so a
            // file log (the old `--log-facility=-` into <dir>/log, never rotated) let one guest fill
            // the store's file system. --quiet-* drops the routine lines, but refusals ("no address
            // available") are still logged for each packet; so dnsmasq logs to syslog, its default,
            // where journald rate-limits it per unit and rotates it within SystemMaxUse (where
            // there is no syslog socket, dnsmasq drops the lines). Standard error still goes to
            // <dir>/log: dnsmasq prints a failed start-up there too, which start() reports, and
            // nothing after start-up writes to it.
            "--quiet-dhcp", "--quiet-dhcp6", "--quiet-ra",
        ]
        // Spawned from the namespace's thread (this actor's executor), so it runs inside the namespace.
        try? FileManager.default.removeItem(atPath: pidPath)
        // A fresh file per start: only this start's errors, never a growing history.
        try? FileManager.default.removeItem(atPath: directory + "/log")
        let started = try ChildProcess.spawn(arguments, outputPath: directory + "/log")
        // dnsmasq serves the network whether or not an agent runs: a restarting agent adopts it.
        started.keepRunningWhenReleased()
        child = started
        // It writes its pid file once it has bound its sockets; one that exits first says why in its log.
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: pidPath) {
            guard started.isRunning else {
                let log = (try? String(contentsOfFile: directory + "/log", encoding: .utf8)) ?? ""
                child = nil
                throw ControlError.commandFailed("dnsmasq for \(directory)", String(log.suffix(500)))
            }
            usleep(10_000)
        }
        logger.info("dnsmasq started", metadata: ["dhcp.pid": "\(child?.processIdentifier ?? 0)"])
    }
}

/// What ``DHCPServer/ensure(hosts:)`` did.
public enum DHCPChange: Sendable, Equatable {
    case unchanged, reloaded, started
}
