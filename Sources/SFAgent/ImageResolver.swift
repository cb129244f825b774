import Foundation
import Logging
import SFBlobs
import SFControl
import SFStore
import SFSystem
import Synchronization

/// Turns a disk's `base` into a file on this node: fetched (or found) as a blob, inspected, and
/// converted once into the image cache. The realizer then only ever sees paths.
///
/// A URL is an image artifact with versions: it is fetched again only when the server's
/// Last-Modified or Content-Length changed (as Shaken Fist does), and two instances that need the
/// same URL at once cause one download (Shaken Fist #1311, #1877), because the work for one URL
/// runs once and every caller awaits it.
public actor ImageResolver {
    /// Whether a resolution may use the network.
    public enum Mode: Sendable {
        /// Check the URL (HEAD) and fetch when it changed or was never fetched: instance.create.
        case fetchIfStale
        /// Use what this node has; never touch the network: reconciliation and power on.
        case cachedOnly
    }

    /// A base ready for the realizer.
    public struct Base: Sendable, Equatable {
        public var path: String
        public var format: ImageFormat
        /// The blob it came from; nil for a file an operator named.
        public var blobUUID: UUID?
    }

    let records: any BlobRecords
    public nonisolated let blobs: BlobStore
    public nonisolated let cache: ImageCache
    let uploads: UploadSessions
    let fetcher: HTTPFetcher
    let inspector: ImageInspector
    let nodeName: String
    let imageDownloadURL: String
    let logger: Logger
    private var inFlight: [String: Task<Blob, any Error>] = [:]
    /// When each URL was last found unchanged on its server (or fetched). Within
    /// ``recheckInterval`` of that, the cached copy is used without asking the server again: a burst
    /// of instances from one image costs one HEAD, not one each.
    private var checked: [String: ContinuousClock.Instant] = [:]
    /// How long a check of a URL's server stands.
    let recheckInterval: Duration

    public init(
        records: any BlobRecords, storagePath: String, nodeName: String, rules: DestinationRules, cacheHighWaterBytes: Int64,
        imageDownloadURL: String, recheckInterval: Duration = .seconds(60),
        fetchLimits: HTTPFetcher.Configuration = HTTPFetcher.Configuration(), imageLimits: ImageLimits = ImageLimits(), logger: Logger
    ) {
        self.recheckInterval = recheckInterval
        self.records = records
        // The same directories the use cases write uploads and their blobs to.
        let storage = BlobStorage(path: storagePath, nodeName: nodeName)
        let blobs = BlobStore(records: records, directory: storage.blobDirectory, nodeName: nodeName, logger: logger)
        self.blobs = blobs
        self.uploads = UploadSessions(blobs: blobs, records: records, directory: storage.uploadDirectory)
        self.cache = ImageCache(
            directory: storagePath + "/image-cache", highWaterBytes: cacheHighWaterBytes, logger: logger, limits: imageLimits)
        var fetchConfiguration = fetchLimits
        fetchConfiguration.rules = rules
        self.fetcher = HTTPFetcher(configuration: fetchConfiguration, logger: logger)
        self.inspector = ImageInspector(logger: logger)
        self.nodeName = nodeName
        self.imageDownloadURL = imageDownloadURL
        self.logger = logger
    }

    /// The base for one disk of `instance`, recording the instance's reference to its blob.
    /// `progress` hears "fetching …, 30 %" lines while a download runs.
    public func base(
        _ text: String, cdrom: Bool, instance: UUID, mode: Mode, progress: @escaping @Sendable (String) async -> Void
    ) async throws -> Base {
        let reference = try ImageReference.parseStored(text, imageDownloadURL: imageDownloadURL)
        let blob: Blob
        switch reference {
        case .localPath(let path):
            // An operator's (or a test's) file: trusted as stored, as before blobs existed.
            return Base(path: path, format: cdrom ? .iso : .qcow2, blobUUID: nil)
        case .url(let url):
            blob = try await blobForURL(url, mode: mode, progress: progress)
        case .blob(let uuid):
            blob = try await records.blob(uuid: uuid)
        case .label(let namespace, let name):
            guard let label = try await records.artifact(type: .label, name: name, namespace: namespace ?? Namespace.system),
                let newest = try await records.artifactVersions(artifactUUID: label.uuid).last
            else { throw ControlError.notFound("Could not resolve label \(name) to a blob") }
            blob = try await records.blob(uuid: newest.blobUUID)
        case .uploadArtifact(let namespace, let name):
            guard let artifact = try await records.artifact(type: .image, name: name, namespace: namespace),
                let newest = try await records.artifactVersions(artifactUUID: artifact.uuid).last
            else { throw ControlError.notFound("no uploaded artifact \(name) in namespace \(namespace)") }
            blob = try await records.blob(uuid: newest.blobUUID)
        case .upload(let uuid):
            throw ControlError.invalid("disk base sf://upload/\(uuid.lowercasedString) is an upload session: make it an artifact first (sfnode artifact upload NAME FILE) and use sf://upload/NAMESPACE/NAME")
        }
        guard blob.state == .created else {
            throw ControlError.conflict("blob \(blob.uuid.lowercasedString) is \(blob.state.rawValue), not created")
        }
        guard blobs.hasData(blob.uuid) else {
            throw ControlError.notFound("blob \(blob.uuid.lowercasedString) has no data on node \(nodeName) (copying blobs between nodes is not built yet)")
        }
        let cached = try await cache.ensureBase(blobUUID: blob.uuid, dataPath: blobs.path(of: blob.uuid), for: cdrom ? .cdrom : .disk)
        // Referenced once its base exists: an image the cache refused is no disk of the instance.
        // Nothing evicts in between, since eviction runs under the same agent lock as this job.
        try await records.addReference(BlobReference(blobUUID: blob.uuid, holderType: "instance", holderUUID: instance, relationship: .disk))
        try await records.touchBlob(uuid: blob.uuid)
        await cache.markUsed(blob.uuid)
        return Base(path: cached.path, format: cached.format, blobUUID: blob.uuid)
    }

    /// Fetches (or refreshes) the image artifact `uuid` from its source URL: the job behind
    /// `sfnode artifact cache URL`.
    public func fetchArtifact(_ uuid: UUID, progress: @escaping @Sendable (String) async -> Void) async throws -> Blob {
        let artifact = try await records.artifact(uuid: uuid)
        guard artifact.type == .image, let url = artifact.sourceURL else {
            throw ControlError.invalid("artifact \(uuid.lowercasedString) is a \(artifact.type.rawValue) with no source URL; only image artifacts are fetched")
        }
        return try await blobForURL(url, mode: .fetchIfStale, progress: progress)
    }

    /// Removes what no record stands for: `.partial` files older than five minutes (a download or
    /// upload whose agent died), data of deleted or unknown blobs, and uploads abandoned for a week.
    /// Nothing is removed when the records cannot be read. Returns the paths removed.
    public func sweep() async throws -> [String] {
        try await blobs.sweep() + uploads.expire()
    }

    /// Whether the artifact exists (for recording a failed job on it).
    public func hasArtifact(_ uuid: UUID) async -> Bool { (try? await records.artifact(uuid: uuid)) != nil }

    /// Releases the instance's references to its blobs (a blob no artifact or instance holds any
    /// more is deleted, with its data), then evicts cache entries no live instance uses.
    public func release(instance: UUID, liveInstances: [UUID]) async throws {
        for reference in try await records.references(holderType: "instance", holderUUID: instance.uuidString) {
            try await blobs.release(reference)
        }
        var inUse = Set<UUID>()
        for live in liveInstances {
            inUse.formUnion(try await records.references(holderType: "instance", holderUUID: live.uuidString).map(\.blobUUID))
        }
        let evicted = try await cache.evict(inUse: inUse)
        if !evicted.isEmpty { logger.info("evicted unused images from the cache", metadata: ["image.count": "\(evicted.count)"]) }
    }

    /// The blob for a URL, fetching it once however many callers ask at the same time.
    private func blobForURL(_ url: String, mode: Mode, progress: @escaping @Sendable (String) async -> Void) async throws -> Blob {
        if let running = inFlight[url] { return try await running.value }
        let task = Task { try await self.resolveURL(url, mode: mode, progress: progress) }
        inFlight[url] = task
        defer { inFlight[url] = nil }
        return try await task.value
    }

    private func resolveURL(_ url: String, mode: Mode, progress: @escaping @Sendable (String) async -> Void) async throws -> Blob {
        let artifact: Artifact
        if let existing = try await records.artifact(type: .image, name: url, namespace: Namespace.system) {
            artifact = existing
        } else {
            artifact = Artifact(type: .image, name: url, sourceURL: url, namespace: Namespace.system)
            do {
                try await records.createArtifact(artifact)
            } catch StoreError.alreadyExists {
                // Another process made it first; use theirs.
            }
        }
        let newest = try await records.artifactVersions(artifactUUID: artifact.uuid).last
        var cachedBlob: Blob?
        if let newest, let blob = try? await records.blob(uuid: newest.blobUUID), blob.state == .created, blobs.hasData(blob.uuid) {
            cachedBlob = blob
        }
        if mode == .cachedOnly {
            guard let cachedBlob else { throw ControlError.notReady("image \(url) is not on node \(nodeName) yet") }
            return cachedBlob
        }
        if let cachedBlob, let newest {
            if let last = checked[url], ContinuousClock.now - last < recheckInterval { return cachedBlob }
            do {
                let remote = try await fetcher.head(url)
                if remote.contentLength == newest.contentLength && Self.text(remote.lastModified) == newest.lastModified {
                    checked[url] = .now
                    return cachedBlob
                }
                logger.info("image changed on its server; fetching it again", metadata: ["image.url": "\(url)"])
            } catch {
                // A server that is down or now says 404 does not stop a node that has the image (Shaken Fist #1970).
                logger.warning("could not check the image's server; using the copy this node has", metadata: ["image.url": "\(url)", "error": "\(error)"])
                return cachedBlob
            }
        }
        let blob = try await fetch(url, artifact: artifact, progress: progress)
        checked[url] = .now
        return blob
    }

    private nonisolated func fetch(_ url: String, artifact: Artifact, progress: @escaping @Sendable (String) async -> Void) async throws -> Blob {
        let ingest = Mutex(try blobs.beginIngest())
        let reported = Mutex(-10.0)
        let events = AsyncStream<String>.makeStream()
        let reporter = Task { for await line in events.stream { await progress(line) } }
        defer { events.continuation.finish() }
        let result: FetchResult
        do {
            result = try await fetcher.fetch(
                url, hashing: false,  // the blob ingest hashes every byte already
                progress: { report in
                    // An event per 10 %, as Shaken Fist's "fetching required blob".
                    guard let percent = report.percent else { return }
                    let due = reported.withLock { last in
                        guard percent >= last + 10 || (percent >= 100 && last < 100) else { return false }
                        last = percent
                        return true
                    }
                    if due { events.continuation.yield("fetching image \(url), \(Int(percent)) %") }
                },
                restart: {
                    // A retry starts the body again: start the blob's file again too.
                    let fresh = try self.blobs.beginIngest()
                    ingest.withLock { current in
                        current.abandon()
                        current = fresh
                    }
                },
                into: { bytes in try ingest.withLock { try $0.append(bytes) } })
        } catch {
            ingest.withLock { $0.abandon() }
            throw error
        }
        events.continuation.finish()
        await reporter.value
        let writer = ingest.withLock { $0 }
        // Inspect before the data becomes a blob anyone can use: a refused image never does.
        let info: ImageInfo
        do {
            info = try await inspector.inspect(writer.partialPath)
        } catch {
            writer.abandon()
            throw error
        }
        let blob = try await writer.finish(info: Self.blobInfo(info))
        try await records.addArtifactVersion(
            artifactUUID: artifact.uuid, blobUUID: blob.uuid, lastModified: Self.text(result.lastModified), contentLength: result.contentLength)
        logger.info("fetched image", metadata: ["image.url": "\(url)", "blob.uuid": "\(blob.uuid)", "image.bytes": "\(result.size)"])
        return blob
    }

    /// The `qemu-img info` keys and mime type Shaken Fist shows for a blob.
    static func blobInfo(_ info: ImageInfo) -> [String: JSONValue] {
        var fields = info.qemuInfo
        fields["mime-type"] = .string(info.mimeType)
        return fields
    }

    /// A Last-Modified date as stored with an artifact version.
    static func text(_ date: Date?) -> String? {
        date.map { ISO8601DateFormatter().string(from: $0) }
    }
}
