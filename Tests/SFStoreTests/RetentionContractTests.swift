import Foundation
import SFStore
import SFSystem
import Testing

/// A day, in seconds, for moving a prune's "now" into the future: the store stamps rows with the
/// real time, so "old" is tested by pruning as of a later moment rather than by waiting.
private let day: TimeInterval = 86_400

/// Seven days for deleted objects and finished jobs, thirty for events: the defaults.
private let policy = RetentionPolicy()

/// An event of `objectType`/`uuid`, `age` before now.
private func event(_ objectType: String, _ uuid: String, age: TimeInterval, _ message: String = "m") -> Event {
    Event(objectType: objectType, objectUUID: uuid, type: .audit, timestamp: Date(timeIntervalSinceNow: -age), fqdn: "sf-1", message: message)
}

private func makeNetwork(_ store: any NodeStore) async throws -> Network {
    try await store.createNetwork(
        uuid: UUID(), name: "net", namespace: "system", netblock: try IPv4Prefix.parse("10.0.0.0/24"), provideDHCP: false, provideNAT: false)
}

/// An instance with one interface on `network`.
private func makeInstance(_ store: any NodeStore, on network: Network) async throws -> (Instance, Interface) {
    let instance = Instance(name: "vm", namespace: "system", cpus: 1, memory: 512, diskSpec: [])
    let interfaces = try await store.createInstance(
        instance, interfaces: [NewInterface(networkUUID: network.uuid, model: "virtio", address: .any)], jobs: [])
    return (instance, try #require(interfaces.first))
}

/// Deletes the instance as the agent does: its interfaces first (releasing their addresses).
private func delete(_ store: any NodeStore, _ instance: Instance, _ interface: Interface) async throws {
    try await store.setInterfaceState(uuid: interface.uuid, to: .deleted)
    try await store.setInstanceState(uuid: instance.uuid, to: .deleted)
}

private func exists(_ read: () async throws -> Void) async -> Bool {
    await storeError { try await read() } == nil
}

@Suite("Store contract: retention")
struct RetentionContractTests {
    @Test("events older than the retention go, for live objects too; recent ones stay", arguments: Backend.all)
    func oldEvents(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            for (age, name) in [(40 * day, "old"), (31 * day, "older than 30 days"), (29 * day, "recent"), (60, "new")] {
                try await store.record(event("instance", "live", age: age, name))
                try await store.record(event("node", "sf-1", age: age, name))
            }
            let report = try await store.prune(policy, now: Date())
            #expect(report.events == 4)
            for object in [("instance", "live"), ("node", "sf-1")] {
                #expect(try await store.events(objectType: object.0, objectUUID: object.1).map(\.message) == ["new", "recent"])
            }
            #expect(try await store.prune(policy, now: Date()).isEmpty)
        }
    }

    @Test("an object's events beyond the cap go, oldest first, in bounded batches", arguments: Backend.all)
    func eventCap(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            for index in 0..<150 { try await store.record(event("instance", "busy", age: Double(150 - index), "e\(index)")) }
            for index in 0..<10 { try await store.record(event("instance", "quiet", age: 1, "q\(index)")) }
            let capped = RetentionPolicy(eventsPerObject: 100, batchRows: 20)
            let report = try await store.prune(capped, now: Date())
            #expect(report.events == 50)
            #expect(report.largestTransaction <= 20 && report.transactions >= 3)
            let kept = try await store.events(objectType: "instance", objectUUID: "busy", limit: 1000)
            #expect(kept.count == 100 && kept.first?.message == "e149" && kept.last?.message == "e50")
            #expect(try await store.events(objectType: "instance", objectUUID: "quiet").count == 10)
            #expect(try await store.prune(capped, now: Date()).isEmpty)
        }
    }

    @Test("finished jobs go after their retention; queued and running jobs never do", arguments: Backend.all)
    func finishedJobs(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let target = JobTarget.node("sf-1")
            var jobs: [Job] = []
            for index in 0..<4 {
                jobs.append(try await store.enqueue(kind: "k", payload: nil, target: target, objectKey: "o\(index)", maxAttempts: 1))
            }
            var leases: [JobLease] = []
            for _ in 0..<3 { leases.append(try #require(try await store.claimNext(targets: [target], owner: "w", lease: .seconds(60))?.lease)) }
            #expect(leases.map(\.jobID) == jobs[0..<3].map(\.id))
            try await store.complete(leases[0])
            try await store.fail(leases[1], error: "broken", retryable: false)
            // jobs[2] is running, jobs[3] queued.
            #expect(try await store.prune(policy, now: Date()).jobs == 0)
            let later = try await store.prune(policy, now: Date(timeIntervalSinceNow: 8 * day))
            #expect(later.jobs == 2)
            #expect(await storeError { _ = try await store.job(id: jobs[0].id) } == .notFound(type: "job", id: String(jobs[0].id)))
            #expect(await storeError { _ = try await store.job(id: jobs[1].id) } == .notFound(type: "job", id: String(jobs[1].id)))
            #expect(try await store.job(id: jobs[2].id).state == .running)
            #expect(try await store.job(id: jobs[3].id).state == .queued)
            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 8 * day)).jobs == 0)
        }
    }

    @Test("a deleted instance stays readable for the period, then goes with its interfaces, events and metadata", arguments: Backend.all)
    func deletedInstances(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let network = try await makeNetwork(store)
            let (gone, goneInterface) = try await makeInstance(store, on: network)
            let (live, liveInterface) = try await makeInstance(store, on: network)
            try await store.setMetadata(objectType: "instance", objectUUID: gone.uuid.lowercasedString, key: "tags", value: ["a"])
            try await delete(store, gone, goneInterface)

            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 6 * day)).instances == 0)
            #expect(try await store.instance(uuid: gone.uuid).state == .deleted)

            let report = try await store.prune(policy, now: Date(timeIntervalSinceNow: 8 * day))
            #expect(report.instances == 1 && report.interfaces == 1 && report.networks == 0)
            #expect(await storeError { _ = try await store.instance(uuid: gone.uuid) } == .notFound(type: "instance", id: gone.uuid.lowercasedString))
            #expect(!(await exists { _ = try await store.interface(uuid: goneInterface.uuid) }))
            #expect(try await store.events(objectType: "instance", objectUUID: gone.uuid.lowercasedString).isEmpty)
            #expect(try await store.events(objectType: "interface", objectUUID: goneInterface.uuid.lowercasedString).isEmpty)
            #expect(try await store.metadata(objectType: "instance", objectUUID: gone.uuid.lowercasedString).isEmpty)
            // The live instance, its interface, its address and the network are untouched.
            #expect(try await store.instance(uuid: live.uuid).state == .initial)
            #expect(try await store.interface(uuid: liveInterface.uuid).state == .initial)
            #expect(try await store.allocatedIPv4(networkUUID: network.uuid).values.contains("interface:\(liveInterface.uuid.lowercasedString)"))
            #expect(try await store.network(uuid: network.uuid).state == .initial)
            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 8 * day)).isEmpty)
        }
    }

    @Test("a deleted instance that a job, a blob reference or a live interface still needs is kept", arguments: Backend.all)
    func neededInstances(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try #require(store as? any BlobRecords)
            let network = try await makeNetwork(store)
            let (withJob, jobInterface) = try await makeInstance(store, on: network)
            let (withDisk, diskInterface) = try await makeInstance(store, on: network)
            let (withLiveInterface, liveInterface) = try await makeInstance(store, on: network)
            try await delete(store, withJob, jobInterface)
            try await delete(store, withDisk, diskInterface)
            try await store.setInstanceState(uuid: withLiveInterface.uuid, to: .deleted)
            let job = try await store.enqueue(
                kind: "instance.delete", payload: nil, target: .node("sf-1"), objectKey: "instance:\(withJob.uuid.lowercasedString)")
            let blob = Blob()
            try await records.createBlob(blob)
            let disk = BlobReference(blobUUID: blob.uuid, holderType: "instance", holderUUID: withDisk.uuid, relationship: .disk)
            try await records.addReference(disk)

            let later = Date(timeIntervalSinceNow: 8 * day)
            #expect(try await store.prune(policy, now: later).instances == 0)
            for instance in [withJob, withDisk, withLiveInterface] {
                #expect(try await store.instance(uuid: instance.uuid).state == .deleted)
            }
            // Once nothing needs them any more, the next prune takes them.
            let claimed = try #require(try await store.claimNext(targets: [.node("sf-1")], owner: "w", lease: .seconds(60)))
            #expect(claimed.id == job.id)
            try await store.complete(try #require(claimed.lease))
            try await records.removeReference(disk)
            try await store.setInterfaceState(uuid: liveInterface.uuid, to: .deleted)
            let report = try await store.prune(policy, now: later)
            #expect(report.instances == 3 && report.interfaces == 3)
            #expect(try await store.instances(node: nil).isEmpty)
        }
    }

    @Test("a deleted network goes once no interface names it; a live one never", arguments: Backend.all)
    func deletedNetworks(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let live = try await makeNetwork(store)
            let unused = try await makeNetwork(store)
            let named = try await makeNetwork(store)
            let (instance, interface) = try await makeInstance(store, on: named)
            // A live instance's deleted interface still names the network: it stays with it.
            try await store.setInterfaceState(uuid: interface.uuid, to: .deleted)
            try await store.setNetworkState(uuid: unused.uuid, to: .deleted)
            try await store.setNetworkState(uuid: named.uuid, to: .deleted)

            #expect(try await store.prune(policy, now: Date()).networks == 0)
            let later = Date(timeIntervalSinceNow: 8 * day)
            let report = try await store.prune(policy, now: later)
            #expect(report.networks == 1 && report.interfaces == 0)
            #expect(!(await exists { _ = try await store.network(uuid: unused.uuid) }))
            #expect(try await store.network(uuid: named.uuid).state == .deleted)
            #expect(try await store.network(uuid: live.uuid).state == .initial)
            #expect(try await store.interface(uuid: interface.uuid).state == .deleted)

            // With its instance gone, the interface and then the network go in one prune.
            try await store.setInstanceState(uuid: instance.uuid, to: .deleted)
            let after = try await store.prune(policy, now: later)
            #expect(after.instances == 1 && after.interfaces == 1 && after.networks == 1)
            #expect(try await store.networks(namespace: nil).map(\.uuid) == [live.uuid])
        }
    }

    @Test("deleted artifacts and blobs go a retention after a prune first sees them deleted, blobs once their data is gone", arguments: Backend.all)
    func deletedArtifactsAndBlobs(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let records = try #require(store as? any BlobRecords)
            let blob = UUID()
            try await records.createBlob(Blob(uuid: blob))
            try await records.completeBlob(uuid: blob, size: 1, sha512: String(repeating: "ab", count: 64), info: [:], node: "sf-1")
            let artifact = Artifact(type: .image, name: "img", sourceURL: nil, namespace: "system")
            try await records.createArtifact(artifact)
            try await records.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blob, lastModified: nil, contentLength: nil)
            let kept = Artifact(type: .image, name: "kept", sourceURL: nil, namespace: "system")
            try await records.createArtifact(kept)
            try await records.deleteArtifact(uuid: artifact.uuid)
            #expect(try await records.blob(uuid: blob).state == .deleted)

            // Seen deleted now; readable until a retention later.
            #expect(try await store.prune(policy, now: Date()).artifacts == 0)
            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 6 * day)).artifacts == 0)
            let report = try await store.prune(policy, now: Date(timeIntervalSinceNow: 8 * day))
            #expect(report.artifacts == 1 && report.blobs == 0)
            #expect(!(await exists { _ = try await records.artifact(uuid: artifact.uuid) }))
            #expect(try await records.artifact(uuid: kept.uuid).state == .initial)
            // The blob's data is still on sf-1: its row stays until the sweep removes the location.
            #expect(try await records.blob(uuid: blob).state == .deleted)
            try await records.removeBlobLocation(uuid: blob, node: "sf-1")
            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 8 * day)).blobs == 1)
            #expect(!(await exists { _ = try await records.blob(uuid: blob) }))

            // An artifact first seen deleted by a late prune waits a full retention from then.
            try await records.deleteArtifact(uuid: kept.uuid)
            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 8 * day)).artifacts == 0)
            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 16 * day)).artifacts == 1)
            #expect(try await store.prune(policy, now: Date(timeIntervalSinceNow: 16 * day)).isEmpty)
        }
    }

    @Test("large prunes go in transactions of at most the batch, an object split across them", arguments: Backend.all)
    func batches(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            for index in 0..<250 { try await store.record(event("node", "sf-1", age: 31 * day, "old \(index)")) }
            let network = try await makeNetwork(store)
            let (instance, interface) = try await makeInstance(store, on: network)
            for index in 0..<25 {
                try await store.record(event("instance", instance.uuid.lowercasedString, age: 60, "e\(index)"))
                try await store.setMetadata(objectType: "instance", objectUUID: instance.uuid.lowercasedString, key: "k\(index)", value: 1)
            }
            try await delete(store, instance, interface)

            let small = RetentionPolicy(batchRows: 10)
            let report = try await store.prune(small, now: Date(timeIntervalSinceNow: 8 * day))
            #expect(report.largestTransaction <= 10)
            #expect(report.transactions >= 25 + 5)
            #expect(report.instances == 1 && report.interfaces == 1 && report.events >= 275)
            #expect(try await store.events(objectType: "node", objectUUID: "sf-1").isEmpty)
            #expect(!(await exists { _ = try await store.instance(uuid: instance.uuid) }))
            #expect(try await store.metadata(objectType: "instance", objectUUID: instance.uuid.lowercasedString).isEmpty)
        }
    }

    @Test("a policy that cannot work is refused, naming the value", arguments: Backend.all)
    func badPolicy(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let negative = await storeError { try await store.prune(RetentionPolicy(eventAge: .seconds(-1)), now: Date()) }
            #expect(negative?.description.contains("event age") == true)
            let tiny = await storeError { try await store.prune(RetentionPolicy(batchRows: 2), now: Date()) }
            #expect(tiny == .invalidArgument("retention batch of 2 rows is below 10"))
            let noEvents = await storeError { try await store.prune(RetentionPolicy(eventsPerObject: 0), now: Date()) }
            #expect(noEvents?.description.contains("events per object 0") == true)
        }
    }
}
