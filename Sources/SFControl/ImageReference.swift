import Foundation
import SFStore

/// Where a disk's base image comes from, as Shaken Fist resolves a `base`.
public enum ImageReference: Hashable, Sendable, CustomStringConvertible {
    /// An http or https URL, fetched (and cached) by the node that runs the instance.
    case url(String)
    /// A blob already in the cluster (`sf://blob/UUID`).
    case blob(UUID)
    /// The newest version of a label (`label:NAME`, `sf://label/NAME` or `sf://label/NAMESPACE/NAME`).
    case label(namespace: String?, name: String)
    /// An upload session (`sf://upload/UUID`): it must be made an artifact first.
    case upload(UUID)
    /// The newest version of an uploaded artifact (`sf://upload/NAMESPACE/NAME`).
    case uploadArtifact(namespace: String, name: String)
    /// The newest version of a snapshot artifact (`sf://snapshot/ARTIFACT_UUID`).
    case snapshot(UUID)
    /// A file already on the node (tests and operators only: the use cases refuse it from users,
    /// since it would let a request read any host file).
    case localPath(String)

    public var description: String {
        switch self {
        case .url(let url): return url
        case .blob(let uuid): return "sf://blob/\(uuid.lowercasedString)"
        case .label(let namespace?, let name): return "sf://label/\(namespace)/\(name)"
        case .label(nil, let name): return "label:\(name)"
        case .upload(let uuid): return "sf://upload/\(uuid.lowercasedString)"
        case .uploadArtifact(let namespace, let name): return "sf://upload/\(namespace)/\(name)"
        case .snapshot(let uuid): return "sf://snapshot/\(uuid.lowercasedString)"
        case .localPath(let path): return path
        }
    }

    /// Parses a disk's `base`. A short name such as `debian:11` becomes
    /// `<imageDownloadURL>/debian:11/latest.qcow2`.
    public static func parse(_ text: String, imageDownloadURL: String) throws(ControlError) -> ImageReference {
        let why = "use an http(s) URL, sf://blob/UUID, sf://snapshot/UUID, sf://upload/NAMESPACE/NAME, label:NAME, sf://label/[NAMESPACE/]NAME or a short name such as debian:12"
        guard !text.isEmpty, text.utf8.count <= 2048 else { throw .invalid("disk base '\(text.prefix(64))' is empty or longer than 2048 bytes") }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == " " }) else {
            throw .invalid("disk base '\(text)' contains a space or a control character")
        }
        let lower = text.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            guard let url = URL(string: text), let host = url.host, !host.isEmpty else { throw .invalid("disk base '\(text)' is not a valid URL") }
            return .url(text)
        }
        if lower.hasPrefix("sf://") {
            let parts = text.dropFirst(5).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            switch (parts.first, parts.count) {
            case ("blob", 2), ("upload", 2), ("snapshot", 2):
                guard let uuid = UUID(uuidString: parts[1]) else { throw .invalid("disk base '\(text)': '\(parts[1])' is not a UUID") }
                switch parts[0] {
                case "blob": return .blob(uuid)
                case "snapshot": return .snapshot(uuid)
                default: return .upload(uuid)
                }
            case ("upload", 3):
                try Names.checkName(parts[1], "namespace")
                try Names.checkName(parts[2], "artifact name")
                return .uploadArtifact(namespace: parts[1], name: parts[2])
            case ("label", 2):
                try Names.checkName(parts[1], "label name")
                return .label(namespace: nil, name: parts[1])
            case ("label", 3):
                try Names.checkName(parts[1], "namespace")
                try Names.checkName(parts[2], "label name")
                return .label(namespace: parts[1], name: parts[2])
            default:
                throw .invalid("disk base '\(text)' is not a form sfnode knows: \(why)")
            }
        }
        if lower.hasPrefix("label:") {
            let name = String(text.dropFirst(6))
            try Names.checkName(name, "label name")
            return .label(namespace: nil, name: name)
        }
        if text.hasPrefix("/") { throw .invalid("disk base '\(text)' is a path on the node, which users may not name: \(why)") }
        // A short name: letters, digits and . _ - with one ':' (debian:12, ubuntu:22.04).
        let shortName = text.split(separator: ":").count == 2 && text.unicodeScalars.allSatisfy {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || ":._-".unicodeScalars.contains($0))
        }
        guard shortName else { throw .invalid("disk base '\(text)' is not a form sfnode knows: \(why)") }
        let base = imageDownloadURL.hasSuffix("/") ? String(imageDownloadURL.dropLast()) : imageDownloadURL
        return .url("\(base)/\(text)/latest.qcow2")
    }

    /// Parses a base the agent finds stored: what ``parse(_:imageDownloadURL:)`` accepts, plus an
    /// absolute path to a file on the node (which only an operator or a test can have stored).
    public static func parseStored(_ text: String, imageDownloadURL: String) throws(ControlError) -> ImageReference {
        if text.hasPrefix("/") { return .localPath(text) }
        return try parse(text, imageDownloadURL: imageDownloadURL)
    }
}

/// Which images a namespace may boot and see: the one rule the API applies when an instance is
/// created and the agent applies again before it boots one, so a base written into the store by
/// other means gets no further.
///
/// A namespace sees its own artifacts and the shared ones (only `system` shares); `system` sees
/// everything. A blob is seen through what holds it: an artifact version or an instance disk the
/// namespace sees, or a blob built on it that it sees. What a namespace cannot see is not found,
/// never forbidden, so another namespace's private image looks exactly like a missing one.
public struct ImageAccess: Sendable {
    let records: any BlobRecords
    let instanceNamespace: @Sendable (UUID) async throws -> String?
    let trustingNamespaces: @Sendable (String) async throws -> [String]

    /// - Parameters:
    ///   - records: the blob and artifact records.
    ///   - instanceNamespace: the namespace of an instance, nil when there is none (an instance's
    ///     disks let its namespace see their blobs).
    ///   - trustingNamespaces: the namespaces that trust a namespace (their images are its to see).
    public init(
        records: any BlobRecords, instanceNamespace: @escaping @Sendable (UUID) async throws -> String?,
        trustingNamespaces: @escaping @Sendable (String) async throws -> [String] = { _ in [] }
    ) {
        self.records = records
        self.instanceNamespace = instanceNamespace
        self.trustingNamespaces = trustingNamespaces
    }

    /// The rule over a store that keeps blob records, and (SQLStore does) instances and
    /// namespaces' trusts: a store without them lets no instance vouch for a blob and no namespace
    /// trust another.
    public init(store records: any BlobRecords) {
        let instances = records as? any NodeStore
        let auth = records as? any AuthRecords
        self.init(
            records: records,
            instanceNamespace: { uuid in
                guard let instances else { return nil }
                do {
                    return try await instances.instance(uuid: uuid).namespace
                } catch StoreError.notFound {
                    return nil
                }
            },
            trustingNamespaces: { namespace in try await auth?.namespacesTrusting(namespace) ?? [] })
    }

    /// How far ``canSee(blob:namespace:)`` follows blobs built on blobs; real chains are 1 or 2 long.
    static let holderDepth = 4

    /// Which artifacts one namespace sees: its own, the shared ones, those of the namespaces that
    /// trust it, or all of them for `system`.
    public struct Visibility: Sendable {
        let namespace: String
        let trustedBy: Set<String>

        /// Whether the namespace sees `artifact`.
        public func sees(_ artifact: Artifact) -> Bool {
            namespace == Namespace.system || artifact.namespace == namespace || artifact.shared || trustedBy.contains(artifact.namespace)
        }
    }

    /// What `namespace` sees, read once for a listing or a lookup.
    public func visibility(for namespace: String) async throws -> Visibility {
        Visibility(namespace: namespace, trustedBy: namespace == Namespace.system ? [] : Set(try await trustingNamespaces(namespace)))
    }

    /// Whether `namespace` sees the artifact (see ``Visibility``).
    public func sees(_ artifact: Artifact, namespace: String) async throws -> Bool {
        try await visibility(for: namespace).sees(artifact)
    }

    /// The blob a disk base of an instance in `namespace` boots from, with Shaken Fist's 404
    /// messages for what is missing or not the namespace's to see. Nil for a URL (its artifact is
    /// found or made when it is fetched, see ``urlArtifact(_:namespace:)``) and for a path on the
    /// node (which only an operator can have stored).
    public func blob(for reference: ImageReference, namespace: String) async throws -> Blob? {
        switch reference {
        case .url, .localPath:
            return nil
        case .upload(let uuid):
            throw ControlError.invalid(
                "disk base sf://upload/\(uuid.lowercasedString) is an upload session: make it an artifact first (sfnode artifact upload NAME FILE) and use sf://upload/NAMESPACE/NAME")
        case .blob(let uuid):
            guard try await canSee(blob: uuid, namespace: namespace) else { throw ControlError.notFound("blob not found") }
            return try await records.blob(uuid: uuid)
        case .label(nil, let name):
            // The namespace's own label first, then the one system shares (Shaken Fist's label:NAME).
            var label = try await records.artifact(type: .label, name: name, namespace: namespace)
            if label == nil, namespace != Namespace.system,
                let shared = try await records.artifact(type: .label, name: name, namespace: Namespace.system), shared.shared
            {
                label = shared
            }
            return try await newestBlob(of: label, namespace: namespace, unresolved: "Could not resolve label \(name) to a blob")
        case .label(let owner?, let name):
            let label = try await records.artifact(type: .label, name: name, namespace: owner)
            return try await newestBlob(of: label, namespace: namespace, unresolved: "Could not resolve artifact to a blob")
        case .uploadArtifact(let owner, let name):
            let artifact = try await records.artifact(type: .image, name: name, namespace: owner)
            return try await newestBlob(of: artifact, namespace: namespace, unresolved: "Could not resolve artifact to a blob")
        case .snapshot(let uuid):
            // Only a snapshot artifact: sf://snapshot/ must not become a way to name any artifact.
            var artifact: Artifact?
            do {
                artifact = try await records.artifact(uuid: uuid)
            } catch StoreError.notFound {
                artifact = nil
            }
            return try await newestBlob(
                of: artifact?.type == .snapshot ? artifact : nil, namespace: namespace, unresolved: "Could not resolve artifact to a blob")
        }
    }

    /// The image artifact caching `url` for instances of `namespace`: the namespace's own, else
    /// the one `system` shares, else nil (the caller makes the namespace's own).
    public func urlArtifact(_ url: String, namespace: String) async throws -> Artifact? {
        if let own = try await records.artifact(type: .image, name: url, namespace: namespace) { return own }
        guard let shared = try await records.artifact(type: .image, name: url, namespace: Namespace.system), shared.shared else { return nil }
        return shared
    }

    /// Whether `namespace` sees the blob: always for `system`; otherwise when an artifact version,
    /// an instance disk or a blob built on it is the namespace's to see. A missing blob is not seen.
    public func canSee(blob uuid: UUID, namespace: String) async throws -> Bool {
        if namespace == Namespace.system { return (try? await records.blob(uuid: uuid)) != nil }
        var visited: Set<UUID> = []
        return try await canSee(blob: uuid, namespace: namespace, depth: Self.holderDepth, visited: &visited)
    }

    /// Whether `namespace` sees what holds `reference`: the artifact, the instance, or the blob.
    public func canSee(holderOf reference: BlobReference, namespace: String) async throws -> Bool {
        if namespace == Namespace.system { return true }
        var visited: Set<UUID> = [reference.blobUUID]
        return try await seesHolder(reference, namespace: namespace, depth: Self.holderDepth, visited: &visited)
    }

    private func canSee(blob uuid: UUID, namespace: String, depth: Int, visited: inout Set<UUID>) async throws -> Bool {
        guard depth > 0, visited.insert(uuid).inserted else { return false }
        let holders = try await records.references(to: uuid)
        // Artifacts first: one row each, and the usual way a namespace holds a blob.
        for reference in holders.sorted(by: { ($0.holderType == "artifact" ? 0 : 1) < ($1.holderType == "artifact" ? 0 : 1) }) {
            if try await seesHolder(reference, namespace: namespace, depth: depth, visited: &visited) { return true }
        }
        return false
    }

    private func seesHolder(_ reference: BlobReference, namespace: String, depth: Int, visited: inout Set<UUID>) async throws -> Bool {
        guard let holder = UUID(uuidString: reference.holderUUID) else { return false }
        switch reference.holderType {
        case "artifact":
            guard let artifact = try? await records.artifact(uuid: holder) else { return false }
            guard artifact.state != .deleted else { return false }
            return try await sees(artifact, namespace: namespace)
        case "instance":
            return try await instanceNamespace(holder) == namespace
        case "blob":
            return try await canSee(blob: holder, namespace: namespace, depth: depth - 1, visited: &visited)
        default:
            return false
        }
    }

    private func newestBlob(of artifact: Artifact?, namespace: String, unresolved: String) async throws -> Blob {
        guard let artifact, try await sees(artifact, namespace: namespace) else { throw ControlError.notFound("artifact not found") }
        guard artifact.state == .created else { throw ControlError.notFound("artifact not ready (state=\(artifact.state.rawValue))") }
        guard let newest = try await records.artifactVersions(artifactUUID: artifact.uuid).last else { throw ControlError.notFound(unresolved) }
        return try await records.blob(uuid: newest.blobUUID)
    }
}

/// URLs as shown to anyone but the owner of what names them: credentials (`user:pass@`) and the
/// query (presigned tokens) become `redacted`, and any fragment goes.
public enum URLRedaction {
    /// `url` with its userinfo and query redacted; text that is not a URL is returned as it is.
    public static func redacted(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        var rest = String(url[schemeEnd.upperBound...])
        var query = ""
        if let cut = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            if rest[cut] == "?" { query = "?redacted" }
            rest = String(rest[..<cut])
        }
        // The last '@' before the query, wherever it is: a lenient parser may read a '/' inside a
        // password as part of it, so a path holding '@' is redacted too rather than risk a leak.
        if let at = rest.lastIndex(of: "@") { rest = "redacted@" + String(rest[rest.index(after: at)...]) }
        return String(url[..<schemeEnd.upperBound]) + rest + query
    }

    /// Whether redacting changes `url`: it carries credentials or a query.
    public static func hasSecrets(_ url: String) -> Bool { redacted(url) != url }
}
