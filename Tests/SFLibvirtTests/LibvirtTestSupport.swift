import Foundation
import SFSystem
import Logging
import SFLibvirt
import SFTestSupport
import Synchronization
import Testing

/// Every suite that talks to libvirtd nests in this one, so they run one at a time: the guest is
/// CPU-hungry under TCG, and the reconnect test must tell its own libvirtd client from the others.
@Suite(.serialized) enum LibvirtIntegration {}

/// The logger every libvirt test hands the library; warnings (reconnects) show in the test output.
let testLogger: Logger = {
    var logger = Logger(label: "sfnode.test.libvirt")
    logger.logLevel = .warning
    return logger
}()

/// Whether libvirtd answers on qemu:///system; the integration suites need it as well as root.
let libvirtAvailable: Bool = runningAsRoot && FileManager.default.fileExists(atPath: "/var/run/libvirt/libvirt-sock")

/// Runs a tool and returns its exit status and standard output (for read-only cross-checks).
@discardableResult
func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let result = try ChildProcess.run([tool] + arguments)
    return (result.status, result.stdout)
}

/// `virsh domstate`, read-only, to check what the bindings report against libvirt's own client.
func virshState(_ name: String) throws -> String {
    try run("/usr/bin/virsh", ["-c", "qemu:///system", "domstate", name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// `virsh domstats` of one domain, as name to value.
func virshDomainStats(_ name: String) throws -> [String: String] {
    var values: [String: String] = [:]
    for line in try run("/usr/bin/virsh", ["-c", "qemu:///system", "domstats", name]).output.split(separator: "\n") {
        let parts = line.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
        if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
    }
    return values
}

/// Every domain name `virsh list --all` shows.
func virshNames() throws -> Set<String> {
    Set(try run("/usr/bin/virsh", ["-c", "qemu:///system", "list", "--all", "--name"]).output.split(separator: "\n").map(String.init))
}


/// Collects a lifecycle stream in the background so that a test can wait for the events one
/// operation raised.
final class EventLog: Sendable {
    private final class Store: Sendable {
        let events = Mutex<[DomainLifecycleEvent]>([])
    }
    private let store = Store()
    private let consumer: Task<Void, Never>

    init(_ stream: AsyncStream<DomainLifecycleEvent>) {
        let store = store
        consumer = Task {
            for await event in stream {
                store.events.withLock { $0.append(event) }
            }
        }
    }

    deinit {
        consumer.cancel()
    }

    /// The events seen so far for one domain.
    func events(for uuid: UUID) -> [DomainLifecycleEvent] {
        store.events.withLock { $0.filter { $0.identity.uuid == uuid } }
    }

    /// Runs `operation`, then waits until `count` new events arrived for the domain (or the
    /// timeout passed), lingers briefly to catch unexpected extras, and returns the new events.
    func collect(
        for uuid: UUID, count: Int, timeout: Duration = .seconds(30), _ operation: () async throws -> Void
    ) async rethrows -> [DomainLifecycleEvent] {
        let mark = events(for: uuid).count
        try await operation()
        _ = await eventually(timeout: timeout) { self.events(for: uuid).count - mark >= count }
        try? await Task.sleep(for: .milliseconds(300))
        return Array(events(for: uuid).dropFirst(mark))
    }
}

/// A copy-on-write overlay of the test guest (``TestGuest``) and the file its serial console writes
/// to, removed when the test ends (and by scripts/cleanup-test-leftovers after a killed run).
struct GuestFiles {
    let overlay: String
    let serialLog: String

    init(name: String) throws {
        overlay = try TestGuest.makeOverlay(named: name)
        serialLog = "\(TestGuest.runDirectory)/\(name).serial"
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: overlay)
        try? FileManager.default.removeItem(atPath: serialLog)
    }

    /// Waits for the guest's first boot to finish; on timeout the error carries the console's tail.
    func waitForFirstBoot() async throws {
        _ = try await TestGuest.waitForSerial(path: serialLog, containing: TestGuest.readyMarker)
    }

    /// How many times the guest has printed the ready marker: once per boot, as the serial log
    /// is appended to across reboots and restarts.
    var boots: Int {
        guard let text = try? String(contentsOfFile: serialLog, encoding: .utf8) else { return 0 }
        return text.components(separatedBy: TestGuest.readyMarker).count - 1
    }

    /// Waits until the guest has booted `count` times in all.
    func waitForBoots(_ count: Int, timeout: Duration = .seconds(120)) async -> Bool {
        await eventually(timeout: timeout) { boots >= count }
    }
}

/// Defines a domain, runs `body`, and always destroys and undefines it afterwards, whatever `body` did.
func withDomain<T>(
    _ connection: LibvirtConnection, _ spec: DomainSpec, _ body: (DomainIdentity) async throws -> T
) async throws -> T {
    let identity = try await connection.define(spec)
    do {
        let result = try await body(identity)
        try await connection.destroy(.uuid(identity.uuid))
        try await connection.undefine(.uuid(identity.uuid))
        return result
    } catch {
        try? await connection.destroy(.uuid(identity.uuid))
        try? await connection.undefine(.uuid(identity.uuid))
        throw error
    }
}
