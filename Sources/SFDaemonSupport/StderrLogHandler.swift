#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import SFSystem

/// A swift-log handler that prints one line per entry to standard error:
/// `2026-08-07T10:00:00.123Z info sfnode.libvirt: domain started instance.uuid=… [SFLibvirt]`.
///
/// Metadata keys keep their dotted form and are sorted, so lines diff cleanly. When standard error
/// is a journal stream, each line can start with the `<N>` priority prefix that journald reads
/// (sd-daemon's convention) and then carries no timestamp, as journald adds its own.
public struct StderrLogHandler: LogHandler {
    /// The logger's label.
    public let label: String
    /// Whether lines start with `<priority>` for journald instead of a timestamp.
    public let priorityPrefix: Bool

    /// Handler metadata, the lowest-precedence layer.
    public var metadata: Logger.Metadata = [:]
    /// The least severe level this handler is asked to log.
    public var logLevel: Logger.Level
    /// Task-local context, merged over handler metadata.
    public var metadataProvider: Logger.MetadataProvider?

    /// A handler for logger `label`.
    public init(
        label: String, logLevel: Logger.Level = .info, priorityPrefix: Bool = false,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.label = label
        self.logLevel = logLevel
        self.priorityPrefix = priorityPrefix
        self.metadataProvider = metadataProvider
    }

    /// Handler metadata for `key`.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Writes `event` as one line.
    public func log(event: LogEvent) {
        let line = format(event, now: Date())
        // One write per line, so lines from different threads never interleave mid-line.
        _ = Array(line.utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    /// The line `event` becomes, newline included.
    public func format(_ event: LogEvent, now: Date) -> String {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let callSite = event.metadata { merged.merge(callSite) { _, new in new } }
        if let error = event.error { merged["error"] = "\(error)" }
        var line =
            priorityPrefix
            ? "<\(event.level.syslogPriority)>\(event.level) \(label): \(event.message)"
            : "\(Self.timestamp(now)) \(event.level) \(label): \(event.message)"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " \(key)=\(Self.quoted(value.description))"
        }
        line += " [\(event.source)]"
        // A message spanning lines would read as several entries; keep one entry per line.
        return line.replacingOccurrences(of: "\n", with: "\\n") + "\n"
    }

    /// Values with spaces, quotes or equals signs are quoted so `key=value` pairs stay parseable.
    private static func quoted(_ value: String) -> String {
        if !value.isEmpty && !value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// ISO 8601 with milliseconds, in UTC (``UTCTime``: Foundation's formatters load ICU's data
    /// into every process that logs).
    private static func timestamp(_ date: Date) -> String {
        UTCTime.iso8601(date, milliseconds: true)
    }
}
