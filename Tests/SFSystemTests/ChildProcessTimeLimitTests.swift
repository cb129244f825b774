import Foundation
import SFSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `ChildProcess.run`'s wall-clock limit: a command past it is killed with its whole process group
/// and the run says so; a command within it runs as before.
@Suite struct ChildProcessTimeLimitTests {
    @Test func aSleepingCommandIsKilledAtTheLimit() throws {
        #expect(throws: ChildProcessError.timedOut(command: "/bin/sleep 600", limit: .milliseconds(300))) {
            _ = try ChildProcess.run(["/bin/sleep", "600"], timeLimit: .milliseconds(300))
        }
        let message = ChildProcessError.timedOut(command: "/bin/sleep 600", limit: .seconds(2)).description
        #expect(message.hasPrefix("/bin/sleep 600 was killed after running for its limit of 2"))
    }

    @Test func grandchildrenHoldingTheOutputAreKilledToo() throws {
        // The shell's sleep keeps standard output open: only killing the group ends the read.
        let marker = "600.\(UInt32.random(in: 10_000...99_999))"
        #expect(throws: ChildProcessError.self) {
            _ = try ChildProcess.run(["/bin/sh", "-c", "/bin/sleep \(marker) & wait"], timeLimit: .milliseconds(300))
        }
        // No process with the marker on its command line is left.
        let left = try ChildProcess.run(["/usr/bin/pgrep", "-f", "sleep \(marker)"])
        #expect(left.stdout.isEmpty)
    }

    @Test func aCommandWithinTheLimitRunsAsBefore() throws {
        let output = try ChildProcess.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], timeLimit: .seconds(30))
        #expect(output.status == 3 && output.stdout == "out\n" && output.stderr == "err\n")
    }
}
