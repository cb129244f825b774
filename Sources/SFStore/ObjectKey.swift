import Foundation

/// The types of object that have events and metadata.
public enum ObjectType: String, Sendable, CaseIterable {
    case instance, network, interface, node, blob, artifact, namespace
}

/// One object whose events and metadata the store keeps: its type and its id, which is the
/// lower-case UUID, or the name for a namespace or a node (they have no UUID).
public struct ObjectKey: Sendable, Hashable, CustomStringConvertible {
    public let type: ObjectType
    /// The id the store files the object's rows under.
    public let id: String

    /// An object known by its UUID.
    public init(_ type: ObjectType, _ uuid: UUID) {
        self.type = type
        self.id = uuid.lowercasedString
    }

    init(_ type: ObjectType, name: String) {
        self.type = type
        self.id = name
    }

    /// A namespace, by name.
    public static func namespace(_ name: String) -> ObjectKey { ObjectKey(.namespace, name: name) }
    /// A node, by name.
    public static func node(_ name: String) -> ObjectKey { ObjectKey(.node, name: name) }

    public var description: String { "\(type.rawValue) \(id)" }

    /// The key as the store files it: `<type>:<id>` (`interface:<uuid>`), the one spelling of a
    /// job's object key, an address's or MAC's owner and a host lock's name.
    public var text: String { Self.text(type, id) }

    /// `<type>:<id>` for an id read from a row, as ``text`` spells it.
    public static func text(_ type: ObjectType, _ id: String) -> String { "\(type.rawValue):\(id)" }

    /// The key `text` spells, or nil when it is not one.
    public init?(text: String) {
        guard let colon = text.firstIndex(of: ":"), let type = ObjectType(rawValue: String(text[..<colon])) else { return nil }
        let id = String(text[text.index(after: colon)...])
        guard !id.isEmpty else { return nil }
        if type == .namespace || type == .node {
            self.init(type, name: id)
        } else {
            guard let uuid = UUID(uuidString: id) else { return nil }
            self.init(type, uuid)
        }
    }

    /// An interface, whose key owns its address and MAC.
    public static func interface(_ uuid: UUID) -> ObjectKey { ObjectKey(.interface, uuid) }
}
