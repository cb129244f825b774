import SFStore

/// Writes the API's JSON answers straight into bytes.
///
/// Foundation's `JSONEncoder` builds an intermediate tree through existential containers; for an
/// instance that was half of the CPU time of `GET /instances/<uuid>` (BENCHMARKS.md (j)). The
/// views know their shapes, so they write them directly: members in the order written, strings
/// escaped as RFC 8259 requires (quote, backslash and control characters; `/` and non-ASCII text
/// left as they are, as `JSONEncoder` with `.withoutEscapingSlashes` writes them), and numbers as
/// Swift prints them, a whole Double without its `.0` (`JSONEncoder`'s form too).
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    /// Whether the object or array being written needs a comma before its next element.
    private var needsComma = false

    init() {
        // An instance is about 700 bytes; one allocation serves most answers.
        bytes.reserveCapacity(1024)
    }

    /// The JSON text of one value.
    static func encode(_ value: some WireValue) -> [UInt8] {
        var writer = JSONWriter()
        value.write(to: &writer)
        return writer.bytes
    }

    /// An object whose members `members` writes with ``put(_:_:)``.
    mutating func object(_ members: (inout JSONWriter) -> Void) {
        let outer = needsComma
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
        members(&self)
        bytes.append(UInt8(ascii: "}"))
        needsComma = outer
    }

    /// One member of the object being written; nil is written as `null`, never left out.
    mutating func put(_ name: String, _ value: some WireValue) {
        separate()
        string(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
        value.write(to: &self)
        needsComma = true
    }

    /// An array of `elements`.
    mutating func array<Elements: Sequence>(_ elements: Elements) where Elements.Element: WireValue {
        let outer = needsComma
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        for element in elements {
            separate()
            element.write(to: &self)
            needsComma = true
        }
        bytes.append(UInt8(ascii: "]"))
        needsComma = outer
    }

    /// JSON text written elsewhere, as it is.
    mutating func raw(_ text: [UInt8]) { bytes.append(contentsOf: text) }

    mutating func null() { bytes.append(contentsOf: "null".utf8) }

    mutating func bool(_ value: Bool) { bytes.append(contentsOf: (value ? "true" : "false").utf8) }

    mutating func integer(_ value: some BinaryInteger) { bytes.append(contentsOf: String(value).utf8) }

    /// A number; JSON has no NaN or infinity, so those (never produced by sfnode) are `null`.
    mutating func number(_ value: Double) {
        guard value.isFinite else { return null() }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        bytes.append(contentsOf: text.utf8)
    }

    mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for (index, byte) in utf8.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                appendEscaped(byte)
                start = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func appendEscaped(_ byte: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(byte)
        case 0x08: bytes.append(UInt8(ascii: "b"))
        case 0x0C: bytes.append(UInt8(ascii: "f"))
        case 0x0A: bytes.append(UInt8(ascii: "n"))
        case 0x0D: bytes.append(UInt8(ascii: "r"))
        case 0x09: bytes.append(UInt8(ascii: "t"))
        default:
            let hex = Array("0123456789abcdef".utf8)
            bytes.append(contentsOf: [UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
        }
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }
}

/// A value the API writes as JSON: the views, and the Swift and store values they are made of.
protocol WireValue {
    func write(to json: inout JSONWriter)
}

extension String: WireValue {
    func write(to json: inout JSONWriter) { json.string(self) }
}

extension Bool: WireValue {
    func write(to json: inout JSONWriter) { json.bool(self) }
}

extension Int: WireValue {
    func write(to json: inout JSONWriter) { json.integer(self) }
}

extension Int64: WireValue {
    func write(to json: inout JSONWriter) { json.integer(self) }
}

extension Double: WireValue {
    func write(to json: inout JSONWriter) { json.number(self) }
}

extension Optional: WireValue where Wrapped: WireValue {
    func write(to json: inout JSONWriter) {
        if let self { self.write(to: &json) } else { json.null() }
    }
}

extension Array: WireValue where Element: WireValue {
    func write(to json: inout JSONWriter) { json.array(self) }
}

extension Dictionary: WireValue where Key == String, Value: WireValue {
    func write(to json: inout JSONWriter) {
        json.object { json in
            for (name, value) in self { json.put(name, value) }
        }
    }
}

/// JSON text already written, put in verbatim.
struct RawJSON: WireValue, Sendable {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func write(to json: inout JSONWriter) { json.raw(bytes) }
}

extension JSONValue: WireValue {
    func write(to json: inout JSONWriter) {
        switch self {
        case .null: json.null()
        case .bool(let value): json.bool(value)
        case .number(let value): json.number(value)
        case .string(let value): json.string(value)
        case .array(let values): json.array(values)
        case .object(let members): members.write(to: &json)
        }
    }
}
