import Logging
import Synchronization

/// What a logger was given, for tests that check what was said (or that something, such as a
/// password, never was).
public final class RecordedMessages: Sendable {
    private let entries = Mutex<[(message: String, line: String)]>([])

    public init() {}

    func append(message: String, line: String) { entries.withLock { $0.append((message, line)) } }
    /// Every message, alone.
    public var all: [String] { entries.withLock { $0.map(\.message) } }
    /// Every message with its metadata, as one text each.
    public var lines: [String] { entries.withLock { $0.map(\.line) } }
}

/// A log handler that records every message, at every level, with its metadata.
public struct RecordingLogHandler: LogHandler {
    let messages: RecordedMessages
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace

    public init(messages: RecordedMessages) {
        self.messages = messages
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        let all = self.metadata.merging(metadata ?? [:]) { $1 }
        messages.append(message: message.description, line: "\(message) \(all)")
    }
}
