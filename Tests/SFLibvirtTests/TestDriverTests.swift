import Foundation
import SFLibvirt
import SFTestSupport
import Testing

/// The connection against libvirt's in-process test driver (`test:///default`: no daemon, one running
/// domain called "test"), so the wrapper's plumbing is checked even where libvirtd is absent. The
/// driver's state is shared by every connection in the process, hence one test at a time, each
/// leaving the domain running as it found it.
@Suite(.serialized) struct TestDriverTests {
    let connection: LibvirtConnection

    init() throws { connection = try LibvirtConnection(uri: "test:///default", logger: testLogger) }

    @Test func readsTheTestDriversDomain() async throws {
        let identity = try #require(try await connection.lookup(name: "test"))
        #expect(try await connection.lookup(uuid: identity.uuid) == identity)
        #expect(try await connection.state(of: .name("test")) == .on)
        let all = try await connection.domains()
        #expect(all.map(\.identity) == [identity])
        #expect(all.first?.libvirtState == 1, "VIR_DOMAIN_RUNNING")
        #expect(try await connection.lookup(name: "sft-absent") == nil)
    }

    @Test func operationsChangeStateAndRaiseEvents() async throws {
        let log = EventLog(try await connection.lifecycleEvents())
        let test = DomainReference.name("test")
        let identity = try #require(try await connection.lookup(test))
        try await connection.suspend(test)
        #expect(try await connection.state(of: test) == .paused)
        try await connection.resume(test)
        try await connection.destroy(test)
        try await connection.destroy(test)
        #expect(try await connection.state(of: test) == .off)
        // The listing's states come from one bulk read: the same state and reason as the domain's own.
        let listed = try #require(try await connection.domains().first { $0.identity == identity })
        #expect(listed.isOffOnPurpose, "destroyed is off on purpose")
        #expect(try await connection.status(of: test) == listed)
        try await connection.start(test)
        #expect(try await connection.state(of: test) == .on)
        #expect(
            await eventually(timeout: .seconds(5)) { log.events(for: identity.uuid).count >= 4 },
            "events: \(log.events(for: identity.uuid).map(\.kind))")
        #expect(log.events(for: identity.uuid).map(\.kind).prefix(3) == [.suspended, .resumed, .stopped])
    }

    @Test func theEventLoopThreadIsNamedForTheKernel() async throws {
        try await connection.connect()
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")
        let names = tasks.compactMap { task in
            try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(names.contains("libvirt-events"), "thread names: \(names.sorted())")
    }
}
