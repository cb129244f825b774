import Foundation
import Logging
import SFAgent
import SFBlobs
import SFControl
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One image-path scenario's world: a unique test name, a directory under the test run directory,
/// a store, and a loopback HTTP server serving the images. Everything is removed however the
/// scenario ends (``withImageLab(_:_:)``), and the cleanup script then finds nothing of it.
final class ImageLab: Sendable {
    let id: String
    let nodeName: String
    /// `<run directory>/<id>-img`: storage paths, images to serve, agent logs.
    let directory: String
    let store: SQLStore
    let server: LoopbackHTTPServer
    let teardown = Teardown()
    let logger: Logger

    init() throws {
        id = TestNames.unique("")
        nodeName = id + "-node"
        directory = TestGuest.runDirectory + "/\(id)-img"
        let logger = Logger.testWarnings("sfnode.test.images")
        self.logger = logger
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        store = try SQLStore(path: directory + "/store.sqlite", fqdn: nodeName, logger: logger)
        server = try LoopbackHTTPServer()
        let (directory, server) = (directory, server)
        // Registered first, so they run last: after every instance, domain and mount is gone.
        teardown.add("lab directory") { try? FileManager.default.removeItem(atPath: directory) }
        teardown.add("http server") { server.stop() }
    }

    /// The default storage path of this lab's agents and resolvers.
    var storage: String { directory + "/storage" }

    /// An image resolver on `storage` (default ``storage``) fetching from this lab's server only.
    func resolver(storage: String? = nil, cacheHighWaterBytes: Int64 = 1 << 40, recheckInterval: Duration = .seconds(60)) -> ImageResolver {
        makeTestImageResolver(
            store: store, storage: storage ?? self.storage, nodeName: nodeName, imageDownloadURL: server.baseURL,
            cacheHighWaterBytes: cacheHighWaterBytes, recheckInterval: recheckInterval, logger: logger)
    }

    // MARK: An agent in a test namespace

    /// A node agent with the image resolver `images`, its host namespace a fresh test namespace,
    /// and a job runner for its jobs. Every instance it is asked about is deleted in teardown.
    func agent(images: ImageResolver) async throws -> (NodeAgent, JobRunner) {
        let hostNamespace = id + "host"
        let libvirt = try LibvirtConnection(logger: logger)
        // Closed last: a connection left to its deinit may close while the process exits.
        teardown.add("libvirt connection") { await libvirt.close() }
        try teardown.createNamespaces([hostNamespace])
        let layout = HostLayout(testID: id, hostNamespace: hostNamespace)
        let agent = makeTestAgent(
            nodeName: nodeName, store: store, layout: layout, host: try NetlinkSession(namespace: hostNamespace, logger: logger),
            root: try NetlinkSession(namespace: nil, logger: logger), libvirt: libvirt, storage: storage, instances: storage,
            floatingRange: IPv4Prefix("192.0.2.0/24")!, images: images, logger: logger)
        let runner = JobRunner(store: store, targets: [.node(nodeName), .networkNode], owner: "test-\(id)", lease: .seconds(30), logger: logger)
        await agent.register(with: runner)
        let (store, storage) = (store, storage)
        teardown.add("instances and networks") {
            for instance in try await store.instances(node: nil) { try? await agent.instanceJobs.delete(instance.uuid) }
            for network in try await store.networks(namespace: nil) { try? await agent.networkJobs.delete(network.uuid) }
            for pid in dnsmasqProcesses(mentioning: storage) { kill(pid, SIGTERM) }
        }
        return (agent, runner)
    }

    /// An instance of the test guest's shape whose only disk has `base`, with an interface on
    /// `network` when given.
    func instance(_ name: String, base: String, network: Network? = nil) async throws -> Instance {
        let instance = Instance(name: name, namespace: "system", cpus: 1, memory: 256, diskSpec: [DiskSpec(base: base)])
        try await store.createInstance(instance)
        if let network {
            _ = try await store.createInterface(
                uuid: UUID(), instanceUUID: instance.uuid, networkUUID: network.uuid, order: 0, model: "virtio", address: .any,
                macaddr: nil)
        }
        return instance
    }

    /// Queues instance.create for `instance` and runs the runner until the queue is empty; returns
    /// the job and the instance as they ended.
    func runCreate(_ instance: Instance, with runner: JobRunner) async throws -> (Job, Instance) {
        let job = try await store.enqueue(
            kind: "instance.create", payload: .object(["instance_uuid": .string(instance.uuid.uuidString)]), target: .node(nodeName),
            objectKey: "instance:\(instance.uuid)")
        while try await runner.runOne() {}
        return (try await store.job(id: job.id), try await store.instance(uuid: instance.uuid))
    }

    /// The messages of the instance's events, oldest first.
    func events(of uuid: UUID) async throws -> [String] {
        try await store.events(objectType: "instance", objectUUID: uuid.uuidString.lowercased()).reversed().map(\.message)
    }

    // MARK: Images to serve

    /// A raw image of `megabytes` MiB at `<directory>/<name>`: a zero first sector (so no header
    /// is ever guessed from it), then bytes that do not compress.
    func rawImage(_ name: String, megabytes: Int) throws -> String {
        var data = Data(count: megabytes << 20)
        data.withUnsafeMutableBytes { bytes in
            var generator = SystemRandomNumberGenerator()
            let words = bytes.bindMemory(to: UInt64.self)
            for index in 64..<words.count { words[index] = generator.next() }
        }
        let path = directory + "/" + name
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    /// `file` gzipped to `<file>.gz`.
    func gzip(_ file: String) throws -> String {
        try run(["/bin/gzip", "-k", "-f", file])
        return file + ".gz"
    }

    /// A qcow2 whose backing file is /etc/shadow: what a hostile user would upload to read the host.
    func shadowImage() throws -> String {
        let path = directory + "/shadow.qcow2"
        // -u: qemu-img must not open (and so need) the backing file to make this.
        try run(["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", path, "1M"])
        return path
    }

    /// Runs a command that must succeed; returns its standard output.
    @discardableResult func run(_ argv: [String]) throws -> String {
        let result = try ChildProcess.run(argv)
        guard result.status == 0 else {
            throw ImageLabError("\(argv.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    /// The lower-case hex sha512 of a file.
    func sha512(of path: String) throws -> String {
        String(try run(["/usr/bin/sha512sum", path]).prefix(128))
    }

    /// `qemu-img info --force-share` of an image (it may be in use by a running guest).
    func qemuInfo(_ path: String) throws -> [String: JSONValue] {
        guard case .object(let fields) = try JSONValue.parse(try run(["/usr/bin/qemu-img", "info", "-U", "--output=json", path])) else {
            throw ImageLabError("qemu-img info \(path) did not answer a JSON object")
        }
        return fields
    }

    /// The names in `directory` (none when it does not exist).
    func files(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    /// The cache's files that hold image data: everything but the per-blob lock files, which are
    /// empty and only serialise preparations between processes.
    func cachedImages(_ resolver: ImageResolver) -> [String] {
        files(in: resolver.cache.directory).filter { !$0.hasSuffix(".lock") }
    }
}

/// Runs `body` in a fresh ``ImageLab`` and tears the lab down however it ends; then checks with
/// `scripts/cleanup-test-leftovers --check` that nothing named for the lab is left on the machine.
func withImageLab(_ body: (ImageLab) async throws -> Void) async throws {
    let lab = try ImageLab()
    do {
        try await body(lab)
    } catch {
        try await lab.teardown.run()
        throw error
    }
    try await lab.teardown.run()
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/cleanup-test-leftovers").path
    let check = try ChildProcess.run(["/bin/bash", script, "--check", "--prefix", lab.id])
    #expect(check.status == 0, "leftovers: \(check.stdout)\(check.stderr)")
    if check.status != 0 { _ = try ChildProcess.run(["/bin/bash", script, "--prefix", lab.id]) }
}

/// Seconds since `start`, for the timings the tests print.
func seconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

/// `sfnode agent` runs for one lab, configured as the crash tests configure it, plus fetches from
/// loopback only; each run is killed in teardown and logs to its own file.
final class AgentRuns {
    let lab: ImageLab
    let executable: String
    let environment: [String: String]
    private var runs = 0

    init(lab: ImageLab, executable: String, hostNamespace: String) {
        self.lab = lab
        self.executable = executable
        // A killed agent's job is taken again 2 s later.
        environment = AgentProcess.environment(
            directory: lab.directory, storage: lab.storage, hostNamespace: hostNamespace, nodeName: lab.nodeName, prefix: lab.id,
            floatingRange: "192.0.2.0/24", leaseSeconds: 2
        ).merging(["SFNODE_FETCH_ALLOW": "127.0.0.0/8", "SFNODE_IMAGE_DOWNLOAD_URL": lab.server.baseURL]) { _, added in added }
    }

    /// Starts the next run of the agent.
    func start() throws -> AgentProcess {
        runs += 1
        let agent = try AgentProcess.start(executable: executable, environment: environment, log: lab.directory + "/agent-\(runs).log")
        lab.teardown.add("agent run \(runs)") { await agent.kill() }
        return agent
    }
}

/// A lab helper's command failed; the message says which and what it printed.
struct ImageLabError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
