import Foundation
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The bootable test guest that `scripts/build-test-image` builds, and what a test needs to boot and
/// talk to it.
///
/// The guest is a busybox initramfs on a syslinux FAT disk. Once up it prints, on its serial console,
/// one `SFNODE-GUEST-IP <ifname> <mac> <ip>` line per NIC (ip is `none` when no DHCP lease came within
/// 60 s) and then `SFNODE-GUEST-READY`. It serves ``bodyText`` on port 80 and, on
/// `GET /cgi-bin/probe?<ipv4>:<port>` (see ``probePath(to:port:)``), connects to that address and sends
/// the line `sfnode-probe`. The ACPI power button powers it off.
public enum TestGuest {
    /// Where `scripts/build-test-image` puts the image unless `SFNODE_TEST_IMAGE` says otherwise.
    public static let defaultBaseImage = "/var/lib/sfnode/test/guest.qcow2"

    /// The base image to put overlays on: `SFNODE_TEST_IMAGE` when set, else ``defaultBaseImage``.
    public static var baseImage: String {
        if let path = ProcessInfo.processInfo.environment["SFNODE_TEST_IMAGE"], !path.isEmpty { return path }
        return defaultBaseImage
    }

    /// Where tests keep overlays, serial logs and lease files. `scripts/cleanup-test-leftovers` empties
    /// it, so nothing else may live here. Reading the property creates the directory when it can; the
    /// throwing helpers below report a directory that cannot be made.
    public static var runDirectory: String {
        try? prepareRunDirectory()
        return runDirectoryPath
    }

    /// The exact body `GET /` returns, without the trailing newline the guest sends after it.
    public static let bodyText = "sfnode-test-guest"

    /// The serial console line that says every NIC has its lease and the web server is up.
    public static let readyMarker = "SFNODE-GUEST-READY"

    /// The prefix of the serial console lines that report each NIC's address.
    public static let addressMarker = "SFNODE-GUEST-IP"

    /// The request path that makes the guest connect to `address:port` and send `sfnode-probe\n`.
    /// The guest answers `probed` (200) when the connection was made, `probe-failed` (502) otherwise.
    public static func probePath(to address: IPv4Address, port: UInt16) -> String {
        "/cgi-bin/probe?\(address):\(port)"
    }

    /// Creates a fresh copy-on-write overlay `<runDirectory>/<name>.qcow2` on ``baseImage`` and returns its
    /// path. An overlay of that name left by an earlier run is replaced, so each boot starts clean.
    public static func makeOverlay(named name: String) throws -> String {
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else {
            throw TestGuestError.invalidName(name)
        }
        let base = baseImage
        guard FileManager.default.fileExists(atPath: base) else {
            throw TestGuestError.baseImageMissing(base)
        }
        try prepareRunDirectory()
        let overlay = "\(runDirectoryPath)/\(name).qcow2"
        if FileManager.default.fileExists(atPath: overlay) {
            try FileManager.default.removeItem(atPath: overlay)
        }
        let result = try run(
            "/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, overlay])
        guard result.status == 0 else {
            throw TestGuestError.commandFailed(
                "qemu-img create overlay \(overlay) on \(base)", status: result.status, stderr: result.stderr)
        }
        return overlay
    }

    /// Polls the serial console file at `path` until it contains `marker`, and returns the whole console
    /// output so far (with the carriage returns of the serial line discipline removed). A file that does
    /// not exist yet counts as empty. On timeout, throws ``TestGuestError/serialTimeout(path:marker:seconds:tail:)``
    /// carrying the last 2 KB of console output, which usually says why the guest did not get there.
    public static func waitForSerial(
        path: String, containing marker: String, timeout: Duration = .seconds(120)
    ) async throws -> String {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            let text = readConsole(path)
            if text.contains(marker) { return text }
            if clock.now >= deadline {
                let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
                throw TestGuestError.serialTimeout(
                    path: path, marker: marker, seconds: seconds, tail: String(text.suffix(2048)))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The address of each NIC, by interface name, from the `SFNODE-GUEST-IP` lines in `console`.
    /// NICs reported without an address (`none`) are left out; when a NIC is reported more than once
    /// (its lease changed), the last report wins.
    public static func guestIPs(fromSerial console: String) -> [String: String] {
        var addresses: [String: String] = [:]
        for line in console.split(whereSeparator: \.isNewline) {
            // Other console output (kernel, udhcpc) may share the line, so look for the marker anywhere.
            guard let marker = line.range(of: addressMarker + " ") else { continue }
            let fields = line[marker.upperBound...].split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3 else { continue }
            let address = String(fields[2])
            guard IPv4Address(address) != nil else { continue }
            addresses[String(fields[0])] = address
        }
        return addresses
    }

    private static let runDirectoryPath = "/var/lib/sfnode/test/run"

    private static func prepareRunDirectory() throws {
        try FileManager.default.createDirectory(
            atPath: runDirectoryPath, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    }

    /// The console file's text; serial output is bytes, so anything that is not UTF-8 becomes U+FFFD.
    private static func readConsole(_ path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\r", with: "")
    }
}

/// Why a test guest helper failed.
public enum TestGuestError: Error, CustomStringConvertible {
    /// The base image does not exist.
    case baseImageMissing(String)
    /// A name that cannot name a file in the run directory.
    case invalidName(String)
    /// A command exited with a nonzero status.
    case commandFailed(String, status: Int32, stderr: String)
    /// The serial console did not show the marker in time; `tail` is the last console output.
    case serialTimeout(path: String, marker: String, seconds: Double, tail: String)

    public var description: String {
        switch self {
        case .baseImageMissing(let path):
            return "test guest base image \(path) does not exist: run scripts/build-test-image"
        case .invalidName(let name):
            return "'\(name)' cannot name a test guest overlay"
        case .commandFailed(let what, let status, let stderr):
            return "\(what): exit status \(status): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
        case .serialTimeout(let path, let marker, let seconds, let tail):
            return "'\(marker)' did not appear in \(path) within \(seconds) s; last console output:\n\(tail)"
        }
    }
}

/// What a finished command printed and how it ended.
public struct NamespaceCommandOutput: Sendable {
    /// The exit status; 128 + the signal number when a signal killed the command (as a shell reports it).
    public let status: Int32
    /// Everything it wrote to standard output.
    public let stdout: String
    /// Everything it wrote to standard error.
    public let stderr: String
}

/// Runs `ip netns exec <namespace> <command...>` to completion and returns its status and output.
/// Tests use it to be a client inside a namespace they made (`wget`, `busybox nc`) or to cross-check
/// state read-only (`ip`, `iptables-legacy-save`). Only namespaces named with ``TestNames/prefix`` are
/// allowed, so a test can never run something in a namespace it did not make. A command that leaves
/// a daemon holding its output open would never finish here: start those with
/// ``startInNamespace(_:command:outputPath:)``.
///
/// The `command:` label keeps this apart from test targets' own unlabelled `runInNamespace(_:_:)`.
public func runInNamespace(_ namespace: String, command: [String]) throws -> NamespaceCommandOutput {
    precondition(namespace.hasPrefix(TestNames.prefix), "tests only run commands in their own namespaces")
    return try run("/usr/sbin/ip", ["netns", "exec", namespace] + command)
}

/// Starts `ip netns exec <namespace> <command...>` and returns without waiting: for listeners, dnsmasq
/// and other long-running helpers. `ip netns exec` execs the command, so the returned process is the
/// command itself. Its standard output and error go to the file `outputPath` (created or truncated)
/// when given, else nowhere. The caller ends it with ``BackgroundProcess/terminate()`` and
/// ``BackgroundProcess/waitUntilExit()``; one that is dropped while still running is killed.
public func startInNamespace(
    _ namespace: String, command: [String], outputPath: String? = nil
) throws -> BackgroundProcess {
    precondition(namespace.hasPrefix(TestNames.prefix), "tests only run commands in their own namespaces")
    let output: Int32
    if let outputPath {
        output = open(outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if output < 0 { throw SystemError.fromErrno("open \(outputPath)") }
    } else {
        output = open("/dev/null", O_WRONLY | O_CLOEXEC)
        if output < 0 { throw SystemError.fromErrno("open /dev/null") }
    }
    defer { close(output) }
    let pid = try spawn(["/usr/sbin/ip", "netns", "exec", namespace] + command, stdout: output, stderr: output)
    return BackgroundProcess(pid: pid, command: command.joined(separator: " "))
}

/// A child process started by ``startInNamespace(_:command:outputPath:)``.
///
/// Not a Foundation `Process`, on purpose: Foundation learns that a child ended when a socket the child
/// inherited closes, and then waits for it without a timeout on the one thread that serves every
/// `Process`. dnsmasq closes all inherited descriptors at start, so under Foundation a running dnsmasq
/// stalls `waitUntilExit()` of every later `Process` (qemu-img, ip, ...) until dnsmasq itself exits.
/// These processes are spawned and reaped directly instead.
public final class BackgroundProcess: Sendable {
    /// The child's process id.
    public let processIdentifier: Int32
    /// The command line, for messages.
    public let command: String
    /// The wait status once the child has been reaped.
    private let reaped = Mutex<Int32?>(nil)

    fileprivate init(pid: Int32, command: String) {
        self.processIdentifier = pid
        self.command = command
    }

    deinit {
        if reaped.withLock({ $0 }) == nil {
            kill(processIdentifier, SIGKILL)
            waitUntilExit()
        }
    }

    /// Whether the child is still running (reaps it if it has ended).
    public var isRunning: Bool {
        reaped.withLock { status in
            if status != nil { return false }
            var raw: Int32 = 0
            let rc = waitpid(processIdentifier, &raw, WNOHANG)
            if rc == processIdentifier { status = raw; return false }
            return rc == 0
        }
    }

    /// Sends SIGTERM, unless the child has already been reaped (its pid may belong to another process).
    public func terminate() {
        reaped.withLock { status in
            if status == nil { kill(processIdentifier, SIGTERM) }
        }
    }

    /// Blocks until the child has ended and been reaped.
    public func waitUntilExit() {
        if reaped.withLock({ $0 }) != nil { return }
        let raw = waitForChild(processIdentifier)
        reaped.withLock { status in
            if status == nil { status = raw }
        }
    }

    /// The exit status, 128 + signal number when a signal ended it, or nil while it runs.
    public var terminationStatus: Int32? {
        reaped.withLock { $0 }.map(exitStatus)
    }
}

/// Runs a program to completion, capturing its output. Standard error is drained on its own thread so
/// that a command filling one pipe while the other is read cannot deadlock.
private func run(_ executable: String, _ arguments: [String]) throws -> NamespaceCommandOutput {
    let outPipe = try makePipe()
    let errPipe: [Int32]
    do {
        errPipe = try makePipe()
    } catch {
        close(outPipe[0])
        close(outPipe[1])
        throw error
    }
    let pid: Int32
    do {
        pid = try spawn([executable] + arguments, stdout: outPipe[1], stderr: errPipe[1])
    } catch {
        for fd in outPipe + errPipe { close(fd) }
        throw error
    }
    close(outPipe[1])
    close(errPipe[1])
    let errorData = Mutex([UInt8]())
    let drained = DispatchSemaphore(value: 0)
    let errorReader = errPipe[0]
    Thread {
        let data = readAll(errorReader)
        errorData.withLock { $0 = data }
        drained.signal()
    }.start()
    let outputData = readAll(outPipe[0])
    drained.wait()
    close(outPipe[0])
    close(errPipe[0])
    let raw = waitForChild(pid)
    return NamespaceCommandOutput(
        status: exitStatus(raw), stdout: String(decoding: outputData, as: UTF8.self),
        stderr: String(decoding: errorData.withLock { $0 }, as: UTF8.self))
}

/// posix_spawn with a clean signal state: the spawning thread may be a dispatch worker that blocks
/// signals, and a child that inherits a blocked SIGTERM could never be terminated.
private func spawn(_ argv: [String], stdout: Int32, stderr: Int32) throws -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, stdout, 1)
    posix_spawn_file_actions_adddup2(&actions, stderr, 2)

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for argument in cArguments { free(argument) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, &attributes, cArguments, environ)
    if rc != 0 { throw SystemError("posix_spawn \(argv[0])", code: rc) }
    return pid
}

/// A pipe whose ends are not inherited by other children (pipe2 needs _GNU_SOURCE, which Glibc's Swift
/// module does not define); the window before FD_CLOEXEC is set only matters to a concurrent spawn.
private func makePipe() throws -> [Int32] {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { throw SystemError.fromErrno("pipe") }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return fds
}

private func readAll(_ fd: Int32) -> [UInt8] {
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count > 0 {
            data.append(contentsOf: buffer[0..<count])
        } else if count == 0 || errno != EINTR {
            return data
        }
    }
}

/// The raw wait status of `pid`, retrying interrupted waits. A child that someone else reaped reads
/// as killed by SIGKILL, so callers never hang on it.
private func waitForChild(_ pid: Int32) -> Int32 {
    var raw: Int32 = 0
    while waitpid(pid, &raw, 0) < 0 {
        if errno != EINTR { return SIGKILL }
    }
    return raw
}

/// A shell's view of a wait status: the exit code, or 128 + the signal number.
private func exitStatus(_ raw: Int32) -> Int32 {
    let signal = raw & 0x7f
    return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
}
