import Foundation
import Logging
import SFBlobs
import SFStore
import SFSystem
import SFTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Two nodes of one cluster (one store, two blob directories), each in a host namespace of its own
/// on a test mesh: blob data goes from one to the other over the mesh, as it does between hypervisors.
struct PeerPair {
    let store: SQLStore
    let root: String
    let meshSwitch = TestNames.unique("psw")
    let hosts = [TestNames.unique("pha"), TestNames.unique("phb")]
    let addresses = [IPv4Address("10.251.0.1")!, IPv4Address("10.251.0.2")!]
    let blobs: [BlobStore]
    let teardown = Teardown()
    let logger = Logger(label: "test.peer", factory: { _ in SwiftLogNoOpLogHandler() })

    init() throws {
        store = try SQLStore.temporary()
        root = FileManager.default.temporaryDirectory.appendingPathComponent("sfpeer-\(UUID().uuidString.lowercased())").path
        let (store, root, logger) = (store, root, logger)
        blobs = ["sfa", "sfb"].map { BlobStore(records: store, directory: root + "/\($0)/blobs", nodeName: $0, logger: logger) }
        teardown.add("files") {
            store.removeFiles()
            try? FileManager.default.removeItem(atPath: root)
        }
        try teardown.createNamespaces([meshSwitch] + hosts)
    }

    /// The node that serves (`sfa`, in the first host namespace), as the other sees it.
    var server: Peer { Peer(name: "sfa", address: addresses[0]) }

    func join() async throws {
        try await ClusterMesh.join(switchNamespace: meshSwitch, hosts: zip(hosts, addresses).map { ($0, $1) }, logger: logger)
    }

    /// `sfa`'s peer server, under the cluster's credentials.
    func serve(maximumConnections: Int = 64) async throws -> PeerServer {
        let server = try await PeerServer.start(
            address: addresses[0], port: 0, namespace: hosts[0], credentials: try await PeerCredentials.load(records: store, nodeName: "sfa"),
            blobs: blobs[0], instanceFiles: InstanceFiles(storagePath: root + "/sfa"), maximumConnections: maximumConnections, logger: logger)
        teardown.add("peer server") { await server.stop() }
        return server
    }

    /// `sfb`'s client for `port`, signing with `credentials` (the cluster's by default).
    func client(port: Int, credentials: PeerCredentials? = nil, logger: Logger? = nil) async throws -> PeerClient {
        var signing = credentials
        if signing == nil { signing = try await PeerCredentials.load(records: store, nodeName: "sfb") }
        guard let signing else { throw BlobError.io("no credentials") }
        let client = try await PeerClient.make(
            namespace: hosts[1], credentials: signing, port: port,
            limits: PeerClient.Limits(timeout: .seconds(2), attempts: 8, firstRetryDelay: .milliseconds(200)),
            logger: logger ?? self.logger)
        return client
    }

    /// A blob of `count` bytes held by `sfa`.
    func blobOnServer(_ count: Int) async throws -> (Blob, [UInt8]) {
        // From the kernel: a generator loop over tens of MiB holds a cooperative thread for seconds
        // in a debug build, and the other suites running beside this one would wait for it.
        guard let random = FileHandle(forReadingAtPath: "/dev/urandom") else { throw BlobError.io("cannot open /dev/urandom") }
        defer { try? random.close() }
        let bytes = [UInt8](random.readData(ofLength: count))
        let ingest = try blobs[0].beginIngest()
        try ingest.append(bytes)
        return (try await ingest.finish(), bytes)
    }
}

func withPeerPair<T>(_ body: (PeerPair) async throws -> T) async throws -> T {
    let pair = try PeerPair()
    do {
        try await pair.join()
        let result = try await body(pair)
        try await pair.teardown.run()
        return result
    } catch {
        try? await pair.teardown.run()
        throw error
    }
}

@Suite("Blobs between nodes", .enabled(if: runningAsRoot), .serialized)
struct PeerTransferTests {
    @Test("a blob is copied over the mesh, resumes after the link drops mid-transfer, and is verified")
    func copiesAndResumes() async throws {
        try await withPeerPair { pair in
            let (blob, bytes) = try await pair.blobOnServer(48 << 20)
            let server = try await pair.serve()
            let log = RecordedMessages()
            let client = try await pair.client(port: server.port, logger: Logger(label: "test.peer") { _ in RecordingLogHandler(messages: log) })
            // Once a quarter has arrived, the mesh link goes down for three seconds: the transfer stalls,
            // times out, and must ask only for what it lacks once the link is back.
            let cut = Mutex(false)
            let received = Mutex<[Int64]>([])
            let (hosts, logger) = (pair.hosts, pair.logger)
            let linkDown = DispatchSemaphore(value: 0)
            let copied = try await client.pull(blob, from: [pair.server], into: pair.blobs[1]) { progress in
                received.withLock { $0.append(progress.bytes) }
                guard progress.bytes > Int64(bytes.count / 4), !cut.withLock({ let was = $0; $0 = true; return was }) else { return }
                Task {
                    try await ClusterMesh.setLink(of: hosts[1], up: false, logger: logger)
                    linkDown.signal()
                    try await Task.sleep(for: .seconds(3))
                    try await ClusterMesh.setLink(of: hosts[1], up: true, logger: logger)
                }
                // The transfer's own thread waits until the link is down, so the rest cannot arrive
                // before the cut on a machine slow to run the task.
                _ = linkDown.wait(timeout: .now() + 10)
            }
            #expect(copied.uuid == blob.uuid)
            #expect(copied.locations == ["sfa", "sfb"])
            #expect(try Data(contentsOf: URL(fileURLWithPath: pair.blobs[1].path(of: blob.uuid))) == Data(bytes))
            // The transfer failed and was tried again, and the count of bytes held never went back:
            // the second attempt asked for the rest only (a restart from byte 0 would count from 0).
            #expect(log.all.contains { $0.contains("trying again") }, "\(log.all)")
            let counts = received.withLock { $0 }
            #expect(zip(counts, counts.dropFirst()).allSatisfy { $0 <= $1 }, "the byte count went back: the transfer started over")
            #expect(!FileManager.default.fileExists(atPath: pair.blobs[1].path(of: blob.uuid) + ".partial"))
        }
    }

    @Test("a node outside the cluster, a forged or stale signature, and malformed requests are refused")
    func refusesStrangers() async throws {
        try await withPeerPair { pair in
            let (blob, _) = try await pair.blobOnServer(4096)
            let server = try await pair.serve()
            let stranger = try await pair.client(port: server.port, credentials: PeerCredentials(secret: Data("not the cluster's".utf8), nodeName: "sfb"))
            await #expect(throws: (any Error).self) { try await stranger.pull(blob, from: [pair.server], into: pair.blobs[1]) }
            #expect(!pair.blobs[1].hasData(blob.uuid))
            #expect(try await pair.store.blob(uuid: blob.uuid).locations == ["sfa"])

            let path = "/v1/blobs/\(blob.uuid.lowercasedString)"
            let member = try await PeerCredentials.load(records: pair.store, nodeName: "sfb")
            func ask(_ path: String, _ headers: [(String, String)], range: String? = nil, method: String = "GET") async throws -> String {
                let lines = headers.map { "\($0): \($1)\r\n" }.joined() + (range.map { "Range: \($0)\r\n" } ?? "")
                return try await NamespaceSockets.exchange(
                    from: pair.hosts[1], host: pair.addresses[0], port: UInt16(server.port), request: "\(method) \(path) HTTP/1.1\r\nHost: x\r\n\(lines)\r\n")
            }
            #expect(try await ask(path, []).hasPrefix("HTTP/1.1 403"))
            // Signed for another path, or expired an hour ago.
            #expect(try await ask(path, member.headers(method: "GET", path: "/v1/blobs/\(UUID().uuidString)")).hasPrefix("HTTP/1.1 403"))
            #expect(try await ask(path, member.headers(method: "GET", path: path, now: Date() - 3600)).hasPrefix("HTTP/1.1 403"))
            let stale = member.headers(method: "GET", path: path).map { $0.0 == PeerCredentials.expiresHeader ? ($0.0, "99999999999999999999") : $0 }
            #expect(try await ask(path, stale).hasPrefix("HTTP/1.1 403"))
            // A member gets the data, a range past its end is refused, and so is a console length past the bound.
            #expect(try await ask(path, member.headers(method: "GET", path: path)).hasPrefix("HTTP/1.1 200"))
            #expect(try await ask(path, member.headers(method: "GET", path: path), range: "bytes=4096-").hasPrefix("HTTP/1.1 416"))
            #expect(try await ask(path, member.headers(method: "GET", path: path), range: "bytes=4000-").contains("Content-Range: bytes 4000-4095/4096"))
            let console = "/v1/instances/\(UUID().uuidString.lowercased())/console?length=99999999999999999999999"
            #expect(try await ask(console, member.headers(method: "GET", path: console)).hasPrefix("HTTP/1.1 400"))
            // A signature is for one method: a GET's cannot clear a console. Blobs are never deleted
            // through a peer, signed or not.
            let consolePath = "/v1/instances/\(UUID().uuidString.lowercased())/console"
            #expect(try await ask(consolePath, member.headers(method: "GET", path: consolePath), method: "DELETE").hasPrefix("HTTP/1.1 403"))
            #expect(try await ask(path, member.headers(method: "DELETE", path: path), method: "DELETE").hasPrefix("HTTP/1.1 404"))
            #expect(pair.blobs[0].hasData(blob.uuid))
        }
    }

    @Test("data that does not match the blob's checksum never becomes this node's copy")
    func refusesCorruptData() async throws {
        try await withPeerPair { pair in
            let (blob, bytes) = try await pair.blobOnServer(1 << 20)
            // The serving node's disk returns other bytes than were stored.
            var corrupt = bytes
            corrupt[1000] ^= 0xff
            try Data(corrupt).write(to: URL(fileURLWithPath: pair.blobs[0].path(of: blob.uuid)))
            let server = try await pair.serve()
            let client = try await pair.client(port: server.port)
            await #expect(throws: BlobError.self) { try await client.pull(blob, from: [pair.server], into: pair.blobs[1]) }
            #expect(!pair.blobs[1].hasData(blob.uuid))
            #expect(try await pair.store.blob(uuid: blob.uuid).locations == ["sfa"])
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: pair.blobs[1].directory)) ?? []).isEmpty)
        }
    }

    @Test("a hostile or broken peer's answers are refused by name, never trap, and leave no copy")
    func refusesHostilePeers() async throws {
        let store = try SQLStore.temporary()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sfpeer-\(UUID().uuidString.lowercased())").path
        let logger = Logger(label: "test.peer", factory: { _ in SwiftLogNoOpLogHandler() })
        let server = try LoopbackHTTPServer()
        defer {
            server.stop()
            store.removeFiles()
            try? FileManager.default.removeItem(atPath: root)
        }
        let holding = BlobStore(records: store, directory: root + "/sfa/blobs", nodeName: "sfa", logger: logger)
        let receiving = BlobStore(records: store, directory: root + "/sfb/blobs", nodeName: "sfb", logger: logger)
        let bytes = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let ingest = try holding.beginIngest()
        try ingest.append([UInt8](bytes))
        let blob = try await ingest.finish()
        // The fake peer is a loopback server (the client's thread stays in this process's namespace).
        let client = try await PeerClient.make(
            namespace: nil, credentials: try await PeerCredentials.load(records: store, nodeName: "sfb"), port: Int(server.port),
            limits: PeerClient.Limits(timeout: .seconds(2), attempts: 2, firstRetryDelay: .milliseconds(20)), logger: logger)
        let peer = Peer(name: "hostile", address: IPv4Address("127.0.0.1")!)
        let cases: [(LoopbackHTTPServer.Behaviour, String)] = [
            (.claimsLength(.max), "Content-Length"),
            (.claimsLength(Int64(bytes.count) + 1), "Content-Length"),
            (.endless, "no Content-Length"),
            (.status(500), "500"),
            (.dropAfter(bytes: 1000, times: 100), "could send it"),
            (.wrongBytes, "sha512"),
        ]
        for (behaviour, named) in cases {
            server.register("/v1/blobs/\(blob.uuid.lowercasedString)", data: bytes, behaviour: behaviour)
            do {
                _ = try await client.pull(blob, from: [peer], into: receiving)
                Issue.record("\(behaviour): the copy was taken")
            } catch {
                #expect("\(error)".contains(named), "\(behaviour): \(error)")
            }
            #expect(!receiving.hasData(blob.uuid), "\(behaviour)")
            #expect(try await store.blob(uuid: blob.uuid).locations == ["sfa"], "\(behaviour)")
        }
    }

    @Test("a transfer whose process died resumes from its partial file")
    func resumesAfterACrash() async throws {
        try await withPeerPair { pair in
            let (blob, bytes) = try await pair.blobOnServer(8 << 20)
            // What a process killed half-way leaves: the partial file and the checkpoint naming it.
            let receiving = pair.blobs[1]
            try FileManager.default.createDirectory(atPath: receiving.directory, withIntermediateDirectories: true)
            try Data(bytes[..<(4 << 20)]).write(to: URL(fileURLWithPath: receiving.path(of: blob.uuid) + ".partial"))
            try receiving.recordCheckpoint(
                key: "peer-\(blob.uuid.lowercasedString)", url: "sfnode-peer:/v1/blobs/\(blob.uuid.lowercasedString)", blob: blob.uuid,
                validator: "\"sfblob-\(blob.uuid.lowercasedString)-\(blob.size)\"")
            let server = try await pair.serve()
            let client = try await pair.client(port: server.port)
            let first = Mutex<Int64?>(nil)
            _ = try await client.pull(blob, from: [pair.server], into: receiving) { progress in
                first.withLock { $0 = $0 ?? progress.bytes }
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: receiving.path(of: blob.uuid))) == Data(bytes))
            // The first bytes counted were past the half already held: only the rest was sent.
            #expect((first.withLock { $0 } ?? 0) > Int64(4 << 20))
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: receiving.directory)) ?? []) == [blob.uuid.lowercasedString])
        }
    }

    @Test("connections past the server's bound are closed at once")
    func boundsConnections() async throws {
        try await withPeerPair { pair in
            let server = try await pair.serve(maximumConnections: 2)
            let thread = try await NamespaceExecutor.start(namespace: pair.hosts[1])
            // Two idle connections hold the two places; a third is closed without an answer.
            let held = try await thread.executor.run { try (0..<2).map { _ in try NamespaceSockets.connectTCP(host: pair.addresses[0], port: UInt16(server.port), timeoutSeconds: 5) } }
            defer { held.forEach { close($0) } }
            // Closed with the request unread: an empty answer, or a reset. Asked until then, as the
            // server may count the held two a moment after they connect; never refused is a failure.
            var answer: String?
            let refused = await eventually(timeout: .seconds(10)) {
                answer = try? await NamespaceSockets.exchange(
                    from: pair.hosts[1], host: pair.addresses[0], port: UInt16(server.port), request: "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                return (answer ?? "").isEmpty
            }
            #expect(refused, "a third connection was answered: \(answer ?? "")")
        }
    }

    @Test("an instance's console log is read and cleared from its node")
    func readsConsoleTail() async throws {
        try await withPeerPair { pair in
            let instance = UUID()
            let log = InstanceFiles(storagePath: pair.root + "/sfa").consoleLog(of: instance)
            try FileManager.default.createDirectory(atPath: (log as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data("boot\nlogin: ".utf8).write(to: URL(fileURLWithPath: log))
            let server = try await pair.serve()
            let client = try await pair.client(port: server.port)
            #expect(try await client.consoleTail(of: instance, length: 7, on: pair.server) == Data("login: ".utf8))
            #expect(try await client.consoleTail(of: UUID(), length: 100, on: pair.server).isEmpty)
            try await client.clearConsole(of: instance, on: pair.server)
            #expect(try Data(contentsOf: URL(fileURLWithPath: log)).isEmpty)
        }
    }
}

