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
    /// Which bases an instance's namespace may boot: checked here again, whatever the API checked.
    let access: ImageAccess
    public nonisolated let blobs: BlobStore
    public nonisolated let cache: ImageCache
    let uploads: UploadSessions
    let fetcher: HTTPFetcher
    let inspector: ImageInspector
    let nodeName: String
    let imageDownloadURL: String
    let logger: Logger
    /// The fetch of each URL artifact under way, by artifact: every namespace caching a URL has its
    /// own artifact, and each artifact is fetched once however many instances wait for it.
    private var inFlight = SingleFlight<UUID, Blob>()
    /// When each URL artifact was last found unchanged on its server (or fetched). Within
    /// ``recheckInterval`` of that, the cached copy is used without asking the server again: a burst
    /// of instances from one image costs one HEAD, not one each.
    private var checked: [UUID: ContinuousClock.Instant] = [:]
    /// How long a check of a URL's server stands.
    let recheckInterval: Duration
    /// Where blobs this node lacks are copied from: the other nodes holding them. Nil on a node with
    /// no mesh (a single node has every blob it made).
    let peers: BlobPeers?
    /// The copy of each blob from another node under way: one however many instances wait for it.
    private var copying = SingleFlight<UUID, Blob>()

    public init(
        records: any BlobRecords, storagePath: String, nodeName: String, rules: DestinationRules, cacheHighWaterBytes: Int64,
        imageDownloadURL: String, recheckInterval: Duration = .seconds(60),
        fetchLimits: HTTPFetcher.Configuration = HTTPFetcher.Configuration(), imageLimits: ImageLimits = ImageLimits(),
        peers: BlobPeers? = nil, logger: Logger
    ) {
        self.recheckInterval = recheckInterval
        self.peers = peers
        self.records = records
        self.access = ImageAccess(store: records)
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

    /// The base for one disk of `instance`, an instance of `namespace`, recording the instance's
    /// reference to its blob. The base is resolved as that namespace sees images
    /// (``ImageAccess``): `label:NAME` in the namespace, then `system`'s shared labels; another
    /// namespace's upload, label or blob only when it is shared. A base the namespace cannot see
    /// fails as not found, and nothing is booted from it. `progress` hears "fetching …, 30 %" lines
    /// while a download runs.
    public func base(
        _ text: String, cdrom: Bool, instance: UUID, namespace: String, mode: Mode, progress: @escaping @Sendable (String) async -> Void
    ) async throws -> Base {
        let reference = try ImageReference.parseStored(text, imageDownloadURL: imageDownloadURL)
        let blob: Blob
        switch reference {
        case .localPath(let path):
            // An operator's (or a test's) file: trusted as stored, as before blobs existed.
            return Base(path: path, format: cdrom ? .iso : .qcow2, blobUUID: nil)
        case .url(let url):
            blob = try await blobForURL(url, namespace: namespace, mode: mode, progress: progress)
        default:
            let resolved: Blob?
            do {
                resolved = try await access.blob(for: reference, namespace: namespace)
            } catch let error as ControlError where error.code == .notFound {
                // The instance's owner named this base, so naming it back tells them nothing new.
                throw ControlError.notFound("disk base \(reference) of an instance in namespace \(namespace): \(error.message)")
            }
            guard let resolved else { throw ControlError(.internal, "disk base \(reference) resolved to no blob") }
            blob = resolved
        }
        guard blob.state == .created else {
            throw ControlError.conflict("blob \(blob.uuid.lowercasedString) is \(blob.state.rawValue), not created")
        }
        if !blobs.hasData(blob.uuid) { try await copy(blob, progress: progress) }
        let cached = try await cache.ensureBase(blobUUID: blob.uuid, dataPath: blobs.path(of: blob.uuid), for: cdrom ? .cdrom : .disk)
        // Referenced once its base exists: an image the cache refused is no disk of the instance.
        // Nothing evicts in between, since eviction runs under the same agent lock as this job.
        try await records.addReference(BlobReference(blobUUID: blob.uuid, holderType: "instance", holderUUID: instance, relationship: .disk))
        try await records.touchBlob(uuid: blob.uuid)
        await cache.markUsed(blob.uuid)
        return Base(path: cached.path, format: cached.format, blobUUID: blob.uuid)
    }

    /// The data of the blob a UEFI instance of `namespace` starts its firmware variables from
    /// (its `nvram_template`, a blob UUID), checked as the namespace sees images again and held by
    /// the instance (Shaken Fist's `nvram_template` reference) so that it is not deleted under it.
    public func nvramTemplate(_ text: String, instance: UUID, namespace: String) async throws -> String {
        guard let uuid = UUID(uuidString: text) else { throw ControlError.invalid("nvram_template '\(text)' of instance \(instance) is not a blob UUID") }
        guard try await access.canSee(blob: uuid, namespace: namespace), let blob = try? await records.blob(uuid: uuid) else {
            throw ControlError.notFound("nvram_template blob \(text) of an instance in namespace \(namespace): blob not found")
        }
        guard blob.state == .created, blob.size <= InstanceLimits.nvramTemplateBytes else {
            throw ControlError.conflict("nvram_template blob \(text) is \(blob.state.rawValue) and \(blob.size) bytes; it must be created and at most \(InstanceLimits.nvramTemplateBytes)")
        }
        if !blobs.hasData(uuid) { try await copy(blob, progress: { _ in }) }
        try await records.addReference(BlobReference(blobUUID: uuid, holderType: "instance", holderUUID: instance, relationship: .nvramTemplate))
        try await records.touchBlob(uuid: uuid)
        return blobs.path(of: uuid)
    }

    /// Copies `blob`'s data here from another node that holds it (an upload the API's node received,
    /// an image another hypervisor fetched), once however many callers ask at the same time.
    private func copy(_ blob: Blob, progress: @escaping @Sendable (String) async -> Void) async throws {
        guard let peers else {
            throw ControlError.notFound("blob \(blob.uuid.lowercasedString) has no data on node \(nodeName), and this node has no mesh to copy it over (set SFNODE_MESH_ADDRESS)")
        }
        let store = blobs
        let flight = copying.join(blob.uuid) {
            Task {
                try await Self.reportingProgress(of: "copying blob \(blob.uuid.lowercasedString) from another node", to: progress) { report in
                    try await peers.copy(blob, into: store, progress: report)
                }
            }
        }
        defer { if flight.started { copying.end(blob.uuid) } }
        _ = try await flight.task.value
    }

    /// Runs `transfer`, turning its progress into a line for `progress` every 10 % (as Shaken Fist's
    /// "fetching required blob" events), and returns what it returns.
    static func reportingProgress<T: Sendable>(
        of what: String, to progress: @escaping @Sendable (String) async -> Void,
        _ transfer: (@escaping @Sendable (FetchProgress) -> Void) async throws -> T
    ) async throws -> T {
        let reported = Mutex(-10.0)
        let events = AsyncStream<String>.makeStream()
        let reporter = Task { for await line in events.stream { await progress(line) } }
        defer { events.continuation.finish() }
        let result = try await transfer { report in
            guard let percent = report.percent else { return }
            let due = reported.withLock { last in
                guard percent >= last + 10 || (percent >= 100 && last < 100) else { return false }
                last = percent
                return true
            }
            if due { events.continuation.yield("\(what), \(Int(percent)) %") }
        }
        events.continuation.finish()
        await reporter.value
        return result
    }

    /// Fetches (or refreshes) the image artifact `uuid` from its source URL: the job behind
    /// `sfnode artifact cache URL`.
    public func fetchArtifact(_ uuid: UUID, progress: @escaping @Sendable (String) async -> Void) async throws -> Blob {
        let artifact = try await records.artifact(uuid: uuid)
        guard artifact.type == .image, let url = artifact.sourceURL else {
            throw ControlError.invalid("artifact \(uuid.lowercasedString) is a \(artifact.type.rawValue) with no source URL; only image artifacts are fetched")
        }
        return try await blobForURL(url, artifact: artifact, mode: .fetchIfStale, progress: progress)
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

    /// The blob for a URL that an instance of `namespace` boots from: the namespace's own cache of
    /// it, else the one `system` shares, else a new artifact of the namespace's.
    private func blobForURL(
        _ url: String, namespace: String, mode: Mode, progress: @escaping @Sendable (String) async -> Void
    ) async throws -> Blob {
        var found = try await access.urlArtifact(url, namespace: namespace)
        if found == nil {
            let made = Artifact(type: .image, name: url, sourceURL: url, namespace: namespace)
            do {
                try await records.createArtifact(made)
                found = made
            } catch StoreError.alreadyExists {
                // Another process made it first; use theirs.
                found = try await records.artifact(type: .image, name: url, namespace: namespace)
            }
        }
        guard let artifact = found else { throw ControlError.conflict("the artifact caching \(URLRedaction.redacted(url)) was made and deleted at once; try again") }
        return try await blobForURL(url, artifact: artifact, mode: mode, progress: progress)
    }

    /// The blob of a URL artifact, fetching it once however many callers ask at the same time.
    private func blobForURL(
        _ url: String, artifact: Artifact, mode: Mode, progress: @escaping @Sendable (String) async -> Void
    ) async throws -> Blob {
        let flight = inFlight.join(artifact.uuid) { Task { try await self.resolveURL(url, artifact: artifact, mode: mode, progress: progress) } }
        defer { if flight.started { inFlight.end(artifact.uuid) } }
        return try await flight.task.value
    }

    private func resolveURL(
        _ url: String, artifact: Artifact, mode: Mode, progress: @escaping @Sendable (String) async -> Void
    ) async throws -> Blob {
        // Logs and events are read by more than the URL's owner: never its credentials or query.
        let shown = URLRedaction.redacted(url)
        let newest = try await records.artifactVersions(artifactUUID: artifact.uuid).last
        var cachedBlob: Blob?
        if let newest, let blob = try? await records.blob(uuid: newest.blobUUID), blob.state == .created, blobs.hasData(blob.uuid) {
            cachedBlob = blob
        }
        if mode == .cachedOnly {
            guard let cachedBlob else { throw ControlError.notReady("image \(shown) is not on node \(nodeName) yet") }
            return cachedBlob
        }
        if let cachedBlob, let newest {
            if let last = checked[artifact.uuid], ContinuousClock.now - last < recheckInterval { return cachedBlob }
            do {
                let remote = try await fetcher.head(url)
                if remote.contentLength == newest.contentLength && Self.text(remote.lastModified) == newest.lastModified {
                    checked[artifact.uuid] = .now
                    return cachedBlob
                }
                logger.info("image changed on its server; fetching it again", metadata: ["image.url": "\(shown)"])
            } catch {
                // A server that is down or now says 404 does not stop a node that has the image (Shaken Fist #1970).
                logger.warning("could not check the image's server; using the copy this node has", metadata: ["image.url": "\(shown)", "error": "\(Self.redacting(error, url))"])
                return cachedBlob
            }
        }
        let blob = try await fetch(url, artifact: artifact, progress: progress)
        checked[artifact.uuid] = .now
        return blob
    }

    private nonisolated func fetch(_ url: String, artifact: Artifact, progress: @escaping @Sendable (String) async -> Void) async throws -> Blob {
        // An agent killed mid-download left a checkpoint: resume it rather than start from byte 0.
        let key = artifact.uuid.lowercasedString
        let (first, resume) = try await blobs.beginResumableIngest(key: key, url: url)
        if let resume {
            logger.info("resuming an interrupted download", metadata: ["image.url": "\(URLRedaction.redacted(url))", "fetch.offset": "\(resume.offset)"])
        }
        let ingest = Mutex(first)
        let result: FetchResult
        do {
            result = try await Self.reportingProgress(of: "fetching image \(URLRedaction.redacted(url))", to: progress) { report in
                try await fetcher.fetch(
                    url, hashing: false,  // the blob ingest hashes every byte already
                    resuming: resume, progress: report,
                    validated: { validator in
                        // Before the body's first byte: where a later process could pick this download up.
                        let blob = ingest.withLock { $0.uuid }
                        try self.blobs.recordCheckpoint(key: key, url: url, blob: blob, validator: validator)
                    },
                    restart: {
                        // The body starts again: start the blob's file again too.
                        let fresh = try self.blobs.beginIngest()
                        ingest.withLock { current in
                            current.abandon()
                            current = fresh
                        }
                    },
                    into: { bytes in try ingest.withLock { try $0.append(bytes) } })
            }
        } catch {
            ingest.withLock { $0.abandon() }
            blobs.clearCheckpoint(key: key)
            throw Self.redacting(error, url)
        }
        blobs.clearCheckpoint(key: key)
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
        logger.info("fetched image", metadata: ["image.url": "\(URLRedaction.redacted(url))", "blob.uuid": "\(blob.uuid)", "image.bytes": "\(result.size)"])
        return blob
    }

    /// The error with `url` redacted from its message when the URL carries credentials or a query:
    /// job errors become events and error messages that more than the URL's owner may read. The
    /// error keeps its kind (``ControlError/Code``), so retries are decided as before.
    static func redacting(_ error: any Error, _ url: String) -> any Error {
        guard URLRedaction.hasSecrets(url) else { return error }
        let classified = ControlError(classifying: error)
        return ControlError(classified.code, classified.message.replacingOccurrences(of: url, with: URLRedaction.redacted(url)))
    }

    /// The `qemu-img info` keys and mime type Shaken Fist shows for a blob.
    static func blobInfo(_ info: ImageInfo) -> [String: JSONValue] {
        var fields = info.qemuInfo
        fields["mime-type"] = .string(info.mimeType)
        return fields
    }

    /// A Last-Modified date as stored with an artifact version.
    static func text(_ date: Date?) -> String? {
        date.map { UTCTime.iso8601($0) }
    }
}
