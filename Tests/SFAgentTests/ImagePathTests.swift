import Foundation
import SFAgent
import SFBlobs
import SFControl
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// The image path through the real agent: a disk's base URL fetched from a loopback server into a
/// blob, inspected, converted into the image cache, and the instance's disk made an overlay on it;
/// and every way that path must fail (404, wrong checksum, dropped connection, full disk, hostile
/// image, forbidden destination, agent killed mid-download) failing cleanly.
///
/// Guests run under TCG on two cores, so only two boot in this whole suite: the instance of
/// `twoInstancesShareOneDownloadAndEvictionSparesTheBaseInUse` and the one the restarted agent
/// finishes in `agentKilledMidDownloadLeavesNoBlobAndTheRestartFinishes`. Everything else fails
/// before libvirt is reached, or works at the resolver.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd and the test guest image"))
struct ImagePathTests {
    /// The test guest, which the loopback server serves as the image at a URL.
    static func guestImage() throws -> String {
        try #require(FileManager.default.fileExists(atPath: TestGuest.baseImage), "no \(TestGuest.baseImage): run scripts/build-test-image")
        return TestGuest.baseImage
    }

    // (a) and (i): one GET for two instances; the cache never evicts a base in use.
    @Test func twoInstancesShareOneDownloadAndEvictionSparesTheBaseInUse() async throws {
        let image = try Self.guestImage()
        try await withImageLab { lab in
            // High-water mark 0: every release evicts whatever no live instance uses.
            let resolver = lab.resolver(cacheHighWaterBytes: 0)
            let (agent, _) = try await lab.agent(images: resolver)
            lab.server.register("/guest.qcow2", file: image)
            let url = lab.server.url("/guest.qcow2")
            let network = try await lab.store.createNetwork(
                uuid: UUID(), name: "net", namespace: "system", netblock: IPv4Prefix("10.97.0.0/24")!, provideDHCP: true, provideNAT: false)
            try await agent.networkJobs.create(network.uuid)

            let a = try await lab.instance("a", base: url, network: network)
            let started = ContinuousClock.now
            try await agent.instanceJobs.create(a.uuid)
            let createdAfter = seconds(since: started)
            let console = try await TestGuest.waitForSerial(
                path: agent.realInstances.consoleLog(of: a.uuid), containing: TestGuest.readyMarker, timeout: .seconds(240))
            print("image path: instance a created in \(createdAfter) s (fetch, convert, define, start), ready in \(seconds(since: started)) s")
            #expect(TestGuest.guestIPs(fromSerial: console)["eth0"] != nil, "the guest got no address: \(console.suffix(1000))")
            #expect(try await lab.store.instance(uuid: a.uuid).state == .created)
            #expect(try await lab.events(of: a.uuid).contains("fetching image \(url), 100 %"))

            // B from the same URL, within the recheck interval: no second GET (nor HEAD). B's guest is
            // not needed (its disk is the point): powered off at once, so only A boots under TCG.
            let b = try await lab.instance("b", base: url, network: network)
            try await agent.instanceJobs.create(b.uuid)
            try await agent.instanceJobs.power(.poweroff, b.uuid)
            #expect(lab.server.requestCount("/guest.qcow2", method: "GET") == 1)
            let blob = try #require(try await lab.store.references(holderType: "instance", holderUUID: a.uuid.uuidString).first?.blobUUID)
            let base = resolver.cache.path(for: blob, purpose: .disk)
            func disk(_ instance: Instance) -> String { agent.realInstances.directory(of: instance.uuid) + "/disk0.qcow2" }
            #expect(try lab.qemuInfo(disk(a))["backing-filename"] == .string(base))
            #expect(try lab.qemuInfo(disk(b))["backing-filename"] == .string(base))

            // (i) B goes while A runs: the cache is above its mark, yet A's base stays and A's disk
            // still opens (qemu-img info opens the backing file too).
            try await agent.instanceJobs.delete(b.uuid)
            #expect(FileManager.default.fileExists(atPath: base))
            #expect(try lab.qemuInfo(disk(a))["backing-filename"] == .string(base))
            #expect(try await agent.realInstances.libvirt.state(of: .uuid(a.uuid)) == .on)
            // A goes too: nothing uses the base any more, so it is evicted.
            try await agent.instanceJobs.delete(a.uuid)
            #expect(lab.cachedImages(resolver).isEmpty, "left in the cache: \(lab.cachedImages(resolver))")

            // Nothing is left of either instance: domain, tap, disks, references. The blob stays, held
            // by the URL's artifact alone: it is the node's copy of that URL, not theirs.
            for instance in [a, b] {
                #expect(try await agent.realInstances.libvirt.lookup(uuid: instance.uuid) == nil)
                #expect(!FileManager.default.fileExists(atPath: agent.realInstances.directory(of: instance.uuid)))
                #expect(try await lab.store.references(holderType: "instance", holderUUID: instance.uuid.uuidString).isEmpty)
            }
            #expect(try await agent.realInstances.host.links().filter { $0.name.hasPrefix(lab.id) }.isEmpty)
            #expect(try await agent.realInstances.root.links().filter { $0.name.hasPrefix(lab.id) }.isEmpty)
            #expect(try await lab.store.references(to: blob).map(\.holderType) == ["artifact"])
        }
    }

    // (b) Two resolutions of one new URL at once: one GET, one conversion, one base.
    @Test func concurrentResolutionsOfANewURLFetchAndConvertOnce() async throws {
        try await withImageLab { lab in
            let resolver = lab.resolver()
            // gzip of a raw image, so the cache must unpack and convert it; trickled out over about
            // a second so that the second caller surely arrives while the first is downloading.
            let packed = try lab.gzip(try lab.rawImage("disk.raw", megabytes: 8))
            let size = try #require(FileManager.default.attributesOfItem(atPath: packed)[.size] as? Int)
            lab.server.register("/disk.raw.gz", file: packed, behaviour: .throttled(bytesPerSecond: max(1, size)))
            let url = lab.server.url("/disk.raw.gz")

            async let first = resolver.base(url, cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            async let second = resolver.base(url, cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            let (one, two) = try await (first, second)
            #expect(one == two)
            #expect(lab.server.requestCount("/disk.raw.gz", method: "GET") == 1)
            // No HEAD: the second caller joined the download in flight, rather than finding it done.
            #expect(lab.server.requestCount("/disk.raw.gz", method: "HEAD") == 0)
            #expect(await resolver.cache.conversions == 1)
            #expect(try lab.qemuInfo(one.path)["cluster-size"] == .number(2_097_152))
        }
    }

    // (j) The server is asked again once the recheck interval has passed: an unchanged image costs
    // a HEAD, a changed one (another Content-Length) is fetched again as a new version.
    @Test func anImageIsFetchedAgainOnlyWhenItChanged() async throws {
        try await withImageLab { lab in
            let url = lab.server.url("/disk.raw")
            lab.server.register("/disk.raw", file: try lab.rawImage("disk.raw", megabytes: 2))
            let burst = lab.resolver()
            let first = try await burst.base(url, cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            _ = try await burst.base(url, cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            #expect(lab.server.requestCount("/disk.raw", method: "GET") == 1)
            #expect(lab.server.requestCount("/disk.raw", method: "HEAD") == 0, "within the interval the server is not asked")
            let eager = lab.resolver(recheckInterval: .zero)
            let unchanged = try await eager.base(url, cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            #expect(unchanged.blobUUID == first.blobUUID)
            #expect(lab.server.requestCount("/disk.raw", method: "HEAD") == 1)
            #expect(lab.server.requestCount("/disk.raw", method: "GET") == 1)
            lab.server.register("/disk.raw", file: try lab.rawImage("disk2.raw", megabytes: 3))
            let changed = try await eager.base(url, cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            #expect(lab.server.requestCount("/disk.raw", method: "GET") == 2)
            #expect(changed.blobUUID != first.blobUUID)
        }
    }

    // What a crash leaves behind (a stale partial, a file no record names) is swept; blobs stay.
    @Test func sweepingRemovesOnlyWhatNoRecordStandsFor() async throws {
        try await withImageLab { lab in
            let resolver = lab.resolver()
            lab.server.register("/disk.raw", file: try lab.rawImage("disk.raw", megabytes: 1))
            let base = try await resolver.base(lab.server.url("/disk.raw"), cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            let directory = resolver.blobs.directory
            let stale = directory + "/\(UUID().lowercasedString).partial"
            let unknown = directory + "/\(UUID().lowercasedString)"
            let fresh = directory + "/\(UUID().lowercasedString).partial"
            for path in [stale, unknown, fresh] { try Data("x".utf8).write(to: URL(fileURLWithPath: path)) }
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -3600)], ofItemAtPath: stale)
            #expect(Set(try await resolver.sweep()) == [stale, unknown])
            #expect(FileManager.default.fileExists(atPath: fresh), "a partial still being written is kept")
            #expect(resolver.blobs.hasData(try #require(base.blobUUID)))
            try? FileManager.default.removeItem(atPath: fresh)
        }
    }

    // (c) A connection dropped mid-body is retried, and the blob is the server's bytes exactly.
    @Test func aDroppedConnectionIsRetriedAndTheImageArrivesIntact() async throws {
        try await withImageLab { lab in
            let resolver = lab.resolver()
            let image = try lab.rawImage("disk.raw", megabytes: 4)
            lab.server.register("/disk.raw", file: image, behaviour: .dropAfter(bytes: 1 << 20, times: 1))
            let base = try await resolver.base(
                lab.server.url("/disk.raw"), cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            #expect(lab.server.requestCount("/disk.raw", method: "GET") == 2)
            let blob = try await lab.store.blob(uuid: try #require(base.blobUUID))
            #expect(blob.state == .created)
            #expect(blob.size == 4 << 20)
            #expect(blob.sha512 == (try lab.sha512(of: image)))
            #expect(try lab.sha512(of: resolver.blobs.path(of: blob.uuid)) == (try lab.sha512(of: image)))
            #expect(lab.files(in: resolver.blobs.directory) == [blob.uuid.uuidString.lowercased()], "a partial was left behind")
        }
    }

    // (d) A 404 fails the instance, by name, without retries; a wrong sha512 fails with its own words.
    @Test func a404AndAWrongChecksumFailEachWithTheirOwnMessage() async throws {
        try await withImageLab { lab in
            let resolver = lab.resolver()
            let (_, runner) = try await lab.agent(images: resolver)
            let missing = lab.server.url("/missing.qcow2")
            let (job, instance) = try await lab.runCreate(try await lab.instance("gone", base: missing), with: runner)
            #expect(job.state == .failed && job.attempts == 1, "a 404 must not be retried: \(job)")
            #expect(instance.state == .creatingError)
            let message = try #require(instance.errorMessage)
            #expect(message.contains(missing) && message.contains("404 Not Found"), "\(message)")
            #expect(lab.server.requestCount("/missing.qcow2", method: "GET") == 1)

            // A disk's base has no field for a checksum, so the agent never asks for one: this part
            // drives the fetcher into the resolver's blob store with one, as the resolver fetches.
            let image = try lab.rawImage("disk.raw", megabytes: 2)
            let expected = try lab.sha512(of: image)
            lab.server.register("/corrupt.raw", file: image, behaviour: .wrongBytes)
            let fetcher = HTTPFetcher(configuration: .init(rules: loopbackFetchRules), logger: lab.logger)
            let ingest = try resolver.blobs.beginIngest()
            let mismatch = await #expect(throws: FetchError.self) {
                _ = try await fetcher.fetch(
                    lab.server.url("/corrupt.raw"), expectedSHA512: expected, restart: {}, into: { try ingest.append($0) })
            }
            ingest.abandon()
            #expect(mismatch?.description.contains("sha512 mismatch: expected \(expected)") == true, "\(String(describing: mismatch))")
            #expect(lab.server.requestCount("/corrupt.raw", method: "GET") == 1, "a wrong checksum must not be retried")
            #expect(lab.files(in: resolver.blobs.directory).isEmpty)
            #expect(try await lab.store.blobs().isEmpty)
        }
    }

    // (e) A storage path too small for the image: insufficient-resources, and nothing half-written.
    @Test func aFullDiskFailsWithNoPartialAndNoBlobLeft() async throws {
        try await withImageLab { lab in
            let small = lab.directory + "/small"
            try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
            try lab.run(["/usr/bin/mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small])
            lab.teardown.add("tmpfs \(small)") { try lab.run(["/usr/bin/umount", small]) }
            lab.server.register("/big.raw", file: try lab.rawImage("big.raw", megabytes: 16))
            let url = lab.server.url("/big.raw")
            let resolver = lab.resolver(storage: small)

            let refused = await #expect(throws: BlobError.self) {
                _ = try await resolver.base(url, cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            }
            #expect(refused.map { ControlError(classifying: $0).code } == .insufficientResources)
            let (_, runner) = try await lab.agent(images: resolver)
            let (job, instance) = try await lab.runCreate(try await lab.instance("big", base: url), with: runner)
            #expect(job.state == .failed && job.attempts == 1, "\(job)")
            #expect(instance.state == .creatingError)
            #expect(instance.errorMessage?.contains("no space left on the device holding \(small)/blobs/") == true, "\(instance)")
            #expect(lab.files(in: small + "/blobs").isEmpty, "left on the full disk: \(lab.files(in: small + "/blobs"))")
            #expect(try await lab.store.blobs().filter { $0.state == .created }.isEmpty)
        }
    }

    // (f) A qcow2 backed by /etc/shadow is refused by URL and by upload; none of it is cached.
    @Test func anImageBackedByAHostFileIsRefusedByURLAndByUpload() async throws {
        try await withImageLab { lab in
            let resolver = lab.resolver()
            let hostile = try lab.shadowImage()
            lab.server.register("/shadow.qcow2", file: hostile)
            let fetched = await #expect(throws: ImageError.self) {
                _ = try await resolver.base(lab.server.url("/shadow.qcow2"), cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            }
            #expect(fetched?.description.contains("backing file '/etc/shadow'") == true, "\(String(describing: fetched))")
            #expect(try await lab.store.blobs().isEmpty, "a refused download became a blob")

            // Uploads are not inspected when they become blobs; the cache inspects before it uses one.
            let uploads = UploadSessions(blobs: resolver.blobs, records: lab.store, directory: lab.storage + "/uploads")
            let upload = try await uploads.create(namespace: "system")
            try await uploads.append(uuid: upload.uuid, bytes: try Data(contentsOf: URL(fileURLWithPath: hostile)))
            let blob = try await uploads.finish(uuid: upload.uuid)
            let used = await #expect(throws: ImageError.self) {
                _ = try await resolver.base(
                    "sf://blob/\(blob.uuid.uuidString.lowercased())", cdrom: false, instance: UUID(), namespace: Namespace.system, mode: .fetchIfStale) { _ in }
            }
            #expect(used?.description.contains("backing file '/etc/shadow'") == true, "\(String(describing: used))")
            #expect(lab.cachedImages(resolver).isEmpty, "in the image cache: \(lab.cachedImages(resolver))")
        }
    }

    // (g) The metadata service is refused by rule, before any connection, and the instance says so.
    @Test func theMetadataServiceIsRefusedByRule() async throws {
        let url = "http://169.254.169.254/latest/meta-data"
        let metadata = try #require(IPAddress("169.254.169.254"))
        // The default rules refuse it by address alone: no lookup, no connection.
        #expect(throws: FetchError.self) { try DestinationRules.default.check(metadata, host: "169.254.169.254", url: url) }
        // The tests' rules too; were they to let it through, the agent below would connect to it.
        try #require(throws: FetchError.self) { try loopbackFetchRules.check(metadata, host: "169.254.169.254", url: url) }
        try await withImageLab { lab in
            let (_, runner) = try await lab.agent(images: lab.resolver())
            let started = ContinuousClock.now
            let (job, instance) = try await lab.runCreate(try await lab.instance("meta", base: url), with: runner)
            #expect(seconds(since: started) < 10, "a refusal should not wait on a connection")
            #expect(job.state == .failed && job.attempts == 1, "\(job)")
            #expect(instance.state == .creatingError)
            let message = try #require(instance.errorMessage)
            #expect(message.contains("refusing to fetch \(url)") && message.contains("in 169.254.0.0/16 (link-local"), "\(message)")
            #expect(try await lab.store.blobs().isEmpty)
        }
    }

    // (h) The agent killed mid-download leaves no blob, only its partial file and a checkpoint;
    // started again, it resumes the download where it stopped (Range, If-Range) and finishes the instance.
    @Test func agentKilledMidDownloadLeavesNoBlobAndTheRestartResumesAndFinishes() async throws {
        let image = try Self.guestImage()
        let executable = try AgentProcess.executable()
        try await withImageLab { lab in
            let hostNamespace = lab.id + "host"
            try lab.teardown.createNamespaces([hostNamespace])
            let libvirt = try LibvirtConnection(logger: lab.logger)
            lab.teardown.add("libvirt connection") { await libvirt.close() }
            let size = try #require(FileManager.default.attributesOfItem(atPath: image)[.size] as? Int64)
            // Slow enough to be killed in the middle of: about 4 s for the 16 MiB guest.
            lab.server.register(
                "/slow.qcow2", body: .file(image), behaviour: .throttled(bytesPerSecond: 4 << 20), etag: "\"guest-v1\"", ranges: true)
            let instance = try await lab.instance("slow", base: lab.server.url("/slow.qcow2"))
            lab.teardown.add("domain") {
                try? await libvirt.destroy(.uuid(instance.uuid))
                try? await libvirt.undefine(.uuid(instance.uuid))
            }
            let agents = AgentRuns(lab: lab, executable: executable, hostNamespace: hostNamespace)
            let create = try await lab.store.enqueue(
                kind: "instance.create", payload: .object(["instance_uuid": .string(instance.uuid.uuidString)]),
                target: .node(lab.nodeName), objectKey: "instance:\(instance.uuid)")

            let killed = try agents.start()
            #expect(
                await eventually(timeout: .seconds(60)) { lab.server.bytesSent("/slow.qcow2") >= 1 << 20 },
                "the download never started: \(killed.logTail())")
            await killed.kill()
            let sentBeforeKill = lab.server.bytesSent("/slow.qcow2")
            #expect(sentBeforeKill < size, "the download finished before the kill")
            // What the kill left: no blob at all; a .partial that no record names, and its checkpoint.
            let blobs = lab.storage + "/blobs"
            let leftovers = lab.files(in: blobs)
            #expect(try await lab.store.blobs().isEmpty)
            #expect(leftovers.filter { $0.hasSuffix(".partial") }.count == 1, "\(leftovers)")
            #expect(leftovers.allSatisfy { $0.hasSuffix(".partial") || ($0.hasPrefix("fetch-") && $0.hasSuffix(".json")) }, "\(leftovers)")
            // The fetch made the storage path on its way to blobs/: blobs/ is private, but the storage
            // path must stay searchable, or qemu's user cannot reach the instance disks under it.
            let modes = try [lab.storage, blobs].map { try #require(FileManager.default.attributesOfItem(atPath: $0)[.posixPermissions] as? Int) }
            #expect(modes[0] & 0o001 != 0 && modes[1] == 0o700, "modes \(modes.map { String($0, radix: 8) })")

            print("image path: agent killed after \(sentBeforeKill) of \(size) bytes; left in blobs/: \(leftovers)")
            let restarted = try agents.start()
            let started = ContinuousClock.now
            try await restarted.waitForJobs([create.id], in: lab.store, timeout: .seconds(300))
            print("image path: the restarted agent finished instance.create in \(seconds(since: started)) s")
            #expect(try await lab.store.instance(uuid: instance.uuid).state == .created)
            #expect(try await libvirt.state(of: .uuid(instance.uuid)) == .on)
            #expect(lab.server.requestCount("/slow.qcow2", method: "GET") == 2)
            // Resumed: only the rest was asked for and sent, into the same partial file, and the blob is whole.
            let asked = lab.server.rangesAsked("/slow.qcow2")
            #expect(asked.count == 1 && (asked.first ?? 0) > 0 && (asked.first ?? 0) <= sentBeforeKill, "\(asked)")
            #expect(lab.server.bytesSent("/slow.qcow2") == sentBeforeKill + size - (asked.first ?? 0))
            let stored = try await lab.store.blobs()
            #expect(stored.count == 1 && stored.first?.state == .created)
            #expect(stored.first?.sha512 == (try lab.sha512(of: image)))
            #expect(stored.allSatisfy { leftovers.contains($0.uuid.uuidString.lowercased() + ".partial") })
            #expect(lab.files(in: blobs).allSatisfy { !$0.hasPrefix("fetch-") }, "the checkpoint goes once the blob is made")
            print("image path: the restart resumed at byte \(asked.first ?? 0) of \(size)")

            let delete = try await lab.store.enqueue(
                kind: "instance.delete", payload: .object(["instance_uuid": .string(instance.uuid.uuidString)]),
                target: .node(lab.nodeName), objectKey: "instance:\(instance.uuid)")
            try await restarted.waitForJobs([delete.id], in: lab.store, timeout: .seconds(120))
            #expect(await restarted.stop(timeout: .seconds(20)) == 0, "SIGTERM did not stop the agent: \(restarted.logTail())")
            #expect(try await libvirt.lookup(uuid: instance.uuid) == nil)
        }
    }
}
