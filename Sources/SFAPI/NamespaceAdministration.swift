import Crypto
import Foundation
import Logging
import SFControl
import SFStore
import SFSystem

/// Namespaces and keys as an operator manages them, shared by the API and `sfnode namespace`.
public struct NamespaceAdministration: Sendable {
    let records: any AuthRecords

    /// Administration over the store's namespaces and keys.
    public init(records: any AuthRecords) {
        self.records = records
    }

    /// The key name `sfnode serve` gives the key it writes into the local client configuration.
    public static let localKeyName = "sfnode-local"

    /// Creates a namespace, with a first key when one is given.
    @discardableResult public func create(_ name: String, keyName: String? = nil, secret: String? = nil) async throws -> Namespace {
        try Names.checkIdentifier(name, "namespace")
        switch (keyName, secret) {
        case (nil, nil): break
        case (let keyName?, let secret?): try Self.checkKey(name: keyName, secret: secret)
        case (nil, _?): throw APIError(.badRequest, "no key name specified")
        case (_?, nil): throw APIError(.badRequest, "no key specified")
        }
        let namespace: Namespace
        do {
            namespace = try await records.createNamespace(name)
        } catch StoreError.alreadyExists {
            throw APIError(.forbidden, "namespace exists")
        }
        if let keyName, let secret { try await addKey(namespace: name, name: keyName, secret: secret) }
        return namespace
    }

    /// Deletes a namespace that holds no live instances or networks, and its artifacts with it
    /// (their blobs go when nothing else holds them), as Shaken Fist does; `system` cannot be
    /// deleted. Uploads and blobs stay; the namespace's keys go, so its tokens stop working.
    public func delete(_ name: String, control: Control, storage: BlobStorage) async throws {
        guard name != Caller.adminNamespace else { throw APIError(.forbidden, "you cannot delete the system namespace") }
        guard try await records.liveNamespace(name) != nil else { throw APIError(.notFound, "namespace not found") }
        // As in Shaken Fist, an instance or network in error does not keep its namespace alive.
        let instances = try await control.instances(namespace: name).filter { $0.state != .error }
        guard instances.isEmpty else {
            throw APIError(.badRequest, "you cannot delete a namespace with instances (\(instances.count) in \(name); delete them first)")
        }
        let networks = try await control.networks(namespace: name).filter { $0.state != .error }
        guard networks.isEmpty else {
            throw APIError(.badRequest, "you cannot delete a namespace with networks (\(networks.count) in \(name); delete them first)")
        }
        // Artifacts first: a crash between the two leaves a live namespace with fewer artifacts,
        // and deleting it again finishes the job.
        for artifact in try await control.artifacts(namespace: name) where artifact.namespace == name {
            try await control.deleteArtifact(artifact.uuid.lowercasedString, namespace: name, storage: storage)
        }
        do {
            try await records.deleteNamespace(name)
        } catch StoreError.notFound {
            throw APIError(.notFound, "namespace not found")
        }
    }

    /// Adds (or replaces) a key, storing only its bcrypt hash made by `hasher`. A new key past
    /// `limit` keys in the namespace is refused (403); replacing one is not.
    @discardableResult public func addKey(
        namespace: String, name: String, secret: String, limit: Int? = nil,
        hasher: @Sendable (String) async throws -> String = { try await Authenticator.hash($0) }
    ) async throws -> NamespaceKey {
        try Self.checkKey(name: name, secret: secret)
        do {
            if let limit {
                let existing = try await records.keys(namespace: namespace)
                guard existing.count < limit || existing.contains(where: { $0.name.utf8.elementsEqual(name.utf8) }) else {
                    throw APIError(
                        .forbidden, "namespace \(namespace) has \(existing.count) keys; the limit is \(limit) (SFNODE_KEYS_PER_NAMESPACE): delete one first")
                }
            }
            return try await records.saveKey(namespace: namespace, name: name, hash: try await hasher(secret))
        } catch StoreError.notFound {
            throw APIError(.notFound, "namespace not found")
        }
    }

    /// The longest key: bcrypt reads only its first 72 bytes, so a longer one would be checked as
    /// its prefix. Longer keys are refused rather than pre-hashed, which keeps every stored key
    /// working as it is.
    public static let keyByteLimit = 72

    /// Refuses a reserved or malformed key name, a key too short to be a secret or too long for
    /// bcrypt, and a key with NUL or other control characters (bcrypt reads a C string, so a NUL
    /// would end it early).
    static func checkKey(name: String, secret: String) throws {
        guard !name.hasPrefix("_service_key") else { throw APIError(.forbidden, "illegal key name") }
        try Names.checkIdentifier(name, "key name")
        guard (8...keyByteLimit).contains(secret.utf8.count) else {
            throw APIError(.badRequest, "a key is 8 to \(keyByteLimit) bytes (bcrypt reads no more); this one is \(secret.utf8.count)")
        }
        guard !secret.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError(.badRequest, "a key must not contain NUL or other control characters")
        }
    }

    /// A new random key: 32 bytes from the system's CSPRNG, base64url.
    public static func generateSecret() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

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
    public static func prepare(at path: String, apiURL: String, records: any AuthRecords, logger: Logger) async throws {
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
        let secret = NamespaceAdministration.generateSecret()
        try await NamespaceAdministration(records: records).addKey(
            namespace: Caller.adminNamespace, name: NamespaceAdministration.localKeyName, secret: secret)
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
