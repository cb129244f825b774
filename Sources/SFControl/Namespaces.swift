import Foundation
import SFStore

extension Control {
    /// The store's namespaces, keys and trusts.
    func authRecords() throws(ControlError) -> any AuthRecords {
        guard let records = store as? any AuthRecords else {
            throw ControlError(.internal, "the store (\(type(of: store))) keeps no namespaces")
        }
        return records
    }

    /// The namespaces `namespace` trusts, Shaken Fist's `trust.full`: `system` first (it is always
    /// trusted), then the others by name.
    public func trusts(of namespace: String) async throws -> [String] {
        let records = try authRecords()
        return try await controlled {
            do {
                return [Namespace.system] + (try await records.trusts(of: namespace)).filter { $0 != Namespace.system }
            } catch StoreError.notFound {
                throw ControlError.notFound("namespace not found")
            }
        }
    }

    /// Lets `other` see and boot `namespace`'s images (artifacts, labels, uploads), or stops it,
    /// and answers the trusts after. `other` need not exist yet, as in Shaken Fist; trusting
    /// `system` is implicit, so removing it changes nothing. A namespace trusts at most
    /// ``NamespaceQuotas/trusts`` others.
    @discardableResult public func setTrust(of namespace: String, in other: String, _ trusted: Bool) async throws -> [String] {
        try Names.checkName(other, "external namespace")
        let current = try await trusts(of: namespace)
        guard other != Namespace.system, other != namespace, current.contains(other) != trusted else { return current }
        // `current` counts system, which is not stored.
        if trusted && current.count - 1 >= settings.quotas.trusts {
            throw ControlError(
                .quotaExceeded,
                "namespace \(namespace) trusts \(current.count - 1) namespaces; the limit is \(settings.quotas.trusts) (SFNODE_QUOTA_TRUSTS)")
        }
        let records = try authRecords()
        try await controlled {
            do {
                try await records.setTrust(of: namespace, in: other, trusted)
            } catch StoreError.notFound {
                throw ControlError.notFound("namespace not found")
            }
        }
        return try await trusts(of: namespace)
    }
}
