import Foundation
import Logging
import SFSystem
import Testing

@testable import SFDaemonSupport

@Suite("journald native protocol")
struct JournaldLogHandlerTests {
    /// A logger whose handler sends to `socket`, with `configure` applied to the handler first.
    private func logger(
        to socket: FakeDatagramSocket, level: Logger.Level = .trace, provider: Logger.MetadataProvider? = nil,
        configure: (inout JournaldLogHandler) -> Void = { _ in }
    ) throws -> Logger {
        let connection = try JournalConnection(socketPath: socket.address)
        return Logger(label: "sfnode.test") { label in
            var handler = JournaldLogHandler(
                label: label, identifier: "sfnode", connection: connection, logLevel: level, metadataProvider: provider)
            configure(&handler)
            return handler
        }
    }

    private func entry(from socket: FakeDatagramSocket) async throws -> JournalEntry {
        let datagram = try #require(try await socket.receive())
        return try #require(JournalEntry.decode(datagram.bytes))
    }

    @Test("standard fields, priority and dotted metadata keys arrive as journal fields")
    func fields() async throws {
        let socket = try FakeDatagramSocket.path()
        let log = try logger(to: socket)
        let line: UInt = #line + 1
        log.warning("domain started", metadata: ["instance.uuid": "8d1c", "net.vxlan-id": "42"])
        let entry = try await entry(from: socket)
        #expect(entry.value(of: "MESSAGE") == "domain started")
        #expect(entry.value(of: "PRIORITY") == "4")
        #expect(entry.value(of: "SYSLOG_IDENTIFIER") == "sfnode")
        #expect(entry.value(of: "LOGGER_LABEL") == "sfnode.test")
        #expect(entry.value(of: "CODE_FILE")?.hasSuffix("JournaldLogHandlerTests.swift") == true)
        #expect(entry.value(of: "CODE_LINE") == String(line))
        #expect(entry.value(of: "CODE_FUNC") == "fields()")
        #expect(entry.value(of: "INSTANCE_UUID") == "8d1c")
        #expect(entry.value(of: "NET_VXLAN_ID") == "42")
        #expect(entry.fields.allSatisfy { JournalFieldName.isValid($0.name) })
    }

    @Test("every swift-log level maps to its syslog priority")
    func priorities() async throws {
        let socket = try FakeDatagramSocket.path()
        let log = try logger(to: socket)
        let expected: [(Logger.Level, String)] = [
            (.trace, "7"), (.debug, "7"), (.info, "6"), (.notice, "5"), (.warning, "4"), (.error, "3"), (.critical, "2"),
        ]
        for (level, _) in expected { log.log(level: level, "at \(level)") }
        let datagrams = try await socket.receive(count: expected.count)
        #expect(datagrams.count == expected.count)
        for (datagram, (level, priority)) in zip(datagrams, expected) {
            let entry = try #require(JournalEntry.decode(datagram.bytes))
            #expect(entry.value(of: "MESSAGE") == "at \(level)")
            #expect(entry.value(of: "PRIORITY") == priority)
        }
    }

    @Test("multi-line and binary values use the length-prefixed framing, byte for byte")
    func binaryFraming() async throws {
        let socket = try FakeDatagramSocket.path()
        let log = try logger(to: socket)
        let message = "first line\nsecond line"
        log.info("\(message)", metadata: ["console.tail": "a\u{0}b\nc", "plain": "x=y"])
        let datagram = try #require(try await socket.receive())
        // Checked on the raw bytes, not only through the decoder: KEY \n <u64 LE length> bytes \n.
        var expected = Array("MESSAGE\n".utf8)
        expected += [UInt8(message.utf8.count), 0, 0, 0, 0, 0, 0, 0]
        expected += Array(message.utf8) + [UInt8(ascii: "\n")]
        #expect(datagram.bytes.starts(with: expected))
        let entry = try #require(JournalEntry.decode(datagram.bytes))
        #expect(entry.value(of: "MESSAGE") == message)
        #expect(entry.fields.first { $0.name == "CONSOLE_TAIL" }?.value == Array("a\u{0}b\nc".utf8))
        // '=' inside a value needs no framing: journald splits at the first '='.
        #expect(String(decoding: datagram.bytes, as: UTF8.self).contains("\nPLAIN=x=y\n"))
    }

    @Test("metadata merges handler < provider < call site")
    func mergeOrder() async throws {
        let socket = try FakeDatagramSocket.path()
        let provider = Logger.MetadataProvider {
            ["layer.provider": "provider", "shared.all": "provider", "shared.provider-call": "provider"]
        }
        var log = try logger(to: socket, provider: provider) { handler in
            handler.metadata = ["layer.handler": "handler", "shared.all": "handler", "shared.handler-provider": "handler"]
        }
        log[metadataKey: "layer.logger"] = "logger"
        log.info("merged", metadata: ["shared.all": "call", "shared.provider-call": "call"])
        let entry = try await entry(from: socket)
        #expect(entry.value(of: "LAYER_HANDLER") == "handler")
        #expect(entry.value(of: "LAYER_LOGGER") == "logger")
        #expect(entry.value(of: "LAYER_PROVIDER") == "provider")
        #expect(entry.value(of: "SHARED_ALL") == "call")
        #expect(entry.value(of: "SHARED_HANDLER_PROVIDER") == "handler")
        #expect(entry.value(of: "SHARED_PROVIDER_CALL") == "call")
        #expect(entry.fields.filter { $0.name == "SHARED_ALL" }.count == 1)
    }

    @Test("an entry too large for a datagram goes through a sealed memfd, untruncated")
    func oversizedEntry() async throws {
        let socket = try FakeDatagramSocket.path()
        let log = try logger(to: socket)
        // Larger than any default socket send buffer (net.core.wmem_default is 208 KiB), so EMSGSIZE.
        let big = String(repeating: "0123456789abcdef", count: 128 * 1024)
        log.info("large", metadata: ["blob": "\(big)"])
        let datagram = try #require(try await socket.receive())
        #expect(datagram.passedDescriptor)
        let entry = try #require(JournalEntry.decode(datagram.bytes))
        #expect(entry.value(of: "MESSAGE") == "large")
        #expect(entry.value(of: "BLOB") == big)
    }

    @Test("a logged error adds ERROR, and a SystemError its ERRNO")
    func errors() async throws {
        let socket = try FakeDatagramSocket.path()
        let log = try logger(to: socket)
        log.error("open failed", error: SystemError("open /x", code: 2))
        let entry = try await entry(from: socket)
        #expect(entry.value(of: "ERRNO") == "2")
        #expect(entry.value(of: "ERROR")?.hasPrefix("open /x: ") == true)
    }

    @Test(
        "metadata keys map to valid field names deterministically",
        arguments: [
            ("instance.uuid", "INSTANCE_UUID"), ("Net.Vxlan-ID", "NET_VXLAN_ID"), ("_private", "X_PRIVATE"),
            ("9p.share", "X9P_SHARE"), ("", "X"), ("message", "X_MESSAGE"), ("priority", "X_PRIORITY"),
            ("caf\u{E9}.name", "CAF___NAME"),
        ])
    func fieldNames(key: String, expected: String) {
        #expect(JournalFieldName.fromMetadataKey(key) == expected)
        #expect(JournalFieldName.isValid(JournalFieldName.fromMetadataKey(key)))
    }

    @Test("keys longer than 64 characters are cut with a hash of the whole key")
    func longFieldNames() {
        let stem = String(repeating: "segment.", count: 10)
        let first = JournalFieldName.fromMetadataKey(stem + "one")
        let second = JournalFieldName.fromMetadataKey(stem + "two")
        #expect(first.utf8.count == 64)
        #expect(JournalFieldName.isValid(first))
        #expect(first != second)
        #expect(first == JournalFieldName.fromMetadataKey(stem + "one"))
        #expect(first.hasPrefix("SEGMENT_SEGMENT_"))
    }

    @Test("a missing journal socket falls back to standard error instead of throwing")
    func missingSocket() throws {
        let connection = try JournalConnection(socketPath: "/nonexistent-sfnode-test/socket")
        #expect(throws: SystemError.self) { try connection.send(JournalEntry()) }
        let handler = JournaldLogHandler(label: "x", identifier: "sfnode", connection: connection)
        // Only must not trap; the fallback line goes to this process's standard error.
        handler.log(
            event: LogEvent(
                level: .info, message: "fallback", metadata: nil, source: nil, file: #fileID, function: #function, line: #line))
    }
}

@Suite("logging bootstrap")
struct LoggingBootstrapTests {
    @Test("the journal is chosen under systemd when its socket exists, standard error otherwise")
    func destination() throws {
        let socket = try FakeDatagramSocket.path()
        let identity = (device: UInt64(2049), inode: UInt64(77))
        #expect(
            LoggingBootstrap.destination(
                environment: ["JOURNAL_STREAM": "2049:77"], journalSocketPath: socket.address, standardErrorIdentity: identity)
                == .journal(socketPath: socket.address))
        #expect(
            LoggingBootstrap.destination(
                environment: ["INVOCATION_ID": "0123abcd"], journalSocketPath: socket.address, standardErrorIdentity: identity)
                == .journal(socketPath: socket.address))
        // A JOURNAL_STREAM inherited by a process whose standard error went elsewhere is not trusted.
        #expect(
            LoggingBootstrap.destination(
                environment: ["JOURNAL_STREAM": "2049:78"], journalSocketPath: socket.address, standardErrorIdentity: identity)
                == .standardError(priorityPrefix: false))
        #expect(
            LoggingBootstrap.destination(environment: [:], journalSocketPath: socket.address, standardErrorIdentity: identity)
                == .standardError(priorityPrefix: false))
        // Under systemd without a journal socket: standard error, with <N> prefixes when it is the journal stream.
        #expect(
            LoggingBootstrap.destination(
                environment: ["JOURNAL_STREAM": "2049:77", "INVOCATION_ID": "x"], journalSocketPath: socket.address + ".missing",
                standardErrorIdentity: identity) == .standardError(priorityPrefix: true))
    }

    @Test("the journal factory's handlers send to the socket at the configured level")
    func factory() async throws {
        let socket = try FakeDatagramSocket.path()
        let factory = LoggingBootstrap.makeFactory(destination: .journal(socketPath: socket.address), level: .notice)
        let log = Logger(label: "sfnode.factory", factory: factory)
        log.info("below the level")
        log.notice("at the level")
        let datagrams = try await socket.receive(count: 2, timeout: .milliseconds(500))
        #expect(datagrams.count == 1)
        let entry = try #require(datagrams.first.flatMap { JournalEntry.decode($0.bytes) })
        #expect(entry.value(of: "MESSAGE") == "at the level")
        #expect(entry.value(of: "LOGGER_LABEL") == "sfnode.factory")
    }

    @Test("standard error lines carry dotted metadata, sorted and quoted where needed")
    func standardErrorFormat() {
        let handler = StderrLogHandler(label: "sfnode.agent", priorityPrefix: true)
        let event = LogEvent(
            level: .warning, message: "two\nlines", metadata: ["vm.uuid": "8d1c", "a.reason": "no space left"],
            source: "SFAgent", file: #fileID, function: #function, line: #line)
        #expect(
            handler.format(event, now: Date())
                == "<4>warning sfnode.agent: two\\nlines a.reason=\"no space left\" vm.uuid=8d1c [SFAgent]\n")
    }
}
