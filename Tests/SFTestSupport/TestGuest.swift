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
/// the line `sfnode-probe`. The ACPI power button powers it off. At boot it mounts its config drive
/// (the disk labelled config-2), serves that drive's `openstack/latest/meta_data.json` at
/// ``metaDataPath`` and prints `SFNODE-GUEST-CONFIG-DRIVE <device>` (`none` without a drive).
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

    /// The serial console line's prefix that names the config drive's device (or `none`).
    public static let configDriveMarker = "SFNODE-GUEST-CONFIG-DRIVE"

    /// Where the guest's web server serves the meta_data.json of its config drive (404 without one).
    public static let metaDataPath = "/meta_data.json"

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
        let result = try ChildProcess.run(
            ["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, overlay])
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

/// Runs `ip netns exec <namespace> <command...>` to completion and returns its status and output.
/// Tests use it to be a client inside a namespace they made (`wget`, `busybox nc`) or to cross-check
/// state read-only (`ip`, `iptables-legacy-save`). Only namespaces named with ``TestNames/prefix`` are
/// allowed, so a test can never run something in a namespace it did not make. A command that leaves
/// a daemon holding its output open would never finish here: start those with
/// ``startInNamespace(_:command:outputPath:)``.
///
/// The `command:` label keeps this apart from test targets' own unlabelled `runInNamespace(_:_:)`.
public func runInNamespace(_ namespace: String, command: [String]) throws -> CommandOutput {
    precondition(namespace.hasPrefix(TestNames.prefix), "tests only run commands in their own namespaces")
    return try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", namespace] + command)
}

/// Starts `ip netns exec <namespace> <command...>` and returns without waiting: for listeners and
/// other long-running helpers. `ip netns exec` execs the command, so the returned process is the
/// command itself. Its standard output and error go to the file `outputPath` when given, else nowhere.
public func startInNamespace(
    _ namespace: String, command: [String], outputPath: String? = nil
) throws -> ChildProcess {
    precondition(namespace.hasPrefix(TestNames.prefix), "tests only run commands in their own namespaces")
    if let outputPath { FileManager.default.createFile(atPath: outputPath, contents: nil) }
    return try ChildProcess.spawn(["/usr/sbin/ip", "netns", "exec", namespace] + command, outputPath: outputPath)
}
