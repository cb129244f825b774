import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a finished command printed and how it ended.
public struct CommandOutput: Sendable {
    /// The exit status; 128 + the signal number when a signal killed the command (as a shell reports it).
    public let status: Int32
    /// Everything it wrote to standard output.
    public let stdout: String
    /// Everything it wrote to standard error.
    public let stderr: String
}

/// A child process, spawned with `posix_spawn` and reaped with `waitpid`.
///
/// It is spawned from the calling thread, so a child started on a ``NamespaceExecutor`` thread runs
/// inside that thread's network namespace: that is how sfnode starts dnsmasq in a network's
/// namespace without `ip netns exec`.
///
/// Not a Foundation `Process`, on purpose: Foundation learns that a child ended when a socket the child
/// inherited closes, and then waits for it without a timeout on the one thread that serves every
/// `Process`. dnsmasq closes all inherited descriptors at start, so under Foundation a running dnsmasq
/// stalls `waitUntilExit()` of every later `Process` (qemu-img, ip, ...) until dnsmasq itself exits.
/// These processes are spawned and reaped directly instead.
public final class ChildProcess: Sendable {
    /// The child's process id.
    public let processIdentifier: Int32
    /// The command line, for messages.
    public let command: String
    /// The wait status once the child has been reaped.
    private let reaped = Mutex<Int32?>(nil)

    private init(pid: Int32, command: String) {
        self.processIdentifier = pid
        self.command = command
    }

    /// Starts `argv` (an absolute executable path, then its arguments) with standard input from
    /// `/dev/null` and standard output and error to the given descriptors, with every signal at its
    /// default and none blocked. A child dropped while still running is killed.
    public static func spawn(_ argv: [String], stdout: Int32, stderr: Int32) throws -> ChildProcess {
        let pid = try spawnProcess(argv, stdout: stdout, stderr: stderr)
        return ChildProcess(pid: pid, command: argv.joined(separator: " "))
    }

    /// Starts `argv` with standard output and error appended to the file `outputPath` (created if
    /// needed), or discarded when it is nil.
    public static func spawn(_ argv: [String], outputPath: String?) throws -> ChildProcess {
        let path = outputPath ?? "/dev/null"
        let output = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if output < 0 { throw SystemError.fromErrno("open \(path)") }
        defer { close(output) }
        return try spawn(argv, stdout: output, stderr: output)
    }

    /// Runs `argv` to completion, with `input` (if any) on its standard input, and returns its
    /// status and output. Standard error is drained on its own thread so that a command filling one
    /// pipe while the other is read cannot deadlock.
    ///
    /// With a `timeLimit`, the command runs in a process group of its own, and the whole group is
    /// killed (SIGKILL) once the limit has passed: a crafted image can keep qemu-img busy for ever,
    /// and a job waiting on it would hold the agent.
    ///
    /// - Throws: ``ChildProcessError/timedOut(command:limit:)`` when the limit killed it.
    public static func run(_ argv: [String], input: String? = nil, timeLimit: Duration? = nil) throws -> CommandOutput {
        try runCommand(argv, input: input, timeLimit: timeLimit)
    }

    /// Whether releasing this object leaves the child running (a daemon meant to outlive its
    /// starter, such as dnsmasq across agent restarts).
    private let keepsRunning = Mutex(false)

    /// Lets the child outlive this object: releasing it no longer kills the child.
    public func keepRunningWhenReleased() {
        keepsRunning.withLock { $0 = true }
    }

    deinit {
        if reaped.withLock({ $0 }) == nil && !keepsRunning.withLock({ $0 }) {
            kill(processIdentifier, SIGKILL)
            waitUntilExit()
        }
    }

    /// Waits until the process `pid` has ended, or `limit` has passed: reaping it if it is a child of
    /// this process that no ``ChildProcess`` holds any more, polling for its end otherwise.
    /// Returns whether it ended.
    @discardableResult
    public static func waitForExit(pid: Int32, upTo limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid || kill(pid, 0) != 0 { return true }
            usleep(10_000)
        }
        return false
    }

    /// Whether the child is still running (reaps it if it has ended).
    public var isRunning: Bool {
        reaped.withLock { status in
            if status != nil { return false }
            var raw: Int32 = 0
            let rc = waitpid(processIdentifier, &raw, WNOHANG)
            if rc == processIdentifier { status = raw; return false }
            // Reaped by someone else: record it, so that nothing signals a pid that may be reused.
            if rc < 0 && errno == ECHILD { status = SIGKILL; return false }
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

/// A command that could not finish as asked.
public enum ChildProcessError: Error, Equatable, CustomStringConvertible, Sendable {
    /// `command` ran past `limit` and was killed with its process group.
    case timedOut(command: String, limit: Duration)

    /// The message, naming the command and the limit.
    public var description: String {
        switch self {
        case .timedOut(let command, let limit):
            return "\(command) was killed after running for its limit of \(limit)"
        }
    }
}

/// Whether a timed command has been reaped and whether its time limit killed it; the killer and
/// the reaper agree through it so that a pid is never signalled once it may belong to another process.
private struct TimedRun: Sendable {
    var reaped = false
    var killed = false
}

private func runCommand(_ argv: [String], input: String?, timeLimit: Duration?) throws -> CommandOutput {
    var pipes: [Int32] = []
    defer { for fd in pipes where fd >= 0 { close(fd) } }
    func closeOnce(_ index: Int) {
        if pipes[index] >= 0 { close(pipes[index]) }
        pipes[index] = -1
    }
    pipes += try makePipe()  // 0, 1: stdout
    pipes += try makePipe()  // 2, 3: stderr
    if input != nil { pipes += try makePipe() }  // 4, 5: stdin
    let pid = try spawnProcess(
        argv, stdin: input == nil ? nil : pipes[4], stdout: pipes[1], stderr: pipes[3], ownGroup: timeLimit != nil)
    let timed = Mutex(TimedRun())
    var killer: DispatchWorkItem?
    if let timeLimit {
        let item = DispatchWorkItem {
            timed.withLock { run in
                guard !run.reaped else { return }
                // The group (grandchildren too, which could hold the pipes open), then the child
                // itself in case it left the group.
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
                run.killed = true
            }
        }
        let (seconds, attoseconds) = timeLimit.components
        let nanoseconds = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let delay = nanoseconds.overflow ? Int.max : Int(clamping: nanoseconds.partialValue &+ attoseconds / 1_000_000_000)
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(max(0, delay)), execute: item)
        killer = item
    }
    closeOnce(1)
    closeOnce(3)
    if let input {
        closeOnce(4)
        // A child that exits without reading must cost EPIPE here, not the whole process.
        BrokenPipes.ignore()
        _ = Array(input.utf8).withUnsafeBytes { write(pipes[5], $0.baseAddress, $0.count) }
        closeOnce(5)
    }
    let errorData = Mutex([UInt8]())
    let drained = DispatchSemaphore(value: 0)
    let errorReader = pipes[2]
    do {
        try OSThread.spawn(name: "stderr-drain") {
            let data = readAll(errorReader)
            errorData.withLock { $0 = data }
            drained.signal()
        }
    } catch {
        kill(pid, SIGKILL)
        _ = waitForChild(pid)
        throw error
    }
    let outputData = readAll(pipes[0])
    drained.wait()
    if let killer {
        // Waits for the end without reaping, so that the pid stays this child's until the killer
        // can no longer fire.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        timed.withLock { $0.reaped = true }
        killer.cancel()
    }
    let raw = waitForChild(pid)
    if let timeLimit, timed.withLock({ $0.killed }) {
        throw ChildProcessError.timedOut(command: argv.joined(separator: " "), limit: timeLimit)
    }
    return CommandOutput(
        status: exitStatus(raw), stdout: String(decoding: outputData, as: UTF8.self),
        stderr: String(decoding: errorData.withLock { $0 }, as: UTF8.self))
}

/// posix_spawn with a clean signal state: the spawning thread may be a dispatch worker that blocks
/// signals, and a child that inherits a blocked SIGTERM could never be terminated.
private func spawnProcess(_ argv: [String], stdin: Int32? = nil, stdout: Int32, stderr: Int32, ownGroup: Bool = false) throws -> Int32 {
    guard let executable = argv.first, executable.hasPrefix("/") else {
        throw SystemError("posix_spawn \(argv.first ?? "(nothing)"): the executable must be an absolute path", code: EINVAL)
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let stdin {
        posix_spawn_file_actions_adddup2(&actions, stdin, 0)
    } else {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    }
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
    var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
    if ownGroup {
        // Process group 0: a new group whose id is the child's pid, so kill(-pid) reaches it all.
        posix_spawnattr_setpgroup(&attributes, 0)
        flags |= POSIX_SPAWN_SETPGROUP
    }
    posix_spawnattr_setflags(&attributes, Int16(flags))

    let cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for argument in cArguments { free(argument) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, &attributes, cArguments, environ)
    if rc != 0 { throw SystemError("posix_spawn \(executable)", code: rc) }
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
