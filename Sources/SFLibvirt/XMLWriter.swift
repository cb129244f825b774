/// Builds an XML document in which every attribute value and text node is escaped.
///
/// Domain XML is the one place where strings from users (instance names, paths) meet libvirt's
/// parser. Templating them into markup lets a name such as `a'/><devices>` add devices to a guest;
/// the writer makes that impossible by construction, because callers never write markup themselves:
/// element and attribute names come from sfnode's own code, values always go through ``escape(_:)``.
public struct XMLWriter: Sendable {
    private var output = ""
    private var indentation = 0

    /// An empty document.
    public init() {}

    /// The document written so far.
    public var text: String { output }

    /// Escapes `&`, `<`, `>`, `"` and `'`, so that the result is data in both attribute values
    /// (whichever quote delimits them) and text nodes.
    public static func escape(_ value: String) -> String {
        var result = ""
        result.reserveCapacity(value.utf8.count)
        for character in value.unicodeScalars {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&apos;"
            default: result.unicodeScalars.append(character)
            }
        }
        return result
    }

    /// Whether XML 1.0 can carry `value` at all: it has no character that escaping cannot save
    /// (C0 controls other than tab, newline and carriage return; U+FFFE; U+FFFF).
    public static func isRepresentable(_ value: String) -> Bool {
        value.unicodeScalars.allSatisfy { scalar in
            switch scalar.value {
            case 0x09, 0x0A, 0x0D: return true
            case 0x00..<0x20, 0xFFFE, 0xFFFF: return false
            default: return true
            }
        }
    }

    /// Writes an element with children produced by `body`.
    public mutating func element(
        _ name: StaticString, _ attributes: KeyValuePairs<StaticString, String> = [:],
        body: (inout XMLWriter) -> Void
    ) {
        line("<\(name)\(Self.render(attributes))>")
        indentation += 1
        body(&self)
        indentation -= 1
        line("</\(name)>")
    }

    /// Writes an element whose only content is the text `value`.
    public mutating func element(
        _ name: StaticString, _ attributes: KeyValuePairs<StaticString, String> = [:], text value: String
    ) {
        line("<\(name)\(Self.render(attributes))>\(Self.escape(value))</\(name)>")
    }

    /// Writes an empty element.
    public mutating func element(_ name: StaticString, _ attributes: KeyValuePairs<StaticString, String> = [:]) {
        line("<\(name)\(Self.render(attributes))/>")
    }

    private static func render(_ attributes: KeyValuePairs<StaticString, String>) -> String {
        attributes.map { " \($0.key)='\(escape($0.value))'" }.joined()
    }

    private mutating func line(_ content: String) {
        output += String(repeating: "  ", count: indentation) + content + "\n"
    }
}
