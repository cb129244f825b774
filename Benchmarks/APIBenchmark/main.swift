// REST API benchmarks: GET of one instance and the list of 1000 (wrk, against a release `sfnode api`
// over a store seeded through the API, beside a trivial Hummingbird server answering the same bytes),
// instance create acceptance (wrk POSTing the real client's body, beside the same creates through
// `Control` in-process), and what the API adds to create → running (a real `sfnode serve` whose agent's
// host side is a throwaway network namespace, beside the same create through the store and use cases,
// and the real client's create_instance).
//
// Everything runs on loopback; the only namespace is this run's own; every name starts with this
// run's random "sft" prefix (scripts/cleanup-test-leftovers finds leftovers) and everything made is
// removed at the end, even on failure. Prints a Markdown report on stdout; scripts/bench-api puts it
// into BENCHMARKS.md.
//
// Settings (environment): SFNODE_BENCH_SFNODE (the sfnode binary; default: beside this one),
// SFNODE_BENCH_REPOSITORY (for Tests/Acceptance/client_api.py; default: the working directory),
// SFNODE_CLIENT_VENV (the real client's virtualenv, from scripts/client-venv), SFNODE_BENCH_WRK_SECONDS
// (10), SFNODE_BENCH_INSTANCES (1000), SFNODE_BENCH_CONNECTIONS (16; the list uses a quarter),
// SFNODE_BENCH_CREATE_REPS (5), SFNODE_BENCH_HOLD (seconds to hold the seeded servers up before measuring,
// printing how to reach them, for profiling by hand), SFNODE_BENCH_RUN_ID (the names' prefix: sft and up to 6 letters or digits;
// default random).
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SFControl
import SFLibvirt
import SFStore
import SFSystem
import SFTestSupport

#if canImport(Glibc)
import Glibc
#endif

let logger = {
    var logger = Logger(label: "sfnode.bench.api")
    logger.logLevel = .warning
    return logger
}()
let environment = ProcessInfo.processInfo.environment
let runID = environment["SFNODE_BENCH_RUN_ID"].flatMap { $0.hasPrefix(TestNames.prefix) && $0.utf8.count <= 9 ? $0 : nil } ?? TestNames.unique("")
let wrkSeconds = Int(environment["SFNODE_BENCH_WRK_SECONDS"] ?? "") ?? 10
let seedCount = Int(environment["SFNODE_BENCH_INSTANCES"] ?? "") ?? 1000
let connections = Int(environment["SFNODE_BENCH_CONNECTIONS"] ?? "") ?? 16
let listConnections = max(1, connections / 4)
let createRepetitions = Int(environment["SFNODE_BENCH_CREATE_REPS"] ?? "") ?? 5
let sfnode =
    environment["SFNODE_BENCH_SFNODE"].flatMap { $0.isEmpty ? nil : $0 }
    ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/sfnode"
let repository = environment["SFNODE_BENCH_REPOSITORY"] ?? FileManager.default.currentDirectoryPath
let clientVenv = environment["SFNODE_CLIENT_VENV"] ?? repository + "/.build/client-venv"
let workDirectory = TestGuest.runDirectory + "/\(runID)-api"
let clock = ContinuousClock()
let teardown = Teardown()

struct BenchmarkFailed: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int((p / 100 * Double(sorted.count - 1)).rounded()))]
}

func median(_ values: [Double]) -> Double { percentile(values, 50) }
func ms(_ value: Double) -> String { String(format: "%.2f ms", value * 1000) }
func ms1(_ value: Double) -> String { String(format: "%.1f ms", value * 1000) }
func rate(_ value: Double) -> String { String(format: "%.0f", value) }

// MARK: HTTP

/// A minimal client of the API (AsyncHTTPClient), with the caller's bearer token once it has one.
struct APIClient: Sendable {
    let base: String
    let http: HTTPClient
    var token = ""

    func call(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> (status: UInt, body: Data) {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if !token.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await http.execute(request, timeout: .seconds(120))
        let buffer = try await response.body.collect(upTo: 256 << 20)
        return (response.status.code, Data(buffer.readableBytesView))
    }

    /// The call's JSON object; anything but a 200 with an object throws.
    func object(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> [String: Any] {
        let (status, data) = try await call(method, path, body: body)
        guard status == 200, let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw BenchmarkFailed("\(method) \(path): \(status) \(String(decoding: data.prefix(500), as: UTF8.self))")
        }
        return object
    }

    /// Authenticates as the client configuration's namespace and key.
    mutating func authenticate(namespace: String, key: String) async throws {
        let body = try JSONSerialization.data(withJSONObject: ["namespace": namespace, "key": key])
        guard let token = try await object(.POST, "/auth", body: body)["access_token"] as? String else {
            throw BenchmarkFailed("POST /auth gave no access_token")
        }
        self.token = token
    }
}

/// The body the real client (`shakenfist-client` 0.8.3, `create_instance`) sends for
/// `sf-client instance create NAME 1 MEMORY -d 8@BASE`: every member it always sends, nulls included.
func clientBody(name: String, base: String, memory: Int) -> Data {
    let body: [String: Any] = [
        "name": name, "cpus": 1, "memory": memory, "network": [Any](), "ssh_key": NSNull(), "user_data": NSNull(),
        "namespace": NSNull(), "video": ["model": "cirrus", "memory": 16384], "configdrive": "openstack-disk",
        "metadata": [String: Any](), "side_channels": NSNull(), "uefi": false, "secure_boot": false, "nvram_template": NSNull(),
        "disk": [["size": 8, "base": base, "bus": NSNull(), "type": "disk"]],
    ]
    return try! JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
}

/// The ``InstanceRequest`` the API makes of ``clientBody(name:base:memory:)`` for the `system` caller.
func controlRequest(name: String, base: String, memory: Int) -> InstanceRequest {
    InstanceRequest(
        name: name, cpus: 1, memoryMiB: memory, disks: [DiskSpec(base: base, size: 8, bus: nil, type: .disk)],
        video: VideoSpec(model: "cirrus", memory: 16384, vdi: "spice"), namespace: "system")
}

/// A hypervisor that can take every instance the benchmark makes, checked in now.
func fakeNode(_ name: String) -> Node {
    Node(name: name, roles: [.hypervisor], lastSeen: Date(), capacity: NodeCapacity(cpus: 100_000, memoryMiB: 1 << 30, diskGiB: 1 << 30))
}

@MainActor func waitUntil(_ what: String, timeout: Duration, _ condition: () async throws -> Bool) async throws {
    let deadline = clock.now + timeout
    while try await !condition() {
        guard clock.now < deadline else { throw BenchmarkFailed("\(what) did not happen within \(timeout)") }
        try await Task.sleep(for: .milliseconds(50))
    }
}

// MARK: wrk

struct WrkResult {
    let requests: Int
    let seconds: Double
    let socketErrors: Int
    let non2xx: Int
    let p50: Double
    let p99: Double
    let max: Double
    /// CPU time the hypervisor took from this machine's vCPUs during the run (/proc/stat steal, all
    /// CPUs). It comes in slices of up to 100 ms, and a request caught in one waits that long.
    let stolen: Double
    var rate: Double { Double(requests) / seconds }
}

/// The CPU time stolen from this machine so far, in seconds: the steal column of /proc/stat's
/// `cpu` line, in USER_HZ ticks (100 a second on Linux).
func stolenCPUSeconds() -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
        let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
    else { return 0 }
    let fields = line.split(separator: " ")
    return fields.count > 8 ? (Double(fields[8]) ?? 0) / 100 : 0
}

/// Repeated wrk runs of one side: the median run (by rate) and the range of the rates.
struct WrkRuns {
    let median: WrkResult
    let rates: [Double]
    /// The run the hypervisor took least CPU time from.
    let leastStolen: WrkResult
    let all: [WrkResult]

    init(_ runs: [WrkResult]) {
        let sorted = runs.sorted { $0.rate < $1.rate }
        median = sorted[sorted.count / 2]
        rates = sorted.map(\.rate)
        leastStolen = runs.min { $0.stolen < $1.stolen } ?? median
        all = runs
    }
}

/// wrk's own summary, machine-readable: requests, duration (µs), socket errors, non-2xx/3xx
/// responses, and the p50, p99 and max of its latency histogram (µs).
let reportLua = """
    done = function(summary, latency, requests)
      local e = summary.errors
      io.write(string.format("RESULT %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n", summary.requests, summary.duration,
        e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99), latency.max))
    end
    """

func writeScript(_ name: String, _ text: String) throws -> String {
    let path = workDirectory + "/" + name
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// One wrk run: one thread (the other core is the server's), `connections` connections.
func wrk(_ url: String, connections: Int, seconds: Int, script: String, headers: [String] = []) throws -> WrkResult {
    let argv =
        ["/usr/bin/wrk", "-t1", "-c\(connections)", "-d\(seconds)s", "--timeout", "30s", "-s", script]
        + headers.flatMap { ["-H", $0] } + [url]
    let stolenBefore = stolenCPUSeconds()
    let output = try ChildProcess.run(argv)
    let stolen = stolenCPUSeconds() - stolenBefore
    guard output.status == 0, let line = output.stdout.split(separator: "\n").first(where: { $0.hasPrefix("RESULT ") }) else {
        throw BenchmarkFailed("wrk exited \(output.status): \(output.stdout)\(output.stderr)")
    }
    let fields = line.split(separator: " ").dropFirst().map { Double($0) ?? .nan }
    return WrkResult(
        requests: Int(fields[0]), seconds: fields[1] / 1e6, socketErrors: Int(fields[2]), non2xx: Int(fields[3]), p50: fields[4] / 1e6,
        p99: fields[5] / 1e6, max: fields[6] / 1e6, stolen: stolen)
}

// MARK: Cleanup

/// Destroys and undefines this run's domains (named with its prefix by SFNODE_NAME_PREFIX).
func removeDomains() async {
    guard let libvirt = try? LibvirtConnection(logger: logger) else { return }
    for domain in (try? await libvirt.domains()) ?? [] where domain.identity.name.hasPrefix(runID) {
        try? await libvirt.destroy(.uuid(domain.identity.uuid))
        try? await libvirt.undefine(.uuid(domain.identity.uuid))
    }
    await libvirt.close()
}

var report: [String] = []
var failures: [String] = []
let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)

do {
    guard FileManager.default.isExecutableFile(atPath: sfnode) else {
        throw BenchmarkFailed("no sfnode binary at \(sfnode): build it (release) or set SFNODE_BENCH_SFNODE")
    }
    guard FileManager.default.fileExists(atPath: TestGuest.baseImage) else {
        throw BenchmarkFailed("no test guest image at \(TestGuest.baseImage): run scripts/build-test-image")
    }
    try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
    teardown.add("work directory") { try? FileManager.default.removeItem(atPath: workDirectory) }
    let reportScript = try writeScript("report.lua", reportLua)

    // (n) alone, when asked (scripts/bench-api-abuse): see Abuse.swift.
    if environment["SFNODE_BENCH_ABUSE"] == "1" {
        let lines = try await abuseBenchmark(reportScript: reportScript)
        try await teardown.run()
        await removeDomains()
        try? FileManager.default.removeItem(atPath: workDirectory)
        try? await http.shutdown()
        print(lines.joined(separator: "\n"))
        exit(0)
    }

    // MARK: (j), (k): `sfnode api` alone over a seeded store

    let apiDirectory = workDirectory + "/api"
    try FileManager.default.createDirectory(atPath: apiDirectory, withIntermediateDirectories: true)
    let nodeName = "\(runID)-node"
    let store = try SQLStore(path: apiDirectory + "/store.sqlite", fqdn: nodeName, logger: logger)
    try await store.saveNode(fakeNode(nodeName))
    // The in-process side of (k) gets a store of its own, seeded alike.
    let controlStore = try SQLStore(path: apiDirectory + "/control.sqlite", fqdn: nodeName, logger: logger)
    try await controlStore.saveNode(fakeNode(nodeName))
    // Placement only uses a node seen within 120 s: keep checking the fake one in.
    // Detached: the measurements below block the main actor for minutes at a time.
    let checkIn = Task.detached {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(20))
            try? await store.saveNode(fakeNode(nodeName))
            try? await controlStore.saveNode(fakeNode(nodeName))
        }
    }
    defer { checkIn.cancel() }

    let apiPort = try freeLoopbackPort()
    let apiURL = "http://127.0.0.1:\(apiPort)"
    let clientConfig = apiDirectory + "/shakenfist.json"
    /// A release `sfnode api` over the seeded store on `port`, listening when this returns. Every one
    /// shares the client configuration: a valid one is kept (a new one would replace the key the
    /// benchmark's token was issued for).
    func startAPI(_ label: String, port: Int, settings: [String: String] = [:]) async throws -> AgentProcess {
        let process = try AgentProcess.start(
            executable: sfnode, arguments: ["api"],
            environment: [
                "SFNODE_STORE_PATH": apiDirectory + "/store.sqlite", "SFNODE_STORAGE_PATH": apiDirectory + "/storage",
                "SFNODE_NODE_NAME": nodeName, "SFNODE_API_LISTEN": "127.0.0.1:\(port)", "SFNODE_CLIENT_CONFIG": clientConfig,
            ].merging(settings) { _, given in given }, log: apiDirectory + "/\(label).log")
        teardown.add("sfnode api (\(label))") {
            _ = await process.stop(timeout: .seconds(20))
            await process.kill()
        }
        try await waitUntil("sfnode api (\(label)) listening", timeout: .seconds(60)) {
            guard process.isRunning else { throw BenchmarkFailed("sfnode api (\(label)) exited: \(process.logTail())") }
            return FileManager.default.fileExists(atPath: clientConfig) && isListening("http://127.0.0.1:\(port)")
        }
        return process
    }
    let apiProcess = try await startAPI("api", port: apiPort)
    func readClientConfig(_ path: String) throws -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path),
            let config = try JSONSerialization.jsonObject(with: data) as? [String: String]
        else { throw BenchmarkFailed("no client configuration at \(path)") }
        return config
    }
    let apiConfig = try readClientConfig(clientConfig)
    var api = APIClient(base: apiURL, http: http)
    try await api.authenticate(namespace: apiConfig["namespace"] ?? "", key: apiConfig["key"] ?? "")

    // Seed through the API itself, and the in-process side's store through Control.
    let seedStart = clock.now
    var seeded: [String] = []
    for index in 0..<seedCount {
        let created = try await api.object(.POST, "/instances", body: clientBody(name: "seed\(index)", base: "debian:12", memory: 1024))
        seeded.append(created["uuid"] as? String ?? "")
    }
    let seedSeconds = seconds(clock.now - seedStart)
    let control = Control(store: controlStore, logger: logger)
    for index in 0..<seedCount {
        _ = try await control.createInstance(controlRequest(name: "seed\(index)", base: "debian:12", memory: 1024))
    }
    let one = seeded[seeded.count / 2]
    let (oneStatus, oneBody) = try await api.call(.GET, "/instances/\(one)")
    let (listStatus, listBody) = try await api.call(.GET, "/instances")
    guard oneStatus == 200, listStatus == 200,
        let listed = try JSONSerialization.jsonObject(with: listBody) as? [Any], listed.count == seedCount
    else { throw BenchmarkFailed("the seeded store does not list \(seedCount) instances (\(oneStatus), \(listStatus))") }

    // The alternative: a trivial Hummingbird server (the same framework, in this process) answering
    // the very same bytes from memory: no authentication, no store, no JSON encoding.
    let constantPort = try freeLoopbackPort()
    let constantURL = "http://127.0.0.1:\(constantPort)"
    let oneBuffer = ByteBuffer(bytes: oneBody)
    let listBuffer = ByteBuffer(bytes: listBody)
    let router = Router()
    router.get("/instances/:ref") { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: oneBuffer))
    }
    router.get("/instances") { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: listBuffer))
    }
    let constantApp = Application(
        router: router, configuration: .init(address: .hostname("127.0.0.1", port: constantPort), serverName: "constant"), logger: logger)
    let constantServer = Task { try await constantApp.run() }
    teardown.add("constant server") { constantServer.cancel() }
    try await waitUntil("the constant server listening", timeout: .seconds(10)) { isListening(constantURL) }

    // For profiling by hand: hold the seeded servers up and say how to reach them.
    if let hold = Int(environment["SFNODE_BENCH_HOLD"] ?? "") {
        FileHandle.standardError.write(Data("holding \(hold) s: api \(apiURL) pid \(apiProcess.process.processIdentifier) constant \(constantURL) one /instances/\(one) token \(api.token)\n".utf8))
        try await Task.sleep(for: .seconds(hold))
    }
    // wrk: a short untimed warm-up of each, then three measured runs of each, sfnode and constant
    // interleaved; the run with the median rate stands for each side (a single run on this shared
    // 2-core machine moved by a fifth from one run to the next).
    let bearer = "Authorization: Bearer \(api.token)"
    func measureGet(_ path: String, connections: Int) throws -> (sfnode: WrkRuns, constant: WrkRuns) {
        _ = try wrk(apiURL + path, connections: connections, seconds: 2, script: reportScript, headers: [bearer])
        _ = try wrk(constantURL + path, connections: connections, seconds: 2, script: reportScript, headers: [bearer])
        var measured: [WrkResult] = []
        var constant: [WrkResult] = []
        for _ in 0..<3 {
            measured.append(try wrk(apiURL + path, connections: connections, seconds: wrkSeconds, script: reportScript, headers: [bearer]))
            constant.append(try wrk(constantURL + path, connections: connections, seconds: wrkSeconds, script: reportScript, headers: [bearer]))
        }
        for result in measured + constant where result.non2xx > 0 || result.socketErrors > 0 {
            throw BenchmarkFailed("GET \(path): \(result.non2xx) non-2xx responses, \(result.socketErrors) socket errors")
        }
        return (WrkRuns(measured), WrkRuns(constant))
    }
    let getOne = try measureGet("/instances/\(one)", connections: connections)
    let getList = try measureGet("/instances", connections: listConnections)

    // (j2): what metrics cost a request. A second `sfnode api` on the same store with metrics off
    // (SFNODE_METRICS=false: no request metrics middleware, no /metrics), GET one instance on each,
    // three runs of each interleaved.
    let plainPort = try freeLoopbackPort()
    let plainURL = "http://127.0.0.1:\(plainPort)"
    let plainProcess = try await startAPI("without metrics", port: plainPort, settings: ["SFNODE_METRICS": "false"])
    var withMetrics: [WrkResult] = []
    var withoutMetrics: [WrkResult] = []
    _ = try wrk(plainURL + "/instances/\(one)", connections: connections, seconds: 2, script: reportScript, headers: [bearer])
    for _ in 0..<3 {
        withMetrics.append(try wrk(apiURL + "/instances/\(one)", connections: connections, seconds: wrkSeconds, script: reportScript, headers: [bearer]))
        withoutMetrics.append(
            try wrk(plainURL + "/instances/\(one)", connections: connections, seconds: wrkSeconds, script: reportScript, headers: [bearer]))
    }
    for result in withMetrics + withoutMetrics where result.non2xx > 0 || result.socketErrors > 0 {
        throw BenchmarkFailed("(j2) GET one: \(result.non2xx) non-2xx responses, \(result.socketErrors) socket errors")
    }
    // The scrape the API answers the system namespace, after all those requests.
    let scrapeStart = clock.now
    let (scrapeStatus, scrapeBody) = try await api.call(.GET, "/metrics")
    let apiScrape = seconds(clock.now - scrapeStart)
    guard scrapeStatus == 200 else { throw BenchmarkFailed("GET /metrics answered \(scrapeStatus)") }
    _ = await plainProcess.stop(timeout: .seconds(20))
    let metricsRuns = WrkRuns(withMetrics)
    let plainRuns = WrkRuns(withoutMetrics)

    // (k): POST /instances with the real client's body, a fresh name each, one connection.
    let template = String(decoding: clientBody(name: "NAMEHERE", base: "debian:12", memory: 1024), as: UTF8.self)
    let parts = template.components(separatedBy: "NAMEHERE")
    let postScript = try writeScript(
        "post.lua",
        """
        wrk.method = "POST"
        wrk.headers["Content-Type"] = "application/json"
        wrk.headers["Authorization"] = "Bearer \(api.token)"
        local counter = 0
        local before = [==[\(parts[0])]==]
        local after = [==[\(parts[1])]==]
        request = function()
          counter = counter + 1
          return wrk.format(nil, nil, nil, before .. "accept" .. counter .. after)
        end
        """ + "\n" + reportLua)
    let posts = try wrk(apiURL + "/instances", connections: 1, seconds: wrkSeconds, script: postScript)
    if posts.non2xx > 0 || posts.socketErrors > 0 {
        throw BenchmarkFailed("POST /instances: \(posts.non2xx) non-2xx responses, \(posts.socketErrors) socket errors: \(apiProcess.logTail())")
    }
    // The same number of creates through Control in this process, on its own store seeded alike.
    var controlCreates: [Double] = []
    let controlStart = clock.now
    for index in 0..<posts.requests {
        let before = clock.now
        _ = try await control.createInstance(controlRequest(name: "accept\(index)", base: "debian:12", memory: 1024))
        controlCreates.append(seconds(clock.now - before))
    }
    let controlSeconds = seconds(clock.now - controlStart)
    let apiRSS = (try? String(contentsOfFile: "/proc/\(apiProcess.process.processIdentifier)/status", encoding: .utf8))?
        .split(separator: "\n").first { $0.hasPrefix("VmHWM:") }.map { $0.split(separator: " ").dropFirst().joined(separator: " ") } ?? "?"
    constantServer.cancel()
    _ = await apiProcess.stop(timeout: .seconds(20))

    report.append("## (j) REST API: GET one instance, and the list of \(seedCount)\n")
    report.append("A release `sfnode api` over a store seeded through the API itself with \(seedCount) instances (the real client's")
    report.append("body, one disk, no network; \(String(format: "%.1f", seedSeconds)) s to seed), authenticated with a bearer token; wrk on loopback,")
    report.append("one thread, \(wrkSeconds) s per run after a 2 s warm-up, three runs of each side interleaved, the median run shown")
    report.append("(latencies from that run; all three rates beside it). The alternative, run right after each, is a trivial Hummingbird")
    report.append("server returning the very same bytes from memory, so the difference is what sfnode's authentication, store reads")
    report.append("and JSON encoding cost per request.\n")
    report.append("| request | server | connections | requests/s (median) | the three runs | p50 | p99 | max |")
    report.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    func row(_ request: String, _ server: String, _ connections: Int, _ runs: WrkRuns) -> String {
        let result = runs.median
        return "| \(request) | \(server) | \(connections) | \(rate(result.rate)) | \(runs.rates.map(rate).joined(separator: ", ")) | \(ms(result.p50)) | \(ms(result.p99)) | \(ms(result.max)) |"
    }
    report.append(row("`GET /instances/<uuid>` (\(oneBody.count) bytes)", "`sfnode api`", connections, getOne.sfnode))
    report.append(row("`GET /instances/<uuid>` (\(oneBody.count) bytes)", "constant Hummingbird route", connections, getOne.constant))
    report.append(row("`GET /instances` (\(listBody.count / 1024) KiB)", "`sfnode api`", listConnections, getList.sfnode))
    report.append(row("`GET /instances` (\(listBody.count / 1024) KiB)", "constant Hummingbird route", listConnections, getList.constant))
    report.append("")
    report.append("Targets: GET one at least 10,000 requests/s with p99 under 10 ms. `sfnode api` peak RSS after (j) and (k): \(apiRSS).")
    if getOne.sfnode.median.rate < 10_000 {
        failures.append("(j) GET one instance at \(rate(getOne.sfnode.median.rate)) requests/s is not 10,000")
    }
    if getOne.sfnode.median.p99 >= 0.010 { failures.append("(j) GET one instance p99 \(ms(getOne.sfnode.median.p99)) is not under 10 ms") }

    let metricsCost = 1 - metricsRuns.median.rate / plainRuns.median.rate
    report.append("\n## (j2) What metrics cost a request\n")
    report.append("The same `GET /instances/<uuid>` as (j), on the same store, against `sfnode api` as it runs (request metrics")
    report.append("by route, method and status; `/metrics` for the system namespace) and a second `sfnode api` with")
    report.append("`SFNODE_METRICS=false`; three runs of each interleaved, the median run shown. The first side's `GET /metrics`")
    report.append("afterwards took \(ms(apiScrape)) for \(scrapeBody.count / 1024) KiB.\n")
    report.append("| server | requests/s (median) | the three runs | p50 | p99 |")
    report.append("| --- | --- | --- | --- | --- |")
    for (label, runs) in [("`sfnode api`, metrics on", metricsRuns), ("`sfnode api`, `SFNODE_METRICS=false`", plainRuns)] {
        report.append(
            "| \(label) | \(rate(runs.median.rate)) | \(runs.rates.map(rate).joined(separator: ", ")) | \(ms(runs.median.p50)) | \(ms(runs.median.p99)) |")
    }
    report.append("\nMetrics cost \(String(format: "%.1f", metricsCost * 100)) % of the throughput. Target: under 5 % (issue 16).")
    if metricsCost >= 0.05 { failures.append("(j2) metrics cost \(String(format: "%.1f", metricsCost * 100)) % of GET throughput") }

    report.append("\n## (k) Instance create acceptance\n")
    report.append("`POST /instances` to its 200 with the real client's body (a fresh name each), wrk with one connection for")
    report.append("\(wrkSeconds) s, no agent running: validation, placement, the instance, its job and its event committed, and the")
    report.append("instance's full object returned. Beside it, the same number of creates through `Control.createInstance` in this")
    report.append("process, on a store of its own seeded alike (\(seedCount) instances): the use case without HTTP, authentication or JSON.")
    report.append("Both stores grow from \(seedCount) to \(seedCount + posts.requests) instances as they run.\n")
    report.append("| path | creates | creates/s | p50 | p99 | max |")
    report.append("| --- | --- | --- | --- | --- | --- |")
    report.append("| `POST /instances` (wrk, 1 connection) | \(posts.requests) | \(rate(posts.rate)) | \(ms(posts.p50)) | \(ms(posts.p99)) | \(ms(posts.max)) |")
    report.append(
        "| `Control.createInstance`, in-process | \(controlCreates.count) | \(rate(Double(controlCreates.count) / controlSeconds)) | "
            + "\(ms(percentile(controlCreates, 50))) | \(ms(percentile(controlCreates, 99))) | \(ms(controlCreates.max() ?? .nan)) |")

    // MARK: (l): create → running through `sfnode serve`

    let serveDirectory = workDirectory + "/serve"
    try FileManager.default.createDirectory(atPath: serveDirectory, withIntermediateDirectories: true)
    let hostNamespace = runID + "host"
    try teardown.createNamespaces([hostNamespace])
    teardown.add("domains") { await removeDomains() }
    let imageServer = try LoopbackHTTPServer()
    imageServer.register("/images/guest.qcow2", file: TestGuest.baseImage)
    teardown.add("image server") { imageServer.stop() }
    let imageURL = imageServer.url("/images/guest.qcow2")
    let servePort = try freeLoopbackPort()
    let serveURL = "http://127.0.0.1:\(servePort)"
    let serveNode = "\(runID)-serve"
    let serveConfig = serveDirectory + "/shakenfist.json"
    let serveEnvironment = AgentProcess.environment(
        directory: serveDirectory, storage: serveDirectory + "/storage", hostNamespace: hostNamespace, nodeName: serveNode,
        prefix: runID, floatingRange: "192.0.2.0/24", leaseSeconds: 30
    ).merging([
        "SFNODE_FETCH_ALLOW": "127.0.0.0/8", "SFNODE_IMAGE_DOWNLOAD_URL": imageServer.baseURL,
        "SFNODE_API_LISTEN": "127.0.0.1:\(servePort)", "SFNODE_CLIENT_CONFIG": serveConfig, "SFNODE_LOG_LEVEL": "info",
    ]) { _, given in given }
    let serve = try AgentProcess.start(executable: sfnode, arguments: ["serve"], environment: serveEnvironment, log: serveDirectory + "/serve.log")
    teardown.add("sfnode serve") {
        _ = await serve.stop(timeout: .seconds(30))
        await serve.kill()
    }
    try await waitUntil("sfnode serve listening", timeout: .seconds(60)) {
        guard serve.isRunning else { throw BenchmarkFailed("sfnode serve exited: \(serve.logTail())") }
        return FileManager.default.fileExists(atPath: serveConfig) && isListening(serveURL)
    }
    let serveStore = try SQLStore(path: serveDirectory + "/store.sqlite", fqdn: "\(runID)-bench", logger: logger)
    try await waitUntil("sfnode serve's agent checking in", timeout: .seconds(60)) {
        (try await serveStore.node(named: serveNode))?.lastSeen != nil
    }
    let serveClientConfig = try readClientConfig(serveConfig)
    var serveAPI = APIClient(base: serveURL, http: http)
    try await serveAPI.authenticate(namespace: serveClientConfig["namespace"] ?? "", key: serveClientConfig["key"] ?? "")
    let serveControl = Control(store: serveStore, logger: logger)
    let pollInterval = Duration.milliseconds(10)

    func checkState(_ state: String, _ uuid: String, _ message: Any?) throws {
        if state.hasSuffix("error") || state == "deleted" {
            throw BenchmarkFailed("instance \(uuid) went to \(state): \(message ?? "?"); \(serve.logTail())")
        }
    }
    func deleteThroughAPI(_ uuid: String) async throws {
        _ = try await serveAPI.object(.DELETE, "/instances/\(uuid)")
        try await waitUntil("instance \(uuid) deleted", timeout: .seconds(120)) {
            (try await serveStore.instance(uuid: UUID(uuidString: uuid)!)).state == .deleted
        }
    }
    /// POST → its 200 → `created` as GET sees it, polled every 10 ms.
    func createThroughAPI(_ name: String) async throws -> (accepted: Double, created: Double) {
        let start = clock.now
        let instance = try await serveAPI.object(.POST, "/instances", body: clientBody(name: name, base: imageURL, memory: 256))
        let accepted = clock.now
        guard let uuid = instance["uuid"] as? String else { throw BenchmarkFailed("POST /instances returned no uuid") }
        while true {
            let seen = try await serveAPI.object(.GET, "/instances/\(uuid)")
            let state = seen["state"] as? String ?? "?"
            if state == "created" { break }
            try checkState(state, uuid, seen["error_message"])
            guard clock.now - start < .seconds(180) else { throw BenchmarkFailed("instance \(uuid) still \(state) after 180 s") }
            try await Task.sleep(for: pollInterval)
        }
        let created = clock.now
        try await deleteThroughAPI(uuid)
        return (seconds(accepted - start), seconds(created - start))
    }
    /// The same create through the use case on the same store (this process's handle on it; the
    /// agent in `sfnode serve` sees the job by the store's change token), polled every 10 ms.
    func createThroughStore(_ name: String) async throws -> (accepted: Double, created: Double) {
        let start = clock.now
        let (instance, _) = try await serveControl.createInstance(controlRequest(name: name, base: imageURL, memory: 256))
        let accepted = clock.now
        while true {
            let seen = try await serveStore.instance(uuid: instance.uuid)
            if seen.state == .created { break }
            try checkState(seen.state.rawValue, instance.uuid.lowercasedString, seen.errorMessage)
            guard clock.now - start < .seconds(180) else { throw BenchmarkFailed("instance \(instance.uuid) still \(seen.state) after 180 s") }
            try await Task.sleep(for: pollInterval)
        }
        let created = clock.now
        try await deleteThroughAPI(instance.uuid.lowercasedString)
        return (seconds(accepted - start), seconds(created - start))
    }
    /// The real client, as a user runs it: `client_api.py create-instance` (a new Python process that
    /// authenticates, POSTs and then polls GET once a second until the state leaves initial/creating),
    /// and `client_api.py show-instance` (the same process start and authentication, one GET) for scale.
    let clientEnvironment = [
        "HOME=\(serveDirectory)", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", "SHAKENFIST_API_URL=\(serveURL)",
        "SHAKENFIST_NAMESPACE=\(serveClientConfig["namespace"] ?? "")", "SHAKENFIST_KEY=\(serveClientConfig["key"] ?? "")",
    ]
    func clientAPI(_ arguments: [String]) throws -> (seconds: Double, object: [String: Any]) {
        let argv =
            ["/usr/bin/env", "-i"] + clientEnvironment
            + [clientVenv + "/bin/python", repository + "/Tests/Acceptance/client_api.py", "--timeout", "300"] + arguments
        let start = clock.now
        let output = try ChildProcess.run(argv)
        let elapsed = seconds(clock.now - start)
        guard output.status == 0,
            let object = try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]
        else { throw BenchmarkFailed("client_api.py \(arguments.joined(separator: " ")) exited \(output.status): \(output.stdout)\(output.stderr)") }
        return (elapsed, object)
    }
    let haveClient = FileManager.default.isExecutableFile(atPath: clientVenv + "/bin/python")
    func createThroughClient(_ name: String) async throws -> (create: Double, show: Double) {
        let (elapsed, instance) = try clientAPI(["create-instance", name, "1", "256", "--disk", "8@\(imageURL)"])
        guard let uuid = instance["uuid"] as? String, instance["state"] as? String == "created" else {
            throw BenchmarkFailed("the real client's create returned \(instance)")
        }
        let (show, _) = try clientAPI(["show-instance", uuid])
        try await deleteThroughAPI(uuid)
        return (elapsed, show)
    }

    // One untimed warm-up of each (the first also brings the image into the cache), then the
    // repetitions interleaved so that drift hits every side alike.
    _ = try await createThroughAPI("warmapi")
    _ = try await createThroughStore("warmstore")
    if haveClient { _ = try await createThroughClient("warmclient") }
    var throughAPI: [(accepted: Double, created: Double)] = []
    var throughStore: [(accepted: Double, created: Double)] = []
    var throughClient: [(create: Double, show: Double)] = []
    for index in 1...createRepetitions {
        throughAPI.append(try await createThroughAPI("api\(index)"))
        throughStore.append(try await createThroughStore("store\(index)"))
        if haveClient { throughClient.append(try await createThroughClient("client\(index)")) }
    }
    try await teardown.run()

    let apiCreated = median(throughAPI.map(\.created))
    let storeCreated = median(throughStore.map(\.created))
    let added = apiCreated - storeCreated
    report.append("\n## (l) Create → running through the API\n")
    report.append("A release `sfnode serve` (API and agent in one process) whose agent's host side is a throwaway network namespace;")
    report.append("one instance at a time (1 vCPU, 256 MiB, TCG, 8 GiB over the test image from a loopback URL, already cached after")
    report.append("an untimed warm-up, the config drive built), median of \(createRepetitions), the sides interleaved. Through the API: from")
    report.append("sending `POST /instances` (the real client's body) to the first `GET /instances/<uuid>` that says `created`,")
    report.append("polled every 10 ms. Through the store: `Control.createInstance` in this benchmark's process on the same store")
    report.append("(what `sfnode instance create` does), then the store read every 10 ms. Each instance is deleted, untimed, before the next.\n")
    report.append("| path | accepted | created (running) | min | max |")
    report.append("| --- | --- | --- | --- | --- |")
    report.append(
        "| `POST /instances`, then `GET` every 10 ms | \(ms1(median(throughAPI.map(\.accepted)))) | \(ms1(apiCreated)) | "
            + "\(ms1(throughAPI.map(\.created).min() ?? .nan)) | \(ms1(throughAPI.map(\.created).max() ?? .nan)) |")
    report.append(
        "| `Control.createInstance` on the store, then a store read every 10 ms | \(ms1(median(throughStore.map(\.accepted)))) | "
            + "\(ms1(storeCreated)) | \(ms1(throughStore.map(\.created).min() ?? .nan)) | \(ms1(throughStore.map(\.created).max() ?? .nan)) |")
    if haveClient {
        report.append(
            "| the real client's `create_instance` (`client_api.py create-instance`: a Python process, `/auth`, POST, GET once a second) | "
                + "— | \(ms1(median(throughClient.map(\.create)))) | \(ms1(throughClient.map(\.create).min() ?? .nan)) | "
                + "\(ms1(throughClient.map(\.create).max() ?? .nan)) |")
        report.append(
            "| for scale: `client_api.py show-instance` (the same process start and `/auth`, one GET) | — | "
                + "\(ms1(median(throughClient.map(\.show)))) | \(ms1(throughClient.map(\.show).min() ?? .nan)) | "
                + "\(ms1(throughClient.map(\.show).max() ?? .nan)) |")
    } else {
        report.append("\n(The real client's virtualenv was not found at \(clientVenv): run scripts/client-venv.)")
    }
    report.append("")
    report.append("What the API adds to create → running: \(String(format: "%+.1f", added * 1000)) ms (medians). Target: under 20 ms.")
    if added >= 0.020 { failures.append("(l) the API adds \(ms1(added)) to create → running, not under 20 ms") }
    if !failures.isEmpty {
        report.append("\n**Targets missed:** " + failures.joined(separator: "; "))
    }
    try? await http.shutdown()
    print(report.joined(separator: "\n"))
    exit(0)
} catch {
    FileHandle.standardError.write(Data("APIBenchmark failed: \(error)\n".utf8))
    try? await teardown.run()
    await removeDomains()
    for name in NetworkNamespace.list() where name.hasPrefix(runID) { try? NetworkNamespace.delete(named: name) }
    try? FileManager.default.removeItem(atPath: workDirectory)
    try? await http.shutdown()
    exit(1)
}
