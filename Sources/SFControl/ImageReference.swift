import Foundation

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
        case .localPath(let path): return path
        }
    }

    /// Parses a disk's `base`. A short name such as `debian:11` becomes
    /// `<imageDownloadURL>/debian:11/latest.qcow2`.
    public static func parse(_ text: String, imageDownloadURL: String) throws(ControlError) -> ImageReference {
        let why = "use an http(s) URL, sf://blob/UUID, sf://upload/NAMESPACE/NAME, label:NAME, sf://label/[NAMESPACE/]NAME or a short name such as debian:12"
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
            case ("blob", 2), ("upload", 2):
                guard let uuid = UUID(uuidString: parts[1]) else { throw .invalid("disk base '\(text)': '\(parts[1])' is not a UUID") }
                return parts[0] == "blob" ? .blob(uuid) : .upload(uuid)
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
