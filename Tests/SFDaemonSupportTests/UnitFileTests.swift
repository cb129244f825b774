import Foundation
import SFSystem
import Testing

/// The repository root, found from this file's path (Tests/SFDaemonSupportTests/UnitFileTests.swift).
private let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

@Suite("systemd unit")
struct UnitFileTests {
    private static let systemdAnalyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    @Test(
        "scripts/verify-unit passes (systemd-analyze verify on the unit)",
        .enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed (the systemd package, from scripts/setup-host)"))
    func verifyUnit() throws {
        let output = try ChildProcess.run(["/bin/bash", repositoryRoot + "/scripts/verify-unit"])
        #expect(output.status == 0, "\(output.stdout)\(output.stderr)")
        #expect(output.stdout.contains("OK"))
    }

    @Test(
        "scripts/verify-unit fails on a unit with an unknown key",
        .enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed (the systemd package, from scripts/setup-host)"))
    func verifyUnitCatchesMistakes() throws {
        let unit = try String(contentsOfFile: repositoryRoot + "/systemd/sfnode-agent.service", encoding: .utf8)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sfd-unit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broken = directory + "/sfnode-agent.service"
        try unit.replacingOccurrences(of: "WatchdogSec=30", with: "WatchdogSec=30\nWatchDogSeconds=30")
            .write(toFile: broken, atomically: true, encoding: .utf8)
        let output = try ChildProcess.run(["/bin/bash", repositoryRoot + "/scripts/verify-unit", broken])
        #expect(output.status != 0)
        #expect(output.stdout.contains("WatchDogSeconds"))
    }

    @Test("the unit is Type=notify with the watchdog, restart and stop timeout the agent relies on")
    func settings() throws {
        let unit = try String(contentsOfFile: repositoryRoot + "/systemd/sfnode-agent.service", encoding: .utf8)
        let lines = Set(unit.split(separator: "\n").map(String.init))
        for expected in [
            "Type=notify", "NotifyAccess=main", "ExecStart=/usr/local/bin/sfnode agent", "WatchdogSec=30",
            "Restart=on-failure", "KillSignal=SIGTERM", "TimeoutStopSec=30",
        ] {
            #expect(lines.contains(expected), "missing \(expected)")
        }
        #expect(lines.contains { $0.hasPrefix("After=") && $0.contains("libvirtd.service") && $0.contains("network-online.target") })
        #expect(lines.contains { $0.hasPrefix("Wants=") && $0.contains("libvirtd.service") })
        // A private network or mount namespace would hide the host's network and /run/netns from the agent.
        for forbidden in ["PrivateNetwork=", "ProtectSystem=", "PrivateTmp=", "RestrictNamespaces="] {
            #expect(!lines.contains { $0.hasPrefix(forbidden) }, "\(forbidden) must not be set")
        }
    }
}
