import ArgumentParser
import Foundation
import SFControl
import SFDaemonSupport
import SFStore

/// `sfnode artifact …`: sf-client's artifact verbs, with its argument syntax.
struct ArtifactCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "artifact", abstract: "Cache, upload, list, show and delete artifacts (images, labels).",
        subcommands: [Cache.self, Upload.self, List.self, Show.self, Versions.self, MaxVersions.self, Delete.self])

    struct Cache: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fetch an image URL into the cluster and wait until it is there.",
            discussion: "Example: sfnode artifact cache https://example.com/disk.qcow2, or sfnode artifact cache debian:12")
        @OptionGroup var options: ClientOptions
        @Argument(help: "An http(s) URL, or a short name such as debian:12.") var url: String
        @Flag(help: "Return once the fetch is queued instead of waiting for it.") var noWait = false
        @Option(help: "How long to wait, in seconds.") var timeout = 3600
        @Flag(help: "Share the artifact with every namespace (system artifacts only).") var shared = false

        func run() async throws {
            let control = try options.control()
            var fetch = try await control.cacheArtifactFetch(url: url, namespace: options.namespace, shared: shared)
            if !noWait { fetch = try await ArtifactCommand.waitForFetch(fetch, control, options, timeout: timeout) }
            try await ArtifactCommand.show(fetch.artifact.uuid.lowercasedString, control, options)
            if noWait && !options.json {
                print("fetch queued as job \(fetch.job.id); follow it with sfnode events artifact \(fetch.artifact.uuid.lowercasedString) --follow")
            }
        }
    }

    struct Upload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upload a file as a new version of the image artifact NAME.",
            discussion: "Example: sfnode artifact upload myimage ./disk.qcow2; boot from it with -d 8@sf://blob/<blob uuid>")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The artifact's name.") var name: String
        @Argument(help: "The file to upload.") var file: String
        @Option(help: "Bytes per chunk.") var chunkSize = 4 << 20
        @Flag(help: "Share the artifact with every namespace (system artifacts only).") var shared = false
        @Option(help: "The source URL to record on a new artifact (default: sf://upload/NAMESPACE/NAME).") var sourceURL: String?

        func run() async throws {
            guard chunkSize > 0 else { throw ValidationError("--chunk-size \(chunkSize) is not positive") }
            if shared && (options.namespace ?? Namespace.system) != Namespace.system {
                throw ValidationError("--shared: only artifacts in the system namespace can be shared")
            }
            // Refused now rather than after sending the whole file.
            try Names.checkName(name, "artifact name")
            let (control, storage) = try options.blobControl()
            let size = try ArtifactCommand.fileSize(file)
            let upload = try await control.createUpload(namespace: options.namespace, storage: storage)
            let result: UploadedArtifact
            do {
                try await ArtifactCommand.send(file, size: size, to: upload.uuid, chunkSize: chunkSize, control, storage, json: options.json)
                result = try await control.uploadArtifact(
                    name: name, uploadUUID: upload.uuid, namespace: options.namespace, shared: shared, sourceURL: sourceURL, storage: storage)
            } catch {
                // An upload that did not become an artifact is of no use to anyone: remove its file
                // now rather than in a week (it is already gone if it became a blob).
                try? await control.abandonUpload(uuid: upload.uuid, storage: storage)
                throw error
            }
            let output = Output(json: options.json)
            if options.json {
                return try output.printJSON(UploadResult(artifact: result.artifact, index: result.version.index, blob: result.blob))
            }
            output.printFields([
                ("artifact", result.artifact.uuid.lowercasedString), ("name", result.artifact.name), ("namespace", result.artifact.namespace),
                ("version", "\(result.version.index)"), ("blob", result.blob.uuid.lowercasedString), ("size", "\(result.blob.size)"),
                ("sha512", result.blob.sha512.orNone),
            ])
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List artifacts.")
        @OptionGroup var options: ClientOptions
        @Flag(help: "Include deleted artifacts.") var all = false

        func run() async throws {
            let control = try options.control()
            let artifacts = try await control.artifacts(namespace: options.namespace, includeDeleted: all)
            var views: [ArtifactView] = []
            for artifact in artifacts { views.append(try await control.artifactView(artifact.uuid.lowercasedString)) }
            let output = Output(json: options.json)
            if options.json { return try output.printJSON(views) }
            output.printTable(
                ["uuid", "type", "name", "namespace", "state", "versions", "newest blob"],
                views.map {
                    [
                        $0.artifact.uuid.lowercasedString, $0.artifact.type.rawValue, $0.artifact.name, $0.artifact.namespace, $0.artifact.state.rawValue,
                        "\($0.versions.count) of \($0.index)", $0.blobUUID?.lowercasedString ?? "-",
                    ]
                })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an artifact and its versions.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The artifact's UUID or name (a cached URL's artifact is named by its URL).") var artifact: String

        func run() async throws { try await ArtifactCommand.show(artifact, try options.control(), options) }
    }

    struct Versions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an artifact's versions, oldest first.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The artifact's UUID or name.") var artifact: String

        func run() async throws {
            let versions = try await ArtifactCommand.hinting(artifact) {
                try await options.control().artifactVersions(artifact, namespace: options.namespace)
            }
            let output = Output(json: options.json)
            if options.json { return try output.printJSON(versions) }
            output.printTable(
                ["index", "blob", "size", "references", "created"],
                versions.map { ["\($0.version.index)", $0.blob.blob.uuid.lowercasedString, "\($0.blob.blob.size)", "\($0.blob.referenceCount)", "\($0.version.created)"] })
        }
    }

    struct MaxVersions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "max-versions", abstract: "Set how many versions an artifact keeps (older ones go at once).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The artifact's UUID or name.") var artifact: String
        @Argument(help: "How many versions to keep (at least 1).") var maxVersions: Int

        func run() async throws {
            let (control, storage) = try options.blobControl()
            _ = try await ArtifactCommand.hinting(artifact) {
                try await control.setMaxVersions(artifact, maxVersions, namespace: options.namespace, storage: storage)
            }
            try await ArtifactCommand.show(artifact, control, options)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete an artifact; blobs nothing else uses go with it.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The artifact's UUID or name.") var artifact: String

        func run() async throws {
            let (control, storage) = try options.blobControl()
            let deleted = try await ArtifactCommand.hinting(artifact) {
                try await control.deleteArtifact(artifact, namespace: options.namespace, storage: storage)
            }
            if options.json { return try Output(json: true).printJSON(deleted) }
            print("artifact \(deleted.uuid.lowercasedString) (\(deleted.name)) is \(deleted.state.rawValue)")
        }
    }

    // MARK: Helpers

    /// Shows an artifact with its versions.
    static func show(_ reference: String, _ control: Control, _ options: ClientOptions) async throws {
        let view = try await hinting(reference) { try await control.artifactView(reference, namespace: options.namespace) }
        let output = Output(json: options.json)
        if options.json { return try output.printJSON(view) }
        let artifact = view.artifact
        output.printFields(
            [
                ("uuid", artifact.uuid.lowercasedString), ("type", artifact.type.rawValue), ("name", artifact.name),
                ("namespace", artifact.namespace), ("shared", artifact.shared ? "yes" : "no"), ("state", artifact.state.rawValue),
                ("source url", artifact.sourceURL.orNone),
                ("max versions", "\(artifact.maxVersions)"), ("index", "\(view.index)"),
            ]
                + view.versions.map { version in
                    (
                        "version \(version.version.index)",
                        "blob \(version.blob.blob.uuid.lowercasedString), \(version.blob.blob.size) bytes, \(version.blob.referenceCount) references"
                            + (version.blob.instances.isEmpty ? "" : ", instances \(version.blob.instances.joined(separator: " "))")
                    )
                })
    }

    /// Runs `body`, adding what to do next to "not found": which list to look in.
    static func hinting<T>(_ reference: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ControlError where error.code == .notFound && error.message.hasPrefix("artifact ") {
            throw CommandFailure("no artifact \(reference): list them with sfnode artifact list")
        }
    }

    /// Waits until the fetch job finishes, showing the progress the artifact's events report
    /// ("fetching image …, 30 %"). A failed fetch is an error naming why.
    static func waitForFetch(_ fetch: ArtifactFetch, _ control: Control, _ options: ClientOptions, timeout: Int) async throws -> ArtifactFetch {
        let progress = options.json ? nil : ProgressDisplay()
        defer { progress?.finish() }
        let deadline = ContinuousClock.now + .seconds(timeout)
        var current = fetch
        while ContinuousClock.now < deadline {
            current = try await control.artifactFetch(artifactUUID: fetch.artifact.uuid, jobID: fetch.job.id)
            switch current.job.state {
            case .succeeded: return current
            case .failed:
                progress?.finish()
                throw CommandFailure(
                    "fetching \(fetch.artifact.name) failed: \(current.job.lastError ?? "no reason recorded"); "
                        + "see sfnode events artifact \(fetch.artifact.uuid.lowercasedString)")
            case .queued, .running:
                let latest = try await control.events(.artifact, fetch.artifact.uuid, limit: 1).first
                let state = current.job.state == .queued ? "queued" : "fetching"
                progress?.update(latest.map { "\(state): \($0.message)" } ?? state, fraction: latest.flatMap { InstanceCommand.percent(in: $0.message) })
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw CommandFailure(
            "job \(current.job.id) fetching \(fetch.artifact.name) is still \(current.job.state.rawValue) after \(timeout) s: "
                + "is the agent running (sfnode job list)? Follow it with sfnode events artifact \(fetch.artifact.uuid.lowercasedString) --follow")
    }

    /// The size of a regular, non-empty file, or an error saying what is wrong with it.
    static func fileSize(_ path: String) throws -> Int64 {
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: path)
        } catch {
            throw CommandFailure("cannot read \(path): \(error.localizedDescription)")
        }
        guard attributes[.type] as? FileAttributeType == .typeRegular else { throw CommandFailure("\(path) is not a regular file") }
        let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        guard size > 0 else { throw CommandFailure("\(path) is empty; an artifact needs data") }
        return size
    }

    /// Sends the file in chunks, as sf-client does: each reply must equal the running total, and a
    /// chunk that failed in a way a retry can help is sent again after cutting the upload back to
    /// what was acknowledged (at most 5 times in a row).
    static func send(
        _ path: String, size: Int64, to upload: UUID, chunkSize: Int, _ control: Control, _ storage: BlobStorage, json: Bool
    ) async throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CommandFailure("cannot open \(path) for reading") }
        defer { try? handle.close() }
        let progress = json ? nil : ProgressDisplay()
        defer { progress?.finish() }
        let name = URL(fileURLWithPath: path).lastPathComponent
        var sent: Int64 = 0
        while true {
            guard let chunk = try handle.read(upToCount: chunkSize), !chunk.isEmpty else { break }
            var failures = 0
            while true {
                do {
                    let received = try await control.appendUpload(uuid: upload, bytes: chunk, storage: storage).received
                    guard received == sent + Int64(chunk.count) else {
                        throw CommandFailure("the upload holds \(received) bytes, but \(sent + Int64(chunk.count)) were sent")
                    }
                    break
                } catch let error as ControlError where error.isRetryable && failures < 5 {
                    failures += 1
                    try await control.truncateUpload(uuid: upload, to: sent, storage: storage)
                }
            }
            sent += Int64(chunk.count)
            progress?.update("uploading \(name): \(sent >> 20) of \(size >> 20) MiB", fraction: Double(sent) / Double(max(size, 1)))
        }
        guard sent == size else { throw CommandFailure("\(path) changed while it was uploaded: \(sent) bytes read, \(size) expected") }
    }
}

/// `sfnode label …`: sf-client's label verbs. A label is an artifact whose newest version is what
/// `label:NAME` resolves to.
struct LabelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "label", abstract: "Point a label at a blob, and show where it points.", subcommands: [Update.self, Show.self])

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make BLOB the newest version of label NAME.",
            discussion: "Example: sfnode label update golden <blob uuid>; boot from it with -d 8@label:golden")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The label's name.") var name: String
        @Argument(help: "The blob's UUID (see sfnode blob list).") var blob: String

        func run() async throws {
            let (control, storage) = try options.blobControl()
            let label = try await control.setLabel(
                name: name, blobUUID: try parseUUID(blob, "blob UUID"), namespace: options.namespace, storage: storage)
            try await ArtifactCommand.show(label.uuid.lowercasedString, control, options)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the blob label NAME resolves to.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The label's name.") var name: String

        func run() async throws {
            let control = try options.control()
            let blob = try await control.label(name, namespace: options.namespace)
            try BlobCommand.show(try await control.blob(uuid: blob.uuid), options)
        }
    }
}

/// What `artifact upload --json` prints.
struct UploadResult: Encodable {
    let artifact: Artifact
    let index: Int
    let blob: Blob
}

/// A command that failed for a reason its message states in full, with what to do next.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension ClientOptions {
    /// The use cases and this node's blob storage (`storagePath` and `nodeName` from the same
    /// configuration), for commands that read or write blob data.
    func blobControl() throws -> (Control, BlobStorage) {
        let settings = try NodeConfiguration.load(commandLinePath: config)
        return (try control(), BlobStorage(path: settings.storagePath, nodeName: settings.nodeName))
    }
}
