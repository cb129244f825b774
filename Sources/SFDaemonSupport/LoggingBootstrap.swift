#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// Chooses where sfnode's logs go and installs the matching handler with swift-log.
public enum LoggingBootstrap {
    /// A choice of log destination.
    public enum Destination: Sendable, Equatable {
        /// journald's native socket at this path: structured fields survive.
        case journal(socketPath: String)
        /// Standard error; `priorityPrefix` when it is a journal stream whose socket is missing.
        case standardError(priorityPrefix: Bool)
    }

    /// The journal when running under systemd, else standard error.
    ///
    /// Running under systemd means: `JOURNAL_STREAM` (`<device>:<inode>`, set by systemd when it
    /// connects standard output or error to the journal) names the file standard error is, or
    /// `INVOCATION_ID` (set by systemd for every unit it starts) is present. The journal is used
    /// only when its socket exists; a `JOURNAL_STREAM` match without it still gets `<N>`
    /// priority prefixes on standard error. `JOURNAL_STREAM` alone is not trusted when it does not
    /// match, because children inherit it after their standard error was redirected elsewhere.
    public static func destination(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        journalSocketPath: String = JournalConnection.defaultSocketPath,
        standardErrorIdentity: (device: UInt64, inode: UInt64)? = standardErrorIdentity()
    ) -> Destination {
        let streamMatches = journalStreamMatches(environment["JOURNAL_STREAM"], standardErrorIdentity)
        let underSystemd = streamMatches || !(environment["INVOCATION_ID"] ?? "").isEmpty
        if underSystemd && isSocket(journalSocketPath) { return .journal(socketPath: journalSocketPath) }
        return .standardError(priorityPrefix: streamMatches)
    }

    /// The device and inode of standard error, as `JOURNAL_STREAM` spells them; nil if it is closed.
    public static func standardErrorIdentity() -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard fstat(2, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// A handler factory for `destination`: every logger shares one journal connection. Falls back
    /// to standard error if the journal socket cannot even be created.
    public static func makeFactory(
        destination: Destination, level: Logger.Level, identifier: String = "sfnode",
        metadataProvider: Logger.MetadataProvider? = nil
    ) -> @Sendable (String) -> any LogHandler {
        switch destination {
        case .journal(let socketPath):
            if let connection = try? JournalConnection(socketPath: socketPath) {
                return { label in
                    JournaldLogHandler(
                        label: label, identifier: identifier, connection: connection, logLevel: level,
                        metadataProvider: metadataProvider)
                }
            }
            return { label in StderrLogHandler(label: label, logLevel: level, metadataProvider: metadataProvider) }
        case .standardError(let priorityPrefix):
            return { label in
                StderrLogHandler(
                    label: label, logLevel: level, priorityPrefix: priorityPrefix, metadataProvider: metadataProvider)
            }
        }
    }

    /// Installs the handler for this process's situation at `level` and returns the choice made.
    /// swift-log allows one bootstrap per process; call this once, first thing in `main`.
    @discardableResult
    public static func bootstrap(
        level: Logger.Level, identifier: String = "sfnode",
        environment: [String: String] = ProcessInfo.processInfo.environment,
        metadataProvider: Logger.MetadataProvider? = nil
    ) -> Destination {
        let chosen = destination(environment: environment)
        LoggingSystem.bootstrap(
            makeFactory(destination: chosen, level: level, identifier: identifier, metadataProvider: metadataProvider))
        return chosen
    }

    static func journalStreamMatches(_ value: String?, _ identity: (device: UInt64, inode: UInt64)?) -> Bool {
        guard let value, let identity else { return false }
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        return device == identity.device && inode == identity.inode
    }

    private static func isSocket(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK
    }
}
