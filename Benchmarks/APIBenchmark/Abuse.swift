// (n): GET one instance under abuse. A release `sfnode serve` (API and agent in one process, the agent's
// host side a throwaway network namespace) answers `GET /instances/<uuid>` under wrk, first quiet, then
// while two clients upload 2 GiB each in 4 MiB chunks (each finished into an artifact, which reads and
// hashes the 2 GiB, then started again) and the agent fetches an image from a loopback server that
// sends one byte a second. Run with SFNODE_BENCH_ABUSE=1 (scripts/bench-api-abuse).
import Foundation
import SFControl
import SFStore
import SFSystem
import SFTestSupport
import Synchronization

/// Whether the abuse is still wanted, and how far it got.
final class AbuseProgress: Sendable {
    private let state = Mutex((stop: false, bytes: Int64(0), finishes: 0, failure: String?.none))
    var stopped: Bool { state.withLock { $0.stop } }
    func stop() { state.withLock { $0.stop = true } }
    func uploaded(_ bytes: Int64) { state.withLock { $0.bytes += bytes } }
    func finished() { state.withLock { $0.finishes += 1 } }
    func failed(_ message: String) { state.withLock { if $0.failure == nil { $0.failure = message } } }
    var summary: (bytes: Int64, finishes: Int, failure: String?) { state.withLock { ($0.bytes, $0.finishes, $0.failure) } }
}

/// One uploader: 2 GiB to a new upload, made an artifact, again, until stopped. Blocking; for a thread.
func uploadLoop(port: Int, token: String, name: String, progress: AbuseProgress) {
    let chunksPerUpload = 512
    do {
        let connection = try RawHTTPConnection(port: port)
        while !progress.stopped {
            let (status, body) = try connection.request("POST", "/upload", token: token)
            guard status == 200, let data = body.data(using: .utf8),
                let uuid = (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["uuid"] as? String
            else { throw BenchmarkFailed("POST /upload answered \(status): \(body)") }
            for _ in 0..<chunksPerUpload where !progress.stopped {
                _ = try connection.upload(token: token, uuid: uuid, chunks: 1)
                progress.uploaded(4 << 20)
            }
            let made = try connection.request("POST", "/artifacts/upload/\(name)", token: token, json: "{\"upload_uuid\": \"\(uuid)\"}")
            guard made.status == 200 else { throw BenchmarkFailed("making artifact \(name) answered \(made.status): \(made.body)") }
            progress.finished()
        }
    } catch {
        progress.failed("\(error)")
    }
}

@MainActor func abuseBenchmark(reportScript: String) async throws -> [String] {
    let directory = workDirectory + "/abuse"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let hostNamespace = runID + "abu"
    try teardown.createNamespaces([hostNamespace])
    teardown.add("domains") { await removeDomains() }
    let drip = try LoopbackHTTPServer()
    drip.register("/drip.qcow2", data: Data(count: 1 << 20), behaviour: .throttled(bytesPerSecond: 1))
    teardown.add("drip server") { drip.stop() }
    let port = try freeLoopbackPort()
    let url = "http://127.0.0.1:\(port)"
    let nodeName = "\(runID)-abuse"
    let config = directory + "/shakenfist.json"
    let environment = AgentProcess.environment(
        directory: directory, storage: directory + "/storage", hostNamespace: hostNamespace, nodeName: nodeName,
        prefix: runID, floatingRange: "192.0.2.0/24", leaseSeconds: 30
    ).merging([
        "SFNODE_FETCH_ALLOW": "127.0.0.0/8", "SFNODE_API_LISTEN": "127.0.0.1:\(port)", "SFNODE_CLIENT_CONFIG": config,
    ]) { _, given in given }
    let serve = try AgentProcess.start(executable: sfnode, arguments: ["serve"], environment: environment, log: directory + "/serve.log")
    teardown.add("sfnode serve (abuse)") {
        _ = await serve.stop(timeout: .seconds(30))
        await serve.kill()
    }
    try await waitUntil("sfnode serve listening", timeout: .seconds(60)) {
        guard serve.isRunning else { throw BenchmarkFailed("sfnode serve exited: \(serve.logTail())") }
        return FileManager.default.fileExists(atPath: config) && isListening(url)
    }
    guard let data = FileManager.default.contents(atPath: config),
        let client = try JSONSerialization.jsonObject(with: data) as? [String: String]
    else { throw BenchmarkFailed("no client configuration at \(config)") }
    var api = APIClient(base: url, http: http)
    try await api.authenticate(namespace: client["namespace"] ?? "", key: client["key"] ?? "")

    // The instance read is placed on a node that never runs it (no agent of that name): booting a
    // guest during the measurement would only add noise.
    let store = try SQLStore(path: directory + "/store.sqlite", fqdn: "\(runID)-bench", logger: logger)
    let far = "\(runID)-far"
    try await store.saveNode(fakeNode(far))
    var request = controlRequest(name: "read", base: "debian:12", memory: 1024)
    request.forcePlacement = far
    let (instance, _) = try await Control(store: store, logger: logger).createInstance(request)
    let path = "/instances/\(instance.uuid.lowercasedString)"
    let bearer = "Authorization: Bearer \(api.token)"
    let wrkConnections = 4
    let runsPerCase = 5

    func measure() throws -> WrkRuns {
        _ = try wrk(url + path, connections: wrkConnections, seconds: 2, script: reportScript, headers: [bearer])
        return WrkRuns(try (0..<runsPerCase).map { _ in try wrk(url + path, connections: wrkConnections, seconds: wrkSeconds, script: reportScript, headers: [bearer]) })
    }
    let quiet = try measure()

    let fetch = try await api.object(.POST, "/artifacts", body: Data("{\"url\": \"\(drip.url("/drip.qcow2"))\"}".utf8))
    let progress = AbuseProgress()
    let token = api.token
    for index in 0..<2 {
        try OSThread.spawn(name: "bench-upload\(index)") { uploadLoop(port: port, token: token, name: "\(runID)-up\(index)", progress: progress) }
    }
    try await waitUntil("both uploads under way", timeout: .seconds(60)) { progress.summary.bytes >= 64 << 20 || progress.summary.failure != nil }
    let start = clock.now
    let abused = try measure()
    let elapsed = seconds(clock.now - start)
    progress.stop()
    let (bytes, finishes, failure) = progress.summary
    let dripped = drip.bytesSent("/drip.qcow2")

    var lines: [String] = []
    lines.append("## (n) GET one instance while two uploads and a slow-drip fetch run")
    lines.append("")
    lines.append("`GET \(path.prefix(11))<uuid>` against `sfnode serve` (API and agent in one process), wrk on loopback, one")
    lines.append("thread, \(wrkConnections) connections, \(wrkSeconds) s per run after a 2 s warm-up, \(runsPerCase) runs per case. Abused: two")
    lines.append("clients each upload 2 GiB in 4 MiB chunks and make it an artifact (the finish reads and hashes the 2 GiB), over and")
    lines.append("over, while the agent fetches artifact \((fetch["uuid"] as? String) ?? "?") from a loopback server sending one byte a second.")
    lines.append("")
    lines.append("This machine is a 2-vCPU guest whose hypervisor takes CPU time from it (the steal column of `/proc/stat`) in")
    lines.append("slices of up to 100 ms; a request caught in one waits that long, whatever the server does. So each run's stolen")
    lines.append("time is measured, and both the median run (by rate) and the run with the least stolen time are shown.")
    lines.append("")
    lines.append("| case | run | requests/s | p50 | p99 | max | CPU stolen | non-2xx |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (name, runs) in [("quiet", quiet), ("abused", abused)] {
        for (which, run) in [("median", runs.median), ("least stolen", runs.leastStolen)] {
            lines.append(
                "| \(name) | \(which) | \(rate(run.rate)) | \(ms(run.p50)) | \(ms(run.p99)) | \(ms(run.max)) | \(ms(run.stolen)) | \(run.non2xx) |")
        }
    }
    lines.append("")
    let perRun = [("quiet", quiet), ("abused", abused)].map { name, runs in
        "\(name): " + runs.all.map { "\(ms($0.p99)) (\(ms($0.stolen)) stolen)" }.joined(separator: ", ")
    }
    lines.append("Every run's p99, with the CPU time stolen during it: " + perRun.joined(separator: "; ") + ".")
    lines.append("")
    let ratio = abused.median.p99 / quiet.median.p99
    let leastRatio = abused.leastStolen.p99 / quiet.leastStolen.p99
    lines.append(String(
        format: "During the abused runs (%.0f s) the uploads moved %.1f GiB (%.0f MiB/s) and finished %d artifacts; the drip server sent %d bytes. ",
        elapsed, Double(bytes) / Double(1 << 30), Double(bytes) / Double(1 << 20) / max(elapsed, 1), finishes, dripped)
        + String(format: "Abused p99 / quiet p99 = %.2f for the median runs, %.2f for the least-stolen runs (target: at most 2, and under 10 ms).", ratio, leastRatio))
    if let failure { lines.append("An uploader stopped early: \(failure)") }
    return lines
}
