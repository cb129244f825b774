import ArgumentParser
import Foundation
import Logging
import SFDaemonSupport
import SFDoctor

#if canImport(Glibc)
import Glibc
#endif

/// `sfnode doctor`: checks this host for what sfnode needs, one line each in virt-host-validate's
/// PASS/WARN/FAIL style with what to do; exits 0 when all pass, 1 on warnings, 2 on failures.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check this host for what sfnode needs, and say what to fix (exit 0: all pass, 1: warnings, 2: failures).")

    @Option(help: "The configuration file (default: $SFNODE_CONFIG, else /etc/sfnode/agent.json).")
    var config: String?

    @Flag(help: "Print the checks as JSON, for scripts.")
    var json = false

    func run() async throws {
        let settings = try NodeConfiguration.load(commandLinePath: config)
        var logger = Logger(label: "sfnode.doctor")
        logger.logLevel = .critical
        let report = await HostChecks(configuration: settings).run(logger: logger)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
        fflush(nil)
        throw ExitCode(report.exitCode)
    }
}
