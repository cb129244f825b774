// Store benchmark: the hot reads of SFStore, timed in-process against a fresh SQLite store.
//   (a) instanceRecords(namespace: nil): the API's list of every instance, with interfaces and metadata;
//   (b) instanceRecord(uuid:): the API's GET of one instance;
//   (c) instances(node:): the reconciler's read of a node's instances;
//   (d) claimNext + complete, one job at a time, from a queue of queued jobs.
// Prints a Markdown table of wall-clock medians and p90, and the median CPU time of the whole process, on stdout. Only the store is measured: no agent,
// no libvirt, nothing outside a temporary directory. Sizes: SFNODE_BENCH_OBJECTS (1000 instances),
// SFNODE_BENCH_ROUNDS (repetitions), SFNODE_BENCH_JOBS (jobs claimed and completed).
import Foundation
import SFStore
import SFSystem

let environment = ProcessInfo.processInfo.environment
let objects = Int(environment["SFNODE_BENCH_OBJECTS"] ?? "") ?? 1000
let rounds = Int(environment["SFNODE_BENCH_ROUNDS"] ?? "") ?? 30
let jobCount = Int(environment["SFNODE_BENCH_JOBS"] ?? "") ?? 2000

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
}

/// The CPU time of every thread of the process: the store's reads run on GRDB's reader threads, and
/// on a loaded machine CPU time varies far less than the wall clock.
func processCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Wall-clock and CPU seconds of each repetition.
func timed(_ repetitions: Int, _ body: () async throws -> Void) async throws -> (wall: [Double], cpu: [Double]) {
    let clock = ContinuousClock()
    var wall: [Double] = []
    var cpu: [Double] = []
    for _ in 0..<repetitions {
        let start = clock.now
        let startCPU = processCPUSeconds()
        try await body()
        cpu.append(processCPUSeconds() - startCPU)
        wall.append(seconds(clock.now - start))
    }
    return (wall, cpu)
}

let store = try SQLStore.temporary(fqdn: "bench-node")
defer { store.removeFiles() }

guard let netblock = IPv4Prefix("10.0.0.0/16") else { throw StoreError.invalidArgument("the benchmark's netblock") }
let network = try await store.createNetwork(
    uuid: UUID(), name: "bench", namespace: "system", netblock: netblock, provideDHCP: true,
    provideNAT: true, provideDNS: false, spoofFilter: true, jobs: [])
var uuids: [UUID] = []
for index in 0..<objects {
    let instance = Instance(
        name: "bench-\(index)", namespace: "system", cpus: 1, memory: 1024, diskSpec: [DiskSpec(base: "debian", size: 8)],
        node: index % 5 == 0 ? "bench-node" : "other-node")
    _ = try await store.createInstance(
        instance, interfaces: [NewInterface(networkUUID: network.uuid, model: "virtio", address: .any)], jobs: [])
    try await store.setMetadata(objectType: "instance", objectUUID: instance.uuid.lowercasedString, key: "tags", value: .array([.string("bench")]))
    uuids.append(instance.uuid)
}

var rows: [(name: String, seconds: (wall: [Double], cpu: [Double]))] = []
_ = try await store.instanceRecords(namespace: nil)  // warm the statement cache and decoded JSON
rows.append(("(a) list of \(objects) instance records", try await timed(rounds) { _ = try await store.instanceRecords(namespace: nil) }))
var next = 0
rows.append((
    "(b) one instance record by uuid",
    try await timed(rounds * 100) {
        _ = try await store.instanceRecord(uuid: uuids[next % uuids.count])
        next += 1
    }))
rows.append(("(c) instances(node:) of \(objects / 5)", try await timed(rounds * 10) { _ = try await store.instances(node: "bench-node") }))

for batch in stride(from: 0, to: jobCount, by: 500) {
    _ = try await store.enqueue(
        (batch..<min(jobCount, batch + 500)).map { NewJob(kind: "bench", payload: .object(["n": .number(Double($0))]), target: .node("bench-node"), objectKey: nil) })
}
rows.append((
    "(d) claimNext + complete, one job",
    try await timed(jobCount) {
        guard let lease = try await store.claimNext(targets: [.node("bench-node")], owner: "bench", lease: .seconds(60))?.lease else {
            throw StoreError.backend("the queue ran dry")
        }
        try await store.complete(lease)
    }))

print("| Operation | median | p90 | CPU time, median |")
print("|---|---|---|---|")
for (name, samples) in rows {
    print(
        String(
            format: "| %@ | %.0f µs | %.0f µs | %.0f µs |", name, percentile(samples.wall, 0.5) * 1e6, percentile(samples.wall, 0.9) * 1e6,
            percentile(samples.cpu, 0.5) * 1e6))
}
