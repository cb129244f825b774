#if canImport(Glibc)
import Glibc
#endif
import Logging
import SFSystem

/// Where journal entries go: journald's native socket, shared by every handler of a process.
///
/// Entries are sent as libsystemd's `sd_journal_sendv` sends them, without linking libsystemd: one
/// datagram each; an entry too large for a datagram (`EMSGSIZE`/`ENOBUFS`) is written to a sealed
/// memfd (or, without memfd, an unlinked file in /dev/shm) whose descriptor is passed with
/// `SCM_RIGHTS`, so nothing is truncated.
public final class JournalConnection: Sendable {
    /// journald's socket for native-protocol entries.
    public static let defaultSocketPath = "/run/systemd/journal/socket"

    /// The socket path entries are sent to.
    public let socketPath: String
    private let address: UnixSocketAddress
    private let sender: UnixDatagramSender

    /// A connection to the socket at `socketPath`. Nothing is sent yet, so a journald that is not
    /// running shows only when the first entry fails.
    public init(socketPath: String = JournalConnection.defaultSocketPath) throws {
        self.socketPath = socketPath
        self.address = try UnixSocketAddress(socketPath)
        self.sender = try UnixDatagramSender()
    }

    /// Sends one entry.
    public func send(_ entry: JournalEntry) throws {
        let datagram = entry.encoded
        do {
            try sender.send(datagram, to: address)
        } catch let error as SystemError where error.code == EMSGSIZE || error.code == ENOBUFS {
            try sendThroughFile(datagram)
        }
    }

    private func sendThroughFile(_ datagram: [UInt8]) throws {
        let fd = try Self.makeSealedBuffer(datagram)
        defer { close(fd) }
        try sender.send(descriptor: fd, to: address)
    }

    /// A descriptor holding `bytes`: a memfd sealed against any change (journald maps a sealed memfd
    /// from an unprivileged sender without copying, and refuses an unsealed one outside /dev/shm,
    /// /tmp and /var/tmp), else an unlinked temporary file in /dev/shm, libsystemd's own fallback.
    static func makeSealedBuffer(_ bytes: [UInt8]) throws -> Int32 {
        var fd: Int32 = -1
        var isMemfd = false
        if let create = memfdCreate {
            fd = create("journal-entry", mfdCloexec | mfdAllowSealing)
            isMemfd = fd >= 0
        }
        if fd < 0 {
            var template = Array("/dev/shm/journal-entry.XXXXXX".utf8CString)
            fd = template.withUnsafeMutableBufferPointer { buffer in
                guard let base = buffer.baseAddress else { return -1 }
                let opened = mkstemp(base)
                if opened >= 0 { unlink(base) }
                return opened
            }
            if fd < 0 { throw SystemError.fromErrno("mkstemp /dev/shm/journal-entry") }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        do {
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset) }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw SystemError.fromErrno("write journal entry buffer")
                }
                offset += written
            }
            if isMemfd && fcntl(fd, fAddSeals, sealAll) < 0 { throw SystemError.fromErrno("fcntl(F_ADD_SEALS)") }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// `memfd_create`, looked up at run time: Swift's Glibc module does not declare it (it sits behind
    /// `_GNU_SOURCE`), though every glibc since 2.27 has it.
    private static let memfdCreate: (@convention(c) (UnsafePointer<CChar>, UInt32) -> Int32)? = {
        guard let symbol = dlsym(nil, "memfd_create") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafePointer<CChar>, UInt32) -> Int32).self)
    }()

    // Linux ABI constants from <linux/memfd.h> and <linux/fcntl.h>, also hidden behind _GNU_SOURCE.
    private static let mfdCloexec: UInt32 = 0x0001
    private static let mfdAllowSealing: UInt32 = 0x0002
    private static let fAddSeals: Int32 = 1024 + 9
    /// F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE: what journald calls sealed.
    private static let sealAll: Int32 = 0x1 | 0x2 | 0x4 | 0x8
}

/// A swift-log handler that writes each entry to journald in its native protocol, so levels,
/// source locations and every metadata key become journal fields that `journalctl` can filter on
/// (`journalctl INSTANCE_UUID=…`).
///
/// Fields: `MESSAGE`, `PRIORITY` (see ``Logging/Logger/Level/syslogPriority``), `SYSLOG_IDENTIFIER`,
/// `CODE_FILE`, `CODE_LINE`, `CODE_FUNC`, `LOGGER_LABEL` (the logger's label), `LOGGER_SOURCE`
/// (swift-log's source module), `ERROR` and, for a ``SFSystem/SystemError``, `ERRNO` when an error
/// is logged, then one field per metadata key, named by ``JournalFieldName/fromMetadataKey(_:)``.
/// Metadata is merged as swift-log prescribes: handler metadata, overridden by the metadata
/// provider, overridden by the call site.
///
/// An entry that cannot be sent at all (journald gone) is written to standard error instead, which
/// under systemd is itself connected to the journal.
public struct JournaldLogHandler: LogHandler {
    /// The logger's label.
    public let label: String
    /// The `SYSLOG_IDENTIFIER` of every entry: the program's name, so `journalctl -t sfnode` finds them.
    public let identifier: String
    private let connection: JournalConnection

    /// Handler metadata, the lowest-precedence layer.
    public var metadata: Logger.Metadata = [:]
    /// The least severe level this handler is asked to log.
    public var logLevel: Logger.Level
    /// Task-local context (request or instance ids), merged over handler metadata.
    public var metadataProvider: Logger.MetadataProvider?

    /// A handler for logger `label` sending through `connection`.
    public init(
        label: String, identifier: String, connection: JournalConnection, logLevel: Logger.Level = .info,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.label = label
        self.identifier = identifier
        self.connection = connection
        self.logLevel = logLevel
        self.metadataProvider = metadataProvider
    }

    /// Handler metadata for `key`.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Sends `event` as one journal entry.
    public func log(event: LogEvent) {
        let entry = makeEntry(event)
        do {
            try connection.send(entry)
        } catch {
            let text = "<\(event.level.syslogPriority)>\(identifier): \(event.message) (journal unavailable: \(error))\n"
            _ = Array(text.utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        }
    }

    /// The entry `event` becomes; separate from sending so its shape can be inspected.
    public func makeEntry(_ event: LogEvent) -> JournalEntry {
        var entry = JournalEntry()
        entry.append("MESSAGE", event.message.description)
        entry.append("PRIORITY", String(event.level.syslogPriority))
        entry.append("SYSLOG_IDENTIFIER", identifier)
        entry.append("CODE_FILE", event.file)
        entry.append("CODE_LINE", String(event.line))
        entry.append("CODE_FUNC", event.function)
        entry.append("LOGGER_LABEL", label)
        entry.append("LOGGER_SOURCE", event.source)
        if let error = event.error {
            entry.append("ERROR", String(describing: error))
            if let systemError = error as? SystemError { entry.append("ERRNO", String(systemError.code)) }
        }
        for (key, value) in mergedMetadata(event.metadata).sorted(by: { $0.key < $1.key }) {
            entry.append(JournalFieldName.fromMetadataKey(key), value.description)
        }
        return entry
    }

    /// Handler metadata < provider < call site.
    private func mergedMetadata(_ callSite: Logger.Metadata?) -> Logger.Metadata {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let callSite { merged.merge(callSite) { _, new in new } }
        return merged
    }
}
