import ArgumentParser
import Foundation
import SFControl
import SFStore

/// `sfnode blob …`: sf-client's blob verbs. Blobs are named by UUID only.
struct BlobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blob", abstract: "List, show and read blobs (the content behind artifacts and disks).",
        subcommands: [List.self, Show.self, Get.self, Sha512.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List blobs.")
        @OptionGroup var options: ClientOptions
        @Flag(help: "Include deleted blobs.") var all = false

        func run() async throws {
            let control = try options.control()
            var views: [BlobView] = []
            for blob in try await control.blobs(includeDeleted: all) { views.append(try await control.blob(uuid: blob.uuid)) }
            let output = Output(json: options.json)
            if options.json { return try output.printJSON(views) }
            output.printTable(
                ["uuid", "state", "size", "references", "locations", "sha512"],
                views.map {
                    [
                        $0.blob.uuid.lowercasedString, $0.blob.state.rawValue, "\($0.blob.size)", "\($0.referenceCount)",
                        $0.blob.locations.joined(separator: ","), $0.blob.sha512.map { String($0.prefix(16)) + "…" } ?? "-",
                    ]
                })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a blob and what references it.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The blob's UUID.") var blob: String

        func run() async throws {
            let uuid = try parseUUID(blob, "blob UUID")
            try BlobCommand.show(try await BlobCommand.hinting(uuid) { try await options.control().blob(uuid: uuid) }, options)
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a blob's bytes to standard output or a file, streamed.",
            discussion: "Example: sfnode blob get <uuid> --output disk.qcow2, or sfnode blob get <uuid> --offset 0 --limit 512 | xxd")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The blob's UUID.") var blob: String
        @Option(help: "The first byte to read.") var offset: Int64 = 0
        @Option(help: "How many bytes to read at most (default: to the end).") var limit: Int64?
        @Option(help: "The file to write (default: standard output). It is replaced.") var output: String?

        func run() async throws {
            let uuid = try parseUUID(blob, "blob UUID")
            let (control, storage) = try options.blobControl()
            let chunks = try await BlobCommand.hinting(uuid) {
                try await control.readBlob(uuid: uuid, offset: offset, limit: limit, storage: storage)
            }
            let handle: FileHandle
            if let output {
                guard FileManager.default.createFile(atPath: output, contents: nil), let file = FileHandle(forWritingAtPath: output) else {
                    throw CommandFailure("cannot write \(output)")
                }
                handle = file
            } else {
                handle = FileHandle.standardOutput
            }
            defer { if output != nil { try? handle.close() } }
            // One chunk at a time: a blob of any size streams in constant memory.
            for try await chunk in chunks { try handle.write(contentsOf: chunk) }
            if let output, !options.json { FileHandle.standardError.write(Data("wrote \(chunks.count) bytes to \(output)\n".utf8)) }
        }
    }

    struct Sha512: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sha512", abstract: "Show the blob whose content has this sha512, if the cluster has one.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The sha512, as 128 hexadecimal digits (sha512sum FILE).") var hash: String

        func run() async throws {
            let control = try options.control()
            guard let blob = try await control.blob(sha512: hash) else {
                if options.json { return print("null") }
                throw CommandFailure("no blob has sha512 \(hash.prefix(16))…: upload the file with sfnode artifact upload NAME FILE")
            }
            try BlobCommand.show(try await control.blob(uuid: blob.uuid), options)
        }
    }

    static func show(_ view: BlobView, _ options: ClientOptions) throws {
        let output = Output(json: options.json)
        if options.json { return try output.printJSON(view) }
        let blob = view.blob
        output.printFields(
            [
                ("uuid", blob.uuid.lowercasedString), ("state", blob.state.rawValue), ("size", "\(blob.size)"), ("sha512", blob.sha512.orNone),
                ("modified", "\(blob.modified)"), ("fetched at", blob.fetchedAt.orNone), ("last used", blob.lastUsed.orNone),
                ("locations", blob.locations.isEmpty ? "none" : blob.locations.joined(separator: ", ")),
                ("reference count", "\(view.referenceCount)"),
            ]
                + view.referencesTo.map { ("referenced by", "\($0.holderType) \($0.holderUUID) (\($0.relationship.rawValue))") }
                + view.referencesFrom.map { ("references", "blob \($0.blobUUID.lowercasedString) (\($0.relationship.rawValue))") }
                + blob.info.keys.sorted().map { ("info \($0)", (try? blob.info[$0]?.jsonText()).flatMap { $0 } ?? "") })
    }

    /// Runs `body`, adding what to do next to "not found".
    static func hinting<T>(_ uuid: UUID, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ControlError where error.code == .notFound {
            throw CommandFailure("\(error.message): list blobs with sfnode blob list")
        }
    }
}
