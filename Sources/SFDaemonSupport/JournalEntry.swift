import Logging

/// One journal entry in journald's native protocol: `KEY=value\n` per field, or
/// `KEY\n<64-bit little-endian length><bytes>\n` for a value that a newline would otherwise end.
///
/// Fields keep their order and may repeat (journald stores a repeated field as several values).
public struct JournalEntry: Sendable, Equatable {
    /// The fields in the order they are written.
    public private(set) var fields: [(name: String, value: [UInt8])] = []

    /// An empty entry.
    public init() {}

    /// Appends a field. `name` must already be a valid journal field name (see ``JournalFieldName``).
    public mutating func append(_ name: String, _ value: String) {
        fields.append((name, Array(value.utf8)))
    }

    /// Appends a field with a raw byte value.
    public mutating func append(_ name: String, bytes: [UInt8]) {
        fields.append((name, bytes))
    }

    /// The first value of field `name`, as text.
    public func value(of name: String) -> String? {
        fields.first { $0.name == name }.map { String(decoding: $0.value, as: UTF8.self) }
    }

    /// The serialised datagram.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(fields.reduce(0) { $0 + $1.name.utf8.count + $1.value.count + 10 })
        for field in fields {
            bytes.append(contentsOf: field.name.utf8)
            if Self.needsBinaryFraming(field.value) {
                bytes.append(UInt8(ascii: "\n"))
                withUnsafeBytes(of: UInt64(field.value.count).littleEndian) { bytes.append(contentsOf: $0) }
                bytes.append(contentsOf: field.value)
            } else {
                bytes.append(UInt8(ascii: "="))
                bytes.append(contentsOf: field.value)
            }
            bytes.append(UInt8(ascii: "\n"))
        }
        return bytes
    }

    /// A newline would end a `KEY=value` field early; other control bytes (NUL included) are framed
    /// too so journald stores them exactly rather than relying on how it treats them in text form.
    static func needsBinaryFraming(_ value: [UInt8]) -> Bool {
        value.contains { $0 < 0x20 && $0 != UInt8(ascii: "\t") || $0 == 0x7f }
    }

    /// Parses a datagram in the native protocol, as journald does: the inverse of ``encoded``.
    /// Returns nil for malformed input. Used by tests and by anyone reading a captured entry.
    public static func decode(_ bytes: [UInt8]) -> JournalEntry? {
        var entry = JournalEntry()
        var index = 0
        while index < bytes.count {
            guard let end = bytes[index...].firstIndex(where: { $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\n") })
            else { return nil }
            let name = String(decoding: bytes[index..<end], as: UTF8.self)
            if bytes[end] == UInt8(ascii: "=") {
                guard let lineEnd = bytes[(end + 1)...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
                entry.append(name, bytes: Array(bytes[(end + 1)..<lineEnd]))
                index = lineEnd + 1
            } else {
                let lengthStart = end + 1
                guard bytes.count >= lengthStart + 8 else { return nil }
                var length: UInt64 = 0
                for (shift, byte) in bytes[lengthStart..<(lengthStart + 8)].enumerated() {
                    length |= UInt64(byte) << (8 * UInt64(shift))
                }
                let valueStart = lengthStart + 8
                guard length <= UInt64(bytes.count - valueStart) else { return nil }
                let valueEnd = valueStart + Int(length)
                guard valueEnd < bytes.count, bytes[valueEnd] == UInt8(ascii: "\n") else { return nil }
                entry.append(name, bytes: Array(bytes[valueStart..<valueEnd]))
                index = valueEnd + 1
            }
        }
        return entry
    }

    public static func == (lhs: JournalEntry, rhs: JournalEntry) -> Bool {
        lhs.fields.count == rhs.fields.count
            && zip(lhs.fields, rhs.fields).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}

/// Journal field names: upper-case ASCII letters, digits and `_`, not starting with a digit or `_`
/// (a leading `_` marks fields only journald itself may set), at most 64 characters.
public enum JournalFieldName {
    /// The longest field name journald accepts.
    public static let maximumLength = 64

    /// The fields ``JournaldLogHandler`` writes itself. A metadata key that maps onto one of these is
    /// given the prefix `X_`, so metadata can never pose as the message, its priority or its origin.
    public static let reserved: Set<String> = [
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "ERRNO", "ERROR",
        "LOGGER_LABEL", "LOGGER_SOURCE",
    ]

    /// Whether `name` is a field name journald accepts from a client.
    public static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= maximumLength else { return false }
        guard isUpper(first) else { return false }
        return bytes.allSatisfy { isUpper($0) || isDigit($0) || $0 == UInt8(ascii: "_") }
    }

    /// Maps a swift-log metadata key to a field name, deterministically:
    ///
    /// 1. ASCII letters are upper-cased, digits kept, every other byte (`.`, `-`, spaces, non-ASCII)
    ///    becomes `_`: `instance.uuid` → `INSTANCE_UUID`.
    /// 2. A name that is empty or would start with a digit or `_` gets the prefix `X`
    ///    (`_private` → `X_PRIVATE`, `9p` → `X9P`); so does one that collides with a ``reserved``
    ///    field, with `X_` (`message` → `X_MESSAGE`).
    /// 3. A name longer than 64 characters keeps its first 55 and ends in `_` and 8 hex digits of a
    ///    hash of the whole original key, so two long keys that differ only at the end stay apart.
    ///
    /// Two distinct keys can still map to one name (`a.b` and `a_b`); journald then keeps both values.
    public static func fromMetadataKey(_ key: String) -> String {
        var bytes: [UInt8] = key.utf8.map { byte in
            if isUpper(byte) || isDigit(byte) { return byte }
            if byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") { return byte - 32 }
            return UInt8(ascii: "_")
        }
        if let first = bytes.first, isUpper(first) {
            if reserved.contains(String(decoding: bytes, as: UTF8.self)) { bytes = Array("X_".utf8) + bytes }
        } else {
            bytes = [UInt8(ascii: "X")] + bytes
        }
        if bytes.count > maximumLength {
            let hash = String(fnv1a(Array(key.utf8)), radix: 16, uppercase: true)
            let suffix = "_" + String(repeating: "0", count: 8 - hash.count) + hash
            bytes = Array(bytes.prefix(maximumLength - suffix.utf8.count)) + Array(suffix.utf8)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func isUpper(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") }
    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    /// 32-bit FNV-1a: stable across runs and platforms, unlike Swift's seeded `Hasher`.
    private static func fnv1a(_ bytes: [UInt8]) -> UInt32 {
        bytes.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 }
    }
}

extension Logger.Level {
    /// The syslog priority journald stores in `PRIORITY` (0 emerg … 7 debug). swift-log has no
    /// emergency or alert level, and its trace has no syslog counterpart below debug.
    public var syslogPriority: Int {
        switch self {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}
