import Foundation
import Logging
import SFAgent
import SFControl
import SFStore
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// The queue's own figures (issue 15, items 2 and 8), on SQLite and on PostgreSQL in the same run:
// pick-up latency in-process and from a second process, with the runner's wake-ups against the 20 ms
// poll it replaced, and claim-and-complete throughput with 1, 4 and 16 concurrent claimers, one job
// at a time (claimNext) and in batches (claimBatch).
//
// PostgreSQL: the server of `SFNODE_BENCH_POSTGRES_URL` (a URL whose user may create databases),
// else the throwaway loopback server `scripts/test-postgres` starts (run from the repository's
// root). Every measurement gets a fresh database, made and dropped with `psql`, named `sftqb…` so
// that `scripts/cleanup-test-leftovers` drops what a killed run leaves. `SFNODE_BENCH_SQLITE_ONLY=1`
// leaves PostgreSQL out.
//
// `QueueBenchmark` prints a BENCHMARKS.md section; `QueueBenchmark enqueue <backend> <location>
// <target> <count>` is the second process of the cross-process rows (it prints, per job, its id and
// the CLOCK_MONOTONIC time just before its enqueue, which is system-wide, so the parent can compare).
// A PostgreSQL location is a database name: the password stays in the environment, out of argv.

let logger = {
    var logger = Logger(label: "sfnode.bench.queue")
    logger.logLevel = .error
    return logger
}()
let environment = ProcessInfo.processInfo.environment
let pickupJobs = Int(environment["SFNODE_BENCH_JOBS"] ?? "") ?? 200
/// SFNODE_BENCH_QUEUE_ONLY=pickup skips the throughput runs.
let pickupOnly = environment["SFNODE_BENCH_QUEUE_ONLY"] == "pickup"
let throughputJobs = Int(environment["SFNODE_BENCH_QUEUE_JOBS"] ?? "") ?? 4000
let throughputRepeats = 3
let claimerCounts = [1, 4, 16]
/// Jobs per claimBatch in the batched rows.
let batchSize = 100
/// Connections of a PostgreSQL store: one per claimer at the most (the store's default is 8).
let postgresPoolSize = 16

struct BenchmarkFailed: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One backend under test: how to open a store at a location (in this process or the child).
struct Backend: Sendable {
    let name: String
    /// A fresh location for a store, and how to remove it.
    let makeLocation: @Sendable (_ label: String) throws -> (location: String, remove: @Sendable () -> Void)
    let open: @Sendable (_ location: String) throws -> SQLStore
    /// Brings the statistics of a store's job table up to date, as a running cluster's server keeps
    /// them (autovacuum analyses the job table as it changes): the claim's plan depends on them.
    var analyseJobs: @Sendable (_ location: String) throws -> Void = { _ in }
}

let runID = "sfq" + String(format: "%05x", UInt32.random(in: 0...0xfffff))
let workDirectory = "/var/lib/sfnode/bench/\(runID)"

/// The PostgreSQL server the benchmark makes its databases on.
final class PostgresServer: Sendable {
    /// The server's URL without its password (which `psql` reads from `PGPASSWORD`).
    let adminURL: String
    let components: URLComponents
    private let databases = Mutex(0)

    init(url: String) throws {
        guard var components = URLComponents(string: url), components.host != nil, components.user != nil else {
            throw BenchmarkFailed("SFNODE_BENCH_POSTGRES_URL is not a postgres:// URL with a user and a host")
        }
        if let password = components.password { setenv("PGPASSWORD", password, 1) }
        self.components = components
        components.password = nil
        guard let adminURL = components.string else { throw BenchmarkFailed("the server URL cannot be rebuilt") }
        self.adminURL = adminURL
    }

    /// The store URL of `database` on this server, with the benchmark's pool size.
    func storeURL(database: String) throws -> String {
        var url = components
        url.path = "/" + database
        url.queryItems = [URLQueryItem(name: "pool_size", value: String(postgresPoolSize))]
        guard let text = url.string else { throw BenchmarkFailed("no URL for database \(database)") }
        return text
    }

    /// A new, empty database, and how to drop it (connections still open to it are ended).
    func createDatabase() throws -> (name: String, drop: @Sendable () -> Void) {
        let number = databases.withLock { count in
            count += 1
            return count
        }
        let name = "sftqb\(runID.dropFirst(3))_\(number)"
        try psql("CREATE DATABASE \(name)")
        return (name, { [self] in try? self.psql("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") })
    }

    /// Runs `sql` on the server's own database, or on `database`; answers its output, unaligned.
    @discardableResult
    func psql(_ sql: String, database: String? = nil) throws -> String {
        var target = components
        target.password = nil
        if let database { target.path = "/" + database }
        let output = try ChildProcess.run([psqlPath, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d", target.string ?? adminURL, "-c", sql])
        guard output.status == 0 else { throw BenchmarkFailed("psql \(sql): \(output.stderr)") }
        return output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// psql on the PATH (posix_spawn takes an absolute path).
let psqlPath = (environment["PATH"] ?? "/usr/bin").split(separator: ":").map { "\($0)/psql" }
    .first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/bin/psql"

/// The server's URL: the environment's, else the one `scripts/test-postgres` starts (put in the
/// environment, so that the second process finds it too); nil with SFNODE_BENCH_SQLITE_ONLY.
func postgresServerURL() throws -> String? {
    if environment["SFNODE_BENCH_SQLITE_ONLY"] != nil { return nil }
    if let url = environment["SFNODE_BENCH_POSTGRES_URL"], !url.isEmpty { return url }
    let output = try ChildProcess.run([FileManager.default.currentDirectoryPath + "/scripts/test-postgres"])
    let url = output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    guard output.status == 0, url.hasPrefix("postgres") else {
        throw BenchmarkFailed("scripts/test-postgres (run from the repository's root) failed: \(output.stderr)")
    }
    setenv("SFNODE_BENCH_POSTGRES_URL", url, 1)
    return url
}

let sqlite = Backend(
    name: "SQLite",
    makeLocation: { label in
        let directory = workDirectory + "/" + label
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return (directory + "/store.sqlite", { try? FileManager.default.removeItem(atPath: directory) })
    },
    open: { location in try SQLStore(path: location, fqdn: "bench-node", logger: logger) })

func postgres(_ server: PostgresServer) -> Backend {
    Backend(
        name: "PostgreSQL",
        makeLocation: { _ in
            let database = try server.createDatabase()
            return (database.name, database.drop)
        },
        open: { database in try SQLStore.open(location: try server.storeURL(database: database), fqdn: "bench-node", logger: logger) },
        analyseJobs: { database in try server.psql("ANALYZE job", database: database) })
}

let postgresServer: PostgresServer?
do {
    postgresServer = try postgresServerURL().map { try PostgresServer(url: $0) }
} catch {
    print("QueueBenchmark failed: \(error)")
    exit(1)
}
/// SFNODE_BENCH_POSTGRES_ONLY leaves SQLite out (for profiling the PostgreSQL runs alone).
let backends = (environment["SFNODE_BENCH_POSTGRES_ONLY"] != nil ? [] : [sqlite]) + (postgresServer.map { [postgres($0)] } ?? [])

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process on the host.
func monotonicNanos() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    // Nearest rank.
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
    return sorted[min(max(rank - 1, 0), sorted.count - 1)]
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func ms(_ seconds: Double) -> String { seconds.isNaN ? "–" : String(format: "%.2f ms", seconds * 1000) }

/// The no-op job every pick-up measurement enqueues (a refresh of a network nobody has).
func noopJob(target: String) throws -> NewJob {
    let order = try JobOrder(.networkRefresh, .network(UUID()))
    return NewJob(kind: order.kind.rawValue, payload: order.payload, target: .node(target), objectKey: nil)
}

/// When each job's handler started (CLOCK_MONOTONIC ns), by job id; and who waits for one.
final class HandlerStarts: Sendable {
    private struct State {
        var starts: [Int64: Int64] = [:]
        var waiters: [Int64: CheckedContinuation<Bool, Never>] = [:]
    }
    private let state = Mutex(State())

    func record(_ id: Int64) {
        let now = monotonicNanos()
        let waiter = state.withLock { state in
            state.starts[id] = now
            return state.waiters.removeValue(forKey: id)
        }
        waiter?.resume(returning: true)
    }

    func start(of id: Int64) -> Int64? { state.withLock { $0.starts[id] } }

    /// Waits until the handler of `id` started, without asking the store (whose reads would
    /// compete with the runner for the two cores while it picks the job up); false after 60 s.
    func waitForStart(of id: Int64) async -> Bool {
        await withCheckedContinuation { continuation in
            let started = state.withLock { state in
                if state.starts[id] != nil { return true }
                state.waiters[id] = continuation
                return false
            }
            if started {
                continuation.resume(returning: true)
                return
            }
            Task {
                try? await Task.sleep(for: .seconds(60))
                self.state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: false)
            }
        }
    }
}

/// Waits until `id` succeeded (the previous job is out of the way before the next is enqueued),
/// looking first after `firstLook` and then every `interval`.
func waitUntilDone(_ store: any NodeStore, _ id: Int64, firstLook: Duration = .zero, interval: Duration = .milliseconds(1)) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    try await Task.sleep(for: firstLook)
    while ContinuousClock.now < deadline {
        switch try await store.job(id: id).state {
        case .succeeded: return
        case .failed: throw BenchmarkFailed("job \(id) failed")
        case .queued, .running: try await Task.sleep(for: interval)
        }
    }
    throw BenchmarkFailed("job \(id) did not finish within 60 s")
}

// MARK: - Child mode: the second process

if CommandLine.arguments.count == 6 && CommandLine.arguments[1] == "enqueue" {
    let arguments = CommandLine.arguments
    guard let backend = backends.first(where: { $0.name == arguments[2] }), let count = Int(arguments[5]) else {
        FileHandle.standardError.write(Data("usage: QueueBenchmark enqueue <backend> <location> <target> <count>\n".utf8))
        exit(2)
    }
    do {
        let store = try backend.open(arguments[3])
        for _ in 0..<count {
            // A random pause, so that enqueues land at every phase of the runner's poll.
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...50)))
            let job = try noopJob(target: arguments[4])
            let before = monotonicNanos()
            let queued = try await store.enqueue([job])
            guard let id = queued.first?.id else { throw BenchmarkFailed("enqueue returned no job") }
            print("\(id) \(before)")
            // Looked for only after a pick-up's worth of time, so that this process's reads do not
            // compete with the runner for the two cores while it picks the job up.
            try await waitUntilDone(store, id, firstLook: .milliseconds(20), interval: .milliseconds(5))
        }
        exit(0)
    } catch {
        FileHandle.standardError.write(Data("QueueBenchmark enqueue: \(error)\n".utf8))
        exit(1)
    }
}

// MARK: - The runners compared

/// The JobRunner's idle loop as it was before issue 15, kept here as the baseline: a wake-up from
/// this process only set a flag that the loop read after its 20 ms sleep, and other processes'
/// commits were noticed by polling the store's change token at the same tick.
final class OldPollRunner: Sendable {
    private let poked = Atomic<Bool>(false)

    func run(store: any NodeStore, target: String, starts: HandlerStarts) async {
        let wakeups = store.wakeups()
        let listener = Task {
            for await _ in wakeups { self.poked.store(true, ordering: .relaxed) }
        }
        defer { listener.cancel() }
        var lastToken = (try? await store.changeToken()) ?? 0
        let owner = "old-poll-\(target)"
        while !Task.isCancelled {
            poked.store(false, ordering: .relaxed)
            if let job = try? await store.claimNext(targets: [.node(target)], owner: owner, lease: .seconds(30)) {
                starts.record(job.id)
                if let lease = job.lease { try? await store.complete(lease) }
                continue
            }
            let deadline = ContinuousClock.now + .milliseconds(250)
            while !Task.isCancelled && !poked.load(ordering: .relaxed) && ContinuousClock.now < deadline {
                let token = (try? await store.changeToken()) ?? lastToken
                if token != lastToken {
                    lastToken = token
                    break
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }
}

enum RunnerKind: CaseIterable {
    case wakeups, oldPoll

    var label: String {
        switch self {
        case .wakeups: "JobRunner (wake-ups)"
        case .oldPoll: "old 20 ms poll"
        }
    }
}

/// Starts a runner of `kind` for `target` on `store`, recording handler starts.
func startRunner(_ kind: RunnerKind, store: any NodeStore, target: String, starts: HandlerStarts) async -> Task<Void, Never> {
    switch kind {
    case .wakeups:
        let runner = JobRunner(store: store, targets: [.node(target)], owner: "bench-\(target)", logger: logger)
        await runner.register(.networkRefresh) { _, job in starts.record(job.id) }
        return Task { await runner.run() }
    case .oldPoll:
        return Task { await OldPollRunner().run(store: store, target: target, starts: starts) }
    }
}

// MARK: - Pick-up latency

/// Pick-up latencies (seconds) of `pickupJobs` jobs enqueued one at a time by this process, and the
/// enqueue calls' own durations (their commit is part of every pick-up).
func pickupInProcess(_ backend: Backend, _ kind: RunnerKind) async throws -> (pickups: [Double], enqueues: [Double]) {
    let (location, remove) = try backend.makeLocation("pickup-local-\(kind)")
    defer { remove() }
    let store = try backend.open(location)
    defer { store.close() }
    let starts = HandlerStarts()
    let target = "\(runID)-local"
    let runner = await startRunner(kind, store: store, target: target, starts: starts)
    defer { runner.cancel() }
    try await Task.sleep(for: .milliseconds(100))
    var latencies: [Double] = []
    var enqueues: [Double] = []
    for _ in 0..<pickupJobs {
        try await Task.sleep(for: .milliseconds(Int.random(in: 0...50)))
        let before = monotonicNanos()
        guard let id = try await store.enqueue([try noopJob(target: target)]).first?.id else { throw BenchmarkFailed("enqueue returned no job") }
        enqueues.append(Double(monotonicNanos() - before) / 1e9)
        guard await starts.waitForStart(of: id) else { throw BenchmarkFailed("job \(id) was not picked up within 60 s") }
        try await waitUntilDone(store, id)
        guard let start = starts.start(of: id) else { throw BenchmarkFailed("job \(id) finished without its handler") }
        latencies.append(Double(start - before) / 1e9)
    }
    runner.cancel()
    await runner.value
    if environment["SFNODE_BENCH_DUMP"] != nil {
        FileHandle.standardError.write(Data("\(kind) in-process: \(latencies.sorted().suffix(12).map { ms($0) })\n".utf8))
    }
    return (latencies, enqueues)
}

/// Pick-up latencies of `pickupJobs` jobs enqueued one at a time by a second process (this binary in
/// its `enqueue` mode), from just before each enqueue to its handler's start here.
func pickupAcrossProcesses(_ backend: Backend, _ kind: RunnerKind) async throws -> [Double] {
    let (location, remove) = try backend.makeLocation("pickup-remote-\(kind)")
    defer { remove() }
    let store = try backend.open(location)
    defer { store.close() }
    let starts = HandlerStarts()
    let target = "\(runID)-remote"
    let runner = await startRunner(kind, store: store, target: target, starts: starts)
    defer { runner.cancel() }
    try await Task.sleep(for: .milliseconds(100))
    // In the run's directory: a PostgreSQL location is a database name, not a path.
    let output = workDirectory + "/\(backend.name)-\(kind).child-output"
    let ownPath = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    let child = try ChildProcess.spawn(
        [ownPath, "enqueue", backend.name, location, target, String(pickupJobs)], outputPath: output)
    await Task.detached { child.waitUntilExit() }.value
    guard child.terminationStatus == 0 else {
        throw BenchmarkFailed("the enqueueing process exited \(child.terminationStatus ?? -1): \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
    }
    var latencies: [Double] = []
    for line in try String(contentsOfFile: output, encoding: .utf8).split(separator: "\n") {
        let fields = line.split(separator: " ")
        guard fields.count == 2, let id = Int64(fields[0]), let before = Int64(fields[1]) else { continue }
        guard let start = starts.start(of: id) else { throw BenchmarkFailed("job \(id) finished without its handler") }
        latencies.append(Double(start - before) / 1e9)
    }
    if environment["SFNODE_BENCH_DUMP"] != nil {
        FileHandle.standardError.write(Data("\(kind) across: \(latencies.sorted().suffix(12).map { ms($0) })\n".utf8))
    }
    guard latencies.count == pickupJobs else { throw BenchmarkFailed("the enqueueing process reported \(latencies.count) of \(pickupJobs) jobs") }
    runner.cancel()
    await runner.value
    return latencies
}

// MARK: - Claim-and-complete throughput

enum ClaimMode: CaseIterable {
    case single, batched

    var label: String {
        switch self {
        case .single: "one at a time"
        case .batched: "batches of \(batchSize)"
        }
    }
}

struct Throughput {
    /// Jobs per second, one figure per repeat.
    var rates: [Double] = []
    /// Each claim call (one job, or one batch), in seconds, over all repeats.
    var claims: [Double] = []
    /// Each complete call, in seconds, over all repeats.
    var completes: [Double] = []
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// `throughputJobs` jobs queued up front (one transaction), then `claimers` tasks sharing one store
/// handle, each claiming (one job, or a batch) and completing what it claimed until the queue is empty; a
/// fresh store each repeat.
func claimAndComplete(_ backend: Backend, claimers: Int, mode: ClaimMode) async throws -> Throughput {
    var result = Throughput()
    for repeatIndex in 0..<throughputRepeats {
        let (location, remove) = try backend.makeLocation("throughput-\(mode)-\(claimers)-\(repeatIndex)")
        defer { remove() }
        let store = try backend.open(location)
        defer { store.close() }
        let target = "\(runID)-throughput"
        let jobs = try (0..<throughputJobs).map { _ in try noopJob(target: target) }
        _ = try await store.enqueue(jobs)
        try backend.analyseJobs(location)
        let started = ContinuousClock.now
        let timings = try await withThrowingTaskGroup(of: (claims: [Double], completes: [Double], done: Int).self) { group in
            for index in 0..<claimers {
                group.addTask {
                    let owner = "claimer-\(index)"
                    var claims: [Double] = []
                    var completes: [Double] = []
                    var done = 0
                    while true {
                        let before = ContinuousClock.now
                        let claimed: [Job]
                        switch mode {
                        case .single:
                            claimed = try await store.claimNext(targets: [.node(target)], owner: owner, lease: .seconds(30)).map { [$0] } ?? []
                        case .batched:
                            claimed = try await store.claimBatch(targets: [.node(target)], owner: owner, lease: .seconds(30), limit: batchSize)
                        }
                        if claimed.isEmpty { break }
                        claims.append(seconds(ContinuousClock.now - before))
                        switch mode {
                        case .single:
                            for job in claimed {
                                guard let lease = job.lease else { throw BenchmarkFailed("job \(job.id) was claimed without a lease") }
                                let beforeComplete = ContinuousClock.now
                                try await store.complete(lease)
                                completes.append(seconds(ContinuousClock.now - beforeComplete))
                            }
                        case .batched:
                            let beforeComplete = ContinuousClock.now
                            let refused = try await store.complete(claimed.compactMap(\.lease))
                            guard refused.isEmpty else { throw BenchmarkFailed("jobs \(refused) of a batch were not completed") }
                            completes.append(seconds(ContinuousClock.now - beforeComplete))
                        }
                        done += claimed.count
                    }
                    return (claims, completes, done)
                }
            }
            return try await group.reduce(into: (claims: [Double](), completes: [Double](), done: 0)) {
                $0.claims += $1.claims
                $0.completes += $1.completes
                $0.done += $1.done
            }
        }
        let elapsed = ContinuousClock.now - started
        guard timings.done == throughputJobs else {
            throw BenchmarkFailed("\(timings.done) of \(throughputJobs) jobs were claimed and completed")
        }
        result.rates.append(Double(throughputJobs) / seconds(elapsed))
        result.claims += timings.claims
        result.completes += timings.completes
    }
    return result
}

/// The cost of the backend's smallest transaction: `changeToken()` (with PostgreSQL three
/// statements, BEGIN, one SELECT and COMMIT, each a round trip to the server), `count` times.
func smallestTransaction(_ backend: Backend, count: Int = 500) async throws -> [Double] {
    let (location, remove) = try backend.makeLocation("round-trip")
    defer { remove() }
    let store = try backend.open(location)
    defer { store.close() }
    var durations: [Double] = []
    for _ in 0..<count {
        let before = ContinuousClock.now
        _ = try await store.changeToken()
        durations.append(seconds(ContinuousClock.now - before))
    }
    return durations
}

// MARK: - Report

var report: [String] = []
var missed: [String] = []

do {
    try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: workDirectory) }

    var inProcess: [String: [RunnerKind: [Double]]] = [:]
    var enqueueCalls: [String: [Double]] = [:]
    var acrossProcesses: [String: [RunnerKind: [Double]]] = [:]
    var throughput: [String: [ClaimMode: [Int: Throughput]]] = [:]
    var transactions: [String: [Double]] = [:]
    for backend in backends {
        for kind in RunnerKind.allCases {
            let local = try await pickupInProcess(backend, kind)
            inProcess[backend.name, default: [:]][kind] = local.pickups
            enqueueCalls[backend.name, default: []] += local.enqueues
            acrossProcesses[backend.name, default: [:]][kind] = try await pickupAcrossProcesses(backend, kind)
        }
        guard !pickupOnly else { continue }
        transactions[backend.name] = try await smallestTransaction(backend)
        for mode in ClaimMode.allCases {
            for claimers in claimerCounts {
                throughput[backend.name, default: [:]][mode, default: [:]][claimers] =
                    try await claimAndComplete(backend, claimers: claimers, mode: mode)
            }
        }
    }

    let names = backends.map(\.name)
    func header(_ first: String) -> [String] {
        ["| \(first) | " + names.joined(separator: " | ") + " |", "| --- |" + String(repeating: " --- |", count: names.count)]
    }
    func spread(_ values: [Double]) -> String { "\(ms(median(values))) / \(ms(percentile(values, 99)))" }
    report.append("## (q) Job queue: pick-up latency and claim-and-complete throughput, SQLite and PostgreSQL\n")
    if let postgresServer {
        let version = (try? postgresServer.psql("SHOW server_version")) ?? "?"
        let fsync = (try? postgresServer.psql("SHOW fsync")) ?? "?"
        report.append("Both backends in the same run. SQLite: a store file on the local disk. PostgreSQL \(version): a fresh")
        report.append("database per measurement on a server on loopback (`scripts/test-postgres`, fsync \(fsync)), sharing the two")
        report.append("cores with the benchmark, through the store's own connections (pool_size=\(postgresPoolSize)).\n")
    } else {
        report.append("SQLite only (SFNODE_BENCH_SQLITE_ONLY): a store file on the local disk.\n")
    }
    report.append("Pick-up: from just before a job's enqueue to its (no-op) handler starting, \(pickupJobs) jobs each, one at a")
    report.append("time after a random 0–50 ms pause; median / p99. The second process is this benchmark's own binary in a")
    report.append("child mode (it opens the store, then enqueues), timed on CLOCK_MONOTONIC, which both processes share; its")
    report.append("commit reaches the runner through the doorbell file and inotify (SQLite) or NOTIFY and the store's")
    report.append("LISTEN connection (PostgreSQL).\n")
    report += header("pick-up")
    for (label, table) in [("in-process", inProcess), ("from a second process", acrossProcesses)] {
        for kind in RunnerKind.allCases {
            let cells = names.map { name in spread(table[name]?[kind] ?? []) }
            report.append("| \(label), \(kind.label) | " + cells.joined(separator: " | ") + " |")
        }
    }
    report.append("| the enqueue call alone (its commit), in-process | " + names.map { spread(enqueueCalls[$0] ?? []) }.joined(separator: " | ") + " |")
    if !pickupOnly {
        report.append("\nClaim-and-complete: \(throughputJobs) jobs queued up front, then N claimers (tasks sharing one store")
        report.append("handle), each claiming one job (`claimNext`) and completing it (`complete(_:)` of its lease), or claiming up to")
        report.append("\(batchSize) (`claimBatch`) and completing them together (`complete(_:)` of their leases), each call one transaction,")
        report.append("until none is left; jobs/s is the median of \(throughputRepeats) runs")
        report.append("on fresh stores; the calls' own times are median / p99 over every call of the \(throughputRepeats) runs.")
        report.append("PostgreSQL's job table is analysed once the jobs are queued (`ANALYZE job`), as autovacuum keeps a")
        report.append("running cluster's; on PostgreSQL each of those calls is one statement.\n")
        report += header("claim and complete")
        for mode in ClaimMode.allCases {
            for claimers in claimerCounts {
                let who = "\(claimers) claimer\(claimers == 1 ? "" : "s"), \(mode.label)"
                let rates = names.map { name in String(format: "**%.0f jobs/s**", median(throughput[name]?[mode]?[claimers]?.rates ?? [])) }
                report.append("| \(who) | " + rates.joined(separator: " | ") + " |")
                let claims = names.map { spread(throughput[$0]?[mode]?[claimers]?.claims ?? []) }
                report.append("| … its claim call\(mode == .batched ? " (a batch)" : "") | " + claims.joined(separator: " | ") + " |")
                let completes = names.map { spread(throughput[$0]?[mode]?[claimers]?.completes ?? []) }
                report.append("| … its complete call\(mode == .batched ? " (a batch)" : "") | " + completes.joined(separator: " | ") + " |")
            }
        }
        let smallest = names.map { spread(transactions[$0] ?? []) }
        report.append("| the smallest transaction (`changeToken`), alone | " + smallest.joined(separator: " | ") + " |")
    }
    report.append("\nTargets (issue 15): pick-up median under 2 ms in-process and under 5 ms from a second process; with 16")
    report.append("claimers on these 2 cores, 2,000 jobs/s one at a time and 5,000 jobs/s in batches, on PostgreSQL.\n")

    for name in names {
        if let values = inProcess[name]?[.wakeups], median(values) >= 0.002 {
            missed.append("(q) \(name) in-process median pick-up \(ms(median(values))) is not under 2 ms")
        }
        if let values = acrossProcesses[name]?[.wakeups], median(values) >= 0.005 {
            missed.append("(q) \(name) cross-process median pick-up \(ms(median(values))) is not under 5 ms")
        }
    }
    for (mode, target) in [(ClaimMode.single, 2000.0), (.batched, 5000.0)] {
        if let rates = throughput["PostgreSQL"]?[mode]?[16]?.rates, median(rates) < target {
            missed.append(String(format: "(q) PostgreSQL with 16 claimers, %@: %.0f jobs/s is below %.0f", mode.label, median(rates), target))
        }
    }
} catch {
    report.append("QueueBenchmark failed: \(error)")
    print(report.joined(separator: "\n"))
    exit(1)
}

print(report.joined(separator: "\n"))
if !missed.isEmpty { print("**Targets missed:** " + missed.joined(separator: "; ")) }
