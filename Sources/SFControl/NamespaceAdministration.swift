import Foundation
import SFBlobs
import SFStore

/// Hashes a namespace key for storing. The API's bcrypt is injected rather than linked here, so that
/// the use cases need no hashing library and the API can run the hash in the namespace's turn.
public typealias KeyHasher = @Sendable (_ secret: String) async throws -> String

/// Namespaces and keys as an operator manages them: the use cases behind `/auth/namespaces` and
/// `sfnode namespace`.
extension Control {
    /// The key name `sfnode serve` gives the key it writes into the local client configuration.
    public static let localKeyName = "sfnode-local"

    /// The longest key: bcrypt reads only its first 72 bytes, so a longer one would be checked as
    /// its prefix. Longer keys are refused rather than pre-hashed, which keeps every stored key
    /// working as it is.
    public static let keyByteLimit = 72

    /// Creates a namespace, with a first key (`firstKey`, hashed by `hasher`) when one is given.
    @discardableResult public func createNamespace(
        _ name: String, keyName: String? = nil, secret: String? = nil, hasher: KeyHasher
    ) async throws -> Namespace {
        try Names.checkIdentifier(name, "namespace")
        switch (keyName, secret) {
        case (nil, nil): break
        case (let keyName?, let secret?): try Self.checkKey(name: keyName, secret: secret)
        case (nil, _?): throw ControlError.invalid("no key name specified")
        case (_?, nil): throw ControlError.invalid("no key specified")
        }
        let records = try authRecords()
        let namespace: Namespace = try await controlled {
            do {
                return try await records.createNamespace(name)
            } catch StoreError.alreadyExists {
                throw ControlError(.forbidden, "namespace exists")
            }
        }
        if let keyName, let secret { try await addKey(namespace: name, name: keyName, secret: secret, hasher: hasher) }
        return namespace
    }

    /// Deletes a namespace that holds no live instances or networks, and its artifacts with it
    /// (their blobs go when nothing else holds them), as Shaken Fist does; `system` cannot be
    /// deleted. Uploads and blobs stay; the namespace's keys go, so its tokens stop working.
    public func deleteNamespace(_ name: String, storage: BlobStorage) async throws {
        guard name != Namespace.system else { throw ControlError(.forbidden, "you cannot delete the system namespace") }
        let records = try authRecords()
        guard try await controlled({ try await records.liveNamespace(name) }) != nil else { throw ControlError.notFound("namespace not found") }
        // As in Shaken Fist, an instance or network in error does not keep its namespace alive.
        let instances = try await instances(namespace: name).filter { $0.state != .error }
        guard instances.isEmpty else {
            throw ControlError.invalid("you cannot delete a namespace with instances (\(instances.count) in \(name); delete them first)")
        }
        let networks = try await networks(namespace: name).filter { $0.state != .error }
        guard networks.isEmpty else {
            throw ControlError.invalid("you cannot delete a namespace with networks (\(networks.count) in \(name); delete them first)")
        }
        // Artifacts first: a crash between the two leaves a live namespace with fewer artifacts,
        // and deleting it again finishes the job.
        for artifact in try await artifacts(namespace: name) where artifact.namespace == name {
            try await deleteArtifact(artifact.uuid.lowercasedString, namespace: name, storage: storage)
        }
        try await controlled {
            do {
                try await records.deleteNamespace(name)
            } catch StoreError.notFound {
                throw ControlError.notFound("namespace not found")
            }
        }
    }

    /// Adds (or replaces) a key, storing only the hash `hasher` makes of it. A new key past `limit`
    /// keys in the namespace is refused (403); replacing one is not.
    @discardableResult public func addKey(
        namespace: String, name: String, secret: String, limit: Int? = nil, hasher: KeyHasher
    ) async throws -> NamespaceKey {
        try Self.checkKey(name: name, secret: secret)
        let records = try authRecords()
        return try await controlled {
            do {
                if let limit {
                    let existing = try await records.keys(namespace: namespace)
                    guard existing.count < limit || existing.contains(where: { $0.name.utf8.elementsEqual(name.utf8) }) else {
                        throw ControlError(
                            .quotaExceeded,
                            "namespace \(namespace) has \(existing.count) keys; the limit is \(limit) (SFNODE_KEYS_PER_NAMESPACE): delete one first")
                    }
                }
                return try await records.saveKey(namespace: namespace, name: name, hash: try await hasher(secret))
            } catch StoreError.notFound {
                throw ControlError.notFound("namespace not found")
            }
        }
    }

    /// Deletes a namespace's key; its tokens stop working.
    public func deleteKey(namespace: String, name: String) async throws {
        let records = try authRecords()
        try await controlled {
            do {
                try await records.deleteKey(namespace: namespace, name: name)
            } catch StoreError.notFound {
                throw ControlError.notFound("key name not found in namespace")
            }
        }
    }

    /// Refuses a reserved or malformed key name, a key too short to be a secret or too long for
    /// bcrypt, and a key with NUL or other control characters (bcrypt reads a C string, so a NUL
    /// would end it early).
    static func checkKey(name: String, secret: String) throws {
        guard !name.hasPrefix("_service_key") else { throw ControlError(.forbidden, "illegal key name") }
        try Names.checkIdentifier(name, "key name")
        guard (8...keyByteLimit).contains(secret.utf8.count) else {
            throw ControlError.invalid("a key is 8 to \(keyByteLimit) bytes (bcrypt reads no more); this one is \(secret.utf8.count)")
        }
        guard !secret.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw ControlError.invalid("a key must not contain NUL or other control characters")
        }
    }

    /// A new random key: 32 bytes from the system's CSPRNG (`getrandom`), base64url.
    public static func generateSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
