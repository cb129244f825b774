import ArgumentParser
import Foundation
import Logging
import SFAgent
import SFControl
import SFDaemonSupport
import SFStore

/// The options every user command takes: the configuration (which names the store), the
/// namespace, and `--json` for scripts.
struct ClientOptions: ParsableArguments {
    @Option(help: "The configuration file (default: $SFNODE_CONFIG, else /etc/sfnode/agent.json).")
    var config: String?

    @Option(help: "The namespace (default: system, the admin namespace).")
    var namespace: String?

    @Flag(help: "Print JSON instead of text, for scripts.")
    var json = false

    /// The use cases over the store the configuration names.
    func control() throws -> Control {
        let (store, settings) = try storeAndSettings()
        return Control(store: store, settings: settings.controlSettings, logger: Self.logger)
    }

    /// The store the configuration names, with the configuration.
    func storeAndSettings() throws -> (SQLStore, NodeConfiguration) {
        let settings = try NodeConfiguration.load(commandLinePath: config)
        guard settings.storeURL != nil || FileManager.default.fileExists(atPath: settings.storePath) else {
            throw ValidationError(
                "no store at \(settings.storePath): start sfnode first (scripts/setup-host && swift run -c release sfnode), or point --config or SFNODE_STORE_PATH at its store")
        }
        return (try openStore(settings: settings, logger: Self.logger), settings)
    }

    /// The command line's own logger: warnings and worse, as the commands print what matters.
    static var logger: Logger {
        var logger = Logger(label: "sfnode.client")
        logger.logLevel = .warning
        return logger
    }
}

extension NodeConfiguration {
    /// What the use cases need of the settings.
    var controlSettings: ControlSettings {
        var control = ControlSettings()
        control.cpuOvercommit = cpuOvercommit
        control.memoryOvercommit = memoryOvercommit
        control.imageDownloadURL = imageDownloadURL
        control.storagePath = storagePath
        control.nodeName = nodeName
        control.quotas = namespaceQuotas
        if let prefix = namePrefix { control.networkNamespacePrefix = prefix }
        control.pingsAtOnce = pingsAtOnce
        control.networkDNSEntries = networkDNSEntries
        control.checkInTimeout = .seconds(nodeMissingSeconds)
        return control
    }
}

/// How a command prints: JSON for scripts, aligned `key: value` lines for people.
struct Output {
    let json: Bool

    /// Text a remote party controls (an image server's reason phrase, an HTML page's bytes in an error,
    /// qemu-img's messages, a guest's console) made harmless for a terminal: every control character
    /// (C0, DEL and C1, such as ESC and CSI, which drive the terminal) becomes `?`, except tab and, with
    /// `keepingLines`, newline and carriage return. Only for terminals: piped output stays exact.
    static func terminalSafe(_ text: String, keepingLines: Bool = false) -> String {
        guard isatty(STDOUT_FILENO) == 1 else { return text }
        return safe(text, keepingLines: keepingLines)
    }

    /// ``terminalSafe(_:keepingLines:)`` whatever the output is (its testable core).
    static func safe(_ text: String, keepingLines: Bool = false) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            let kept = scalar == "\t" || (keepingLines && (scalar == "\n" || scalar == "\r"))
            let control = scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value)
            scalars.append(control && !kept ? "?" : scalar)
        }
        return String(scalars)
    }

    /// Prints `value` as JSON (sorted keys, so scripts and diffs see a stable order), with UUIDs in
    /// lowercase as Shaken Fist and the store write them (Foundation's encoder writes uppercase).
    func printJSON(_ value: some Encodable) throws {
        let encoder = Self.encoder(pretty: true)
        let decoded = try JSONDecoder().decode(JSONValue.self, from: try encoder.encode(value))
        print(String(decoding: try encoder.encode(Self.lowercasingUUIDs(decoded)), as: UTF8.self))
    }

    /// The encoder of every JSON sfnode prints: sorted keys, ISO 8601 dates; `pretty` spreads it
    /// over lines, else it is one line (as `events --follow --json` prints each event).
    static func encoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    static func lowercasingUUIDs(_ value: JSONValue) -> JSONValue {
        switch value {
        case .string(let text) where UUID(uuidString: text) != nil: return .string(text.lowercased())
        case .array(let items): return .array(items.map(lowercasingUUIDs))
        case .object(let fields): return .object(fields.mapValues(lowercasingUUIDs))
        default: return value
        }
    }

    /// Prints `fields` as aligned `key: value` lines.
    func printFields(_ fields: [(String, String)]) {
        let width = fields.map(\.0.count).max() ?? 0
        for (key, value) in fields { print(key.padding(toLength: width, withPad: " ", startingAt: 0) + " : " + Self.terminalSafe(value)) }
    }

    /// Prints rows as a table with a header, columns padded to their widest cell.
    func printTable(_ header: [String], _ rows: [[String]]) {
        let rows = rows.map { $0.map { Self.terminalSafe($0) } }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces))
        }
    }
}

/// Shows how far a long operation is: a bar redrawn in place on a terminal, and a plain line per
/// change when the output is a pipe or a file (so logs and scripts get readable text).
final class ProgressDisplay {
    private let isTerminal = isatty(STDOUT_FILENO) == 1
    private var lastLine = ""
    private var drawn = false

    /// Shows `message`, with a bar when `fraction` (0...1) is known.
    func update(_ message: String, fraction: Double? = nil) {
        let line: String
        if let fraction {
            let clamped = min(max(fraction, 0), 1)
            let filled = Int(clamped * 30)
            line = "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: 30 - filled) + "] "
                + String(format: "%3.0f%% ", clamped * 100) + message
        } else {
            line = message
        }
        guard line != lastLine else { return }
        lastLine = line
        if isTerminal {
            // \r and clear-to-end-of-line: redraw in place.
            FileHandle.standardOutput.write(Data(("\r\u{1B}[K" + line.prefix(120)).utf8))
            drawn = true
        } else {
            print(line)
        }
    }

    /// Ends the bar's line on a terminal.
    func finish() {
        if isTerminal && drawn { print("") }
        drawn = false
    }
}

/// Converts a text UUID argument, naming it when it is not one.
func parseUUID(_ text: String, _ what: String) throws -> UUID {
    guard let uuid = UUID(uuidString: text) else { throw ValidationError("\(what) '\(text)' is not a UUID") }
    return uuid
}


extension Optional where Wrapped: CustomStringConvertible {
    /// The value as text, or `none`.
    var orNone: String { map(\.description) ?? "none" }
}
