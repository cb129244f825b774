/// Prometheus text exposition (format 0.0.4) for figures read at scrape time: the families
/// collectors write, which a registry of live instruments would have to keep one instrument per
/// domain or per queue state for, and forget again when the domain goes.
public struct MetricsText: Sendable {
    /// The exposition so far, UTF-8.
    public private(set) var bytes: [UInt8] = []

    /// An empty exposition.
    public init() {}

    /// What a family is: its `# TYPE`.
    public enum Kind: String, Sendable {
        case counter, gauge
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Each name once per scrape.
    public mutating func family(_ name: String, _ kind: Kind, help: String) {
        bytes.append(contentsOf: "# HELP \(name) ".utf8)
        for byte in help.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): bytes.append(contentsOf: #"\\"#.utf8)
            case UInt8(ascii: "\n"): bytes.append(contentsOf: #"\n"#.utf8)
            default: bytes.append(byte)
            }
        }
        bytes.append(contentsOf: "\n# TYPE \(name) \(kind.rawValue)\n".utf8)
    }

    /// One unlabelled sample of the current family.
    public mutating func sample(_ name: String, _ value: Double) {
        sample(name, [:], value)
    }

    /// One sample of the current family. Label values are escaped as the format requires (a
    /// domain name is the host's, not sfnode's, so it may hold any character).
    public mutating func sample(_ name: String, _ labels: KeyValuePairs<String, String>, _ value: Double) {
        sample(name, labels: Array(labels), value)
    }

    /// ``sample(_:_:_:)`` with labels made at run time.
    public mutating func sample(_ name: String, labels: [(key: String, value: String)], _ value: Double) {
        bytes.append(contentsOf: name.utf8)
        if !labels.isEmpty {
            bytes.append(UInt8(ascii: "{"))
            for (index, label) in labels.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                bytes.append(contentsOf: label.key.utf8)
                bytes.append(contentsOf: "=\"".utf8)
                for byte in label.value.utf8 {
                    switch byte {
                    case UInt8(ascii: "\\"): bytes.append(contentsOf: #"\\"#.utf8)
                    case UInt8(ascii: "\""): bytes.append(contentsOf: #"\""#.utf8)
                    case UInt8(ascii: "\n"): bytes.append(contentsOf: #"\n"#.utf8)
                    default: bytes.append(byte)
                    }
                }
                bytes.append(UInt8(ascii: "\""))
            }
            bytes.append(UInt8(ascii: "}"))
        }
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: Self.format(value).utf8)
        bytes.append(UInt8(ascii: "\n"))
    }

    /// Appends another exposition (a cached collector's).
    public mutating func append(_ other: MetricsText) {
        bytes.append(contentsOf: other.bytes)
    }

    /// Appends text already in the format (the registry's).
    public mutating func append(bytes other: [UInt8]) {
        bytes.append(contentsOf: other)
    }

    /// A value as the format spells it: integers without a fraction (counters of bytes stay exact
    /// up to 2^53), and `NaN`, `+Inf`, `-Inf`.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 0x1p53 { return String(Int64(value)) }
        return "\(value)"
    }
}
