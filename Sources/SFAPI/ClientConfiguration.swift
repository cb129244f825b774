import Foundation
import Logging
import SFControl
import SFStore
import SFSystem

/// The client's configuration file (`/etc/sf/shakenfist.json`, `~/.shakenfist`), in its own format.
public struct ClientConfiguration: Codable, Equatable, Sendable {
    /// The namespace the key belongs to (`system` for the one sfnode writes).
    public var namespace: String
    /// The key itself.
    public var key: String
    /// The API's base URL, without a trailing slash.
    public var apiurl: String

    /// A configuration naming a namespace, its key and the API.
    public init(namespace: String, key: String, apiurl: String) {
        self.namespace = namespace
        self.key = key
        self.apiurl = apiurl
    }

    /// Makes sure the local client can reach this store: the `system` namespace exists, and the file
    /// at `path` holds a system key this store accepts and this server's URL. A file that does not
    /// (left from another store, unreadable, or pointing elsewhere) is replaced with a warning,
    /// never trusted; a valid one is kept. The file is written atomically with mode 0600, since
    /// it holds an admin key.
    public static func prepare(at path: String, apiURL: String, control: Control, records: any AuthRecords, logger: Logger) async throws {
        if (try? await records.namespace(named: Caller.adminNamespace)) == nil {
            try await records.createNamespace(Caller.adminNamespace)
            logger.notice("created the system namespace")
        }
        if let data = FileManager.default.contents(atPath: path) {
            if let existing = try? JSONDecoder().decode(ClientConfiguration.self, from: data), existing.namespace == Caller.adminNamespace,
                try await Authenticator.key(matching: existing.key, namespace: Caller.adminNamespace, in: records) != nil
            {
                // It holds an admin key: whatever mode it was left with, only root reads it.
                chmod(path, 0o600)
                if existing.apiurl == apiURL { return }
                try write(ClientConfiguration(namespace: existing.namespace, key: existing.key, apiurl: apiURL), to: path)
                logger.notice("client configuration now points at this server", metadata: ["path": "\(path)", "apiurl": "\(apiURL)"])
                return
            }
            logger.warning(
                "replacing a client configuration this store does not accept (left from another store?)", metadata: ["path": "\(path)"])
        }
        let secret = Control.generateSecret()
        try await control.addKey(
            namespace: Caller.adminNamespace, name: Control.localKeyName, secret: secret, hasher: { try await Authenticator.hash($0) })
        try write(ClientConfiguration(namespace: Caller.adminNamespace, key: secret, apiurl: apiURL), to: path)
        logger.notice("wrote the client configuration with a new system key", metadata: ["path": "\(path)", "apiurl": "\(apiURL)"])
    }


    static func write(_ configuration: ClientConfiguration, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(configuration)
        do {
            try AtomicFile.write(data, to: path, mode: 0o600)
        } catch {
            throw ControlError(.internal, "cannot write the client configuration: \(error); check that \(directory) is writable")
        }
    }
}
