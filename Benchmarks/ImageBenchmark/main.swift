// Image benchmarks: download + sha512 + store throughput against `curl | tee FILE | sha512sum` on the
// same loopback file, upload throughput through the chunked upload session against `cp` +
// `sha512sum`, and sha512 alone on one core (the physical limit). Everything lives under a
// throwaway directory removed at the end. Prints a Markdown report on stdout.
//
// The pipeline side shells out on purpose: it is the alternative being measured.
import Foundation
import Logging
import SFBlobs
import SFStore
import SFSystem
import SFTestSupport

let logger = {
    var logger = Logger(label: "sfnode.bench.image")
    logger.logLevel = .warning
    return logger
}()
let environment = ProcessInfo.processInfo.environment
let sizeMiB = Int(environment["SFNODE_BENCH_IMAGE_MIB"] ?? "") ?? 1024
let repetitions = Int(environment["SFNODE_BENCH_IMAGE_REPS"] ?? "") ?? 3
let workDirectory = "/var/lib/sfnode/bench/sfbimg" + String(format: "%05x", UInt32.random(in: 0...0xfffff))

struct BenchmarkFailed: Error, CustomStringConvertible {
    let description: String
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
func rate(_ bytes: Int, _ seconds: Double) -> String { String(format: "%.0f MB/s", Double(bytes) / seconds / 1e6) }
func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func shell(_ command: String) throws {
    let result = try ChildProcess.run(["/bin/bash", "-o", "pipefail", "-c", command])
    guard result.status == 0 else { throw BenchmarkFailed(description: "\(command) exited \(result.status): \(result.stderr)") }
}

var report: [String] = []
let clock = ContinuousClock()
do {
    try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: workDirectory) }
    let source = workDirectory + "/source.img"
    try shell("head -c \(sizeMiB)M /dev/urandom > \(source)")
    let bytes = sizeMiB << 20
    let server = try LoopbackHTTPServer()
    defer { server.stop() }
    server.register("/image", file: source)
    let store = try SQLStore(path: workDirectory + "/store.sqlite", fqdn: "bench", logger: logger)
    let blobs = BlobStore(records: store, directory: workDirectory + "/blobs", nodeName: "bench", logger: logger)
    try FileManager.default.createDirectory(atPath: workDirectory + "/blobs", withIntermediateDirectories: true)
    let fetcher = HTTPFetcher(
        // Loopback, where the image server is, opened explicitly (the default rules refuse it).
        configuration: HTTPFetcher.Configuration(rules: try DestinationRules.parse(allow: "127.0.0.0/8", deny: nil)),
        logger: logger)

    // (h) Download, hash and store. sfnode's side also fsyncs the file and records the blob; the
    // pipeline's does neither, so it gets `sync` of its file added to be comparable.
    var sfnode: [Double] = []
    var pipeline: [Double] = []
    var pipelineNoSync: [Double] = []
    var hashOnly: [Double] = []
    for _ in 0..<repetitions {
        var started = clock.now
        let ingest = try blobs.beginIngest()
        _ = try await fetcher.fetch(server.url("/image"), hashing: false, restart: { throw BenchmarkFailed(description: "a retry during the benchmark") }) {
            try ingest.append($0)
        }
        let blob = try await ingest.finish()
        sfnode.append(seconds(clock.now - started))
        // The next run must store again, not find the same content: remove this blob.
        try await store.setBlobState(uuid: blob.uuid, to: .deleted)
        try? FileManager.default.removeItem(atPath: blobs.path(of: blob.uuid))

        started = clock.now
        try shell("curl -sSf \(server.url("/image")) | tee \(workDirectory)/piped.img | sha512sum > /dev/null && sync -f \(workDirectory)/piped.img")
        pipeline.append(seconds(clock.now - started))
        started = clock.now
        try shell("curl -sSf \(server.url("/image")) | tee \(workDirectory)/piped.img | sha512sum > /dev/null")
        pipelineNoSync.append(seconds(clock.now - started))
        try FileManager.default.removeItem(atPath: workDirectory + "/piped.img")
        started = clock.now
        try shell("sha512sum \(source) > /dev/null")
        hashOnly.append(seconds(clock.now - started))
    }
    report.append("## (h) Download, hash and store an image\n")
    report.append("A \(sizeMiB) MiB file of random bytes served by the tests' loopback HTTP server; median of \(repetitions).")
    report.append("sfnode streams it with the fetcher (destination rules checked), hashes it with sha512 as it arrives, writes")
    report.append("it to a `.partial`, fsyncs, renames and records the blob.\n")
    report.append("| implementation | time | throughput |")
    report.append("| --- | --- | --- |")
    report.append("| sfnode fetch → blob (sha512, fsync, rename, record) | \(String(format: "%.2f s", median(sfnode))) | \(rate(bytes, median(sfnode))) |")
    report.append("| `curl … \\| tee FILE \\| sha512sum` + `sync` of the file | \(String(format: "%.2f s", median(pipeline))) | \(rate(bytes, median(pipeline))) |")
    report.append("| `curl … \\| tee FILE \\| sha512sum` (not synced) | \(String(format: "%.2f s", median(pipelineNoSync))) | \(rate(bytes, median(pipelineNoSync))) |")
    report.append("| `sha512sum FILE` alone: one core's limit | \(String(format: "%.2f s", median(hashOnly))) | \(rate(bytes, median(hashOnly))) |")
    report.append("\nTarget: at least the pipeline's speed.\n")

    // (i) Upload through the chunked session: 4 MiB chunks appended, then finished (verified,
    // deduplicated, recorded), against copying the file and hashing the copy.
    let uploads = UploadSessions(blobs: blobs, records: store, directory: workDirectory + "/uploads")
    var uploaded: [Double] = []
    var copied: [Double] = []
    let chunk = 4 << 20
    for _ in 0..<repetitions {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: source))
        let started = clock.now
        let upload = try await uploads.create(namespace: "system")
        while let data = try file.read(upToCount: chunk), !data.isEmpty {
            _ = try await uploads.append(uuid: upload.uuid, bytes: data)
        }
        let blob = try await uploads.finish(uuid: upload.uuid)
        uploaded.append(seconds(clock.now - started))
        try file.close()
        try await store.setBlobState(uuid: blob.uuid, to: .deleted)
        try? FileManager.default.removeItem(atPath: blobs.path(of: blob.uuid))
        let copyStarted = clock.now
        try shell("cp \(source) \(workDirectory)/copy.img && sha512sum \(workDirectory)/copy.img > /dev/null && sync -f \(workDirectory)/copy.img")
        copied.append(seconds(clock.now - copyStarted))
        try FileManager.default.removeItem(atPath: workDirectory + "/copy.img")
    }
    report.append("## (i) Upload through the chunked session\n")
    report.append("The same file in 4 MiB chunks through `UploadSessions` (append, each chunk hashed beside the next one's write;")
    report.append("then finish: fsync, link, record),")
    report.append("in-process (the REST API adds its own transport); median of \(repetitions).\n")
    report.append("| implementation | time | throughput |")
    report.append("| --- | --- | --- |")
    report.append("| sfnode upload session → blob | \(String(format: "%.2f s", median(uploaded))) | \(rate(bytes, median(uploaded))) |")
    report.append("| `cp` + `sha512sum` + `sync` | \(String(format: "%.2f s", median(copied))) | \(rate(bytes, median(copied))) |")
    report.append("")

    // (r) A blob copied from one node to another over a mesh: two namespaces joined by a veth
    // switch, the peer server in one, the client in the other (verified against the blob's sha512,
    // fsynced, renamed, its location recorded).
    let original = try blobs.beginIngest()
    let sourceHandle = try FileHandle(forReadingFrom: URL(fileURLWithPath: source))
    while let data = try sourceHandle.read(upToCount: chunk), !data.isEmpty { try original.append(contentsOf: data) }
    try sourceHandle.close()
    let served = try await original.finish()
    let meshSwitch = TestNames.unique("bsw")
    let hosts = [TestNames.unique("bha"), TestNames.unique("bhb")]
    let addresses = [IPv4Address("10.252.0.1"), IPv4Address("10.252.0.2")].compactMap { $0 }
    for name in [meshSwitch] + hosts { try NetworkNamespace.create(named: name) }
    defer { for name in [meshSwitch] + hosts { try? NetworkNamespace.delete(named: name) } }
    try await ClusterMesh.join(switchNamespace: meshSwitch, hosts: zip(hosts, addresses).map { ($0, $1) }, logger: logger)
    let credentials = try await PeerCredentials.load(records: store, nodeName: "bench")
    let peerServer = try await PeerServer.start(
        address: addresses[0], port: 0, namespace: hosts[0], credentials: credentials, blobs: blobs,
        instanceFiles: InstanceFiles(storagePath: workDirectory), logger: logger)
    let client = try await PeerClient.make(namespace: hosts[1], credentials: credentials, port: peerServer.port, logger: logger)
    let receiving = BlobStore(records: store, directory: workDirectory + "/blobs-b", nodeName: "bench-b", logger: logger)
    var transferred: [Double] = []
    var hashed: [Double] = []
    for _ in 0..<repetitions {
        let started = clock.now
        _ = try await client.pull(served, from: [Peer(name: "bench", address: addresses[0])], into: receiving)
        transferred.append(seconds(clock.now - started))
        try FileManager.default.removeItem(atPath: receiving.path(of: served.uuid))
        _ = try await store.removeBlobLocation(uuid: served.uuid, node: "bench-b")
        let hashStarted = clock.now
        try shell("sha512sum \(source) > /dev/null")
        hashed.append(seconds(clock.now - hashStarted))
    }
    await peerServer.stop()
    report.append("## (r) A blob copied between nodes over the mesh\n")
    report.append("The same file as a blob on one node, pulled by another over a veth mesh between two namespaces (peer server:")
    report.append("`sendfile`; client: receive, sha512, write, fsync, rename, record the location); median of \(repetitions).\n")
    report.append("| implementation | time | throughput |")
    report.append("| --- | --- | --- |")
    report.append("| sfnode node-to-node copy → blob | \(String(format: "%.2f s", median(transferred))) | \(rate(bytes, median(transferred))) |")
    report.append("| `sha512sum FILE` alone: one core's limit | \(String(format: "%.2f s", median(hashed))) | \(rate(bytes, median(hashed))) |")
    report.append("")
    print(report.joined(separator: "\n"))
} catch {
    FileHandle.standardError.write(Data("image benchmark failed: \(error)\n".utf8))
    exit(1)
}
