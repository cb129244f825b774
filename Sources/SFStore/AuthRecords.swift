import Foundation

/// Namespaces, their keys, and the few cluster-wide settings the API servers share (the secret
/// their tokens are signed with), so that any API server of the cluster accepts any other's tokens.
///
/// Each method is atomic. Errors are ``StoreError``; a missing namespace or key is
/// ``StoreError/notFound(type:id:)`` ("namespace", "key").
public protocol AuthRecords: Sendable {
    /// Creates a namespace, or ``StoreError/alreadyExists(type:id:)`` when a live one has the name.
    /// A deleted namespace of the same name is brought back, with no keys.
    @discardableResult func createNamespace(_ name: String) async throws -> Namespace
    /// The namespace, deleted ones included.
    func namespace(named name: String) async throws -> Namespace
    /// Every namespace that is not deleted, by name.
    func namespaces() async throws -> [Namespace]
    /// Marks the namespace deleted and removes its keys (every token minted from them stops working).
    func deleteNamespace(_ name: String) async throws

    /// Adds or replaces a named key of a live namespace. Replacing gives it a new nonce, which
    /// revokes the tokens minted from the old one.
    @discardableResult func saveKey(namespace: String, name: String, hash: String) async throws -> NamespaceKey
    /// The keys of a namespace, by name.
    func keys(namespace: String) async throws -> [NamespaceKey]
    /// Removes a key, or ``StoreError/notFound(type:id:)``.
    func deleteKey(namespace: String, name: String) async throws

    /// The namespaces `namespace` trusts, by name (Shaken Fist's `trust.full`, less the implicit
    /// `system`): each may see and boot its images. Unknown or deleted: notFound.
    func trusts(of namespace: String) async throws -> [String]
    /// Adds (`trusted` true) or removes a namespace `namespace` trusts; adding twice or removing an
    /// absent one changes nothing. Unknown or deleted `namespace`: notFound.
    func setTrust(of namespace: String, in other: String, _ trusted: Bool) async throws
    /// The live namespaces that trust `namespace`, by name.
    func namespacesTrusting(_ namespace: String) async throws -> [String]

    /// A cluster-wide setting, or nil.
    func setting(_ key: String) async throws -> String?
    /// Stores `value` under `key` unless the key already has one, and returns whichever is stored:
    /// two processes starting at once agree on one value.
    func settingCreatingIfAbsent(_ key: String, value: String) async throws -> String
}

extension AuthRecords {
    /// The namespace if it exists and is not deleted, else nil.
    public func liveNamespace(_ name: String) async throws -> Namespace? {
        do {
            let found = try await namespace(named: name)
            return found.state == .deleted ? nil : found
        } catch StoreError.notFound {
            return nil
        }
    }
}
