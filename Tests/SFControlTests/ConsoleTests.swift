import Foundation
import SFControl
import SFStore
import SFSystem
import Testing

/// Console data as Shaken Fist serves it, read from the file virtlogd would write: lengths, a
/// missing log, clearing, and an instance on another node.
@Suite struct ConsoleTests {
    /// A fixture whose node is `hv1` with its storage in a temporary directory, one instance placed
    /// on hv1 (with `log` as its console log, when given) and one placed on hv2.
    struct World {
        let fixture: ControlFixture
        let storage: String
        let here: Instance
        let elsewhere: Instance

        var control: Control { fixture.control }
        var logPath: String { InstanceFiles(storagePath: storage).consoleLog(of: here.uuid) }

        init(log: Data?) async throws {
            storage = FileManager.default.temporaryDirectory.appendingPathComponent("sft-console-\(UUID().lowercasedString)").path
            var settings = ControlSettings()
            settings.storagePath = storage
            settings.nodeName = "hv1"
            fixture = try await ControlFixture(nodes: [ControlFixture.hypervisor("hv1"), ControlFixture.hypervisor("hv2")], settings: settings)
            var request = ControlFixture.request("here", network: nil)
            request.forcePlacement = "hv1"
            here = try await fixture.control.createInstance(request).0
            request = ControlFixture.request("there", network: nil)
            request.forcePlacement = "hv2"
            elsewhere = try await fixture.control.createInstance(request).0
            if let log {
                try FileManager.default.createDirectory(
                    atPath: InstanceFiles(storagePath: storage).directory(of: here.uuid), withIntermediateDirectories: true)
                FileManager.default.createFile(atPath: logPath, contents: log)
            }
        }

        func cleanup() {
            fixture.cleanup()
            try? FileManager.default.removeItem(atPath: storage)
        }
    }

    /// 30000 bytes whose positions can be told apart.
    static let log = Data((0..<30000).map { UInt8(truncatingIfNeeded: $0 % 251) })

    @Test func lengthsFollowShakenFist() async throws {
        let world = try await World(log: Self.log)
        defer { world.cleanup() }
        let reference = world.here.uuid.lowercasedString
        // Absent or 0: the last 10240 bytes.
        #expect(try await world.control.consoleData(reference) == Self.log.suffix(10240))
        #expect(try await world.control.consoleData(reference, length: 0) == Self.log.suffix(10240))
        #expect(try await world.control.consoleData(reference, length: 100) == Self.log.suffix(100))
        // More than there is: all of it.
        #expect(try await world.control.consoleData(reference, length: 50000) == Self.log)
        // -1: the whole log; any other negative: nothing.
        #expect(try await world.control.consoleData(reference, length: -1) == Self.log)
        #expect(try await world.control.consoleData(reference, length: -2) == Data())
        // By name in its namespace, as `instance(_:namespace:)` resolves it.
        #expect(try await world.control.consoleData("here", namespace: "system", length: 5) == Self.log.suffix(5))
        #expect(await controlError { _ = try await world.control.consoleData("here", namespace: "other") }?.code == .notFound)
    }

    @Test func aMissingLogIsEmptyAndClearingTruncatesInPlace() async throws {
        let world = try await World(log: nil)
        defer { world.cleanup() }
        let reference = world.here.uuid.lowercasedString
        #expect(try await world.control.consoleData(reference, length: -1) == Data())
        // Clearing a log that does not exist creates nothing.
        try await world.control.clearConsoleData(reference)
        #expect(!FileManager.default.fileExists(atPath: world.logPath))

        try FileManager.default.createDirectory(
            atPath: InstanceFiles(storagePath: world.storage).directory(of: world.here.uuid), withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: world.logPath, contents: Data("booting\nSFNODE-GUEST-READY\n".utf8))
        let inode = try FileManager.default.attributesOfItem(atPath: world.logPath)[.systemFileNumber] as? Int
        try await world.control.clearConsoleData("here")
        #expect(try await world.control.consoleData(reference, length: -1) == Data())
        // The same file, emptied: virtlogd keeps appending to the descriptor it holds.
        #expect(try FileManager.default.attributesOfItem(atPath: world.logPath)[.systemFileNumber] as? Int == inode)
        #expect(try FileManager.default.attributesOfItem(atPath: world.logPath)[.size] as? Int == 0)
    }

    @Test func anotherNodesInstanceIsReadOnThatNode() async throws {
        let world = try await World(log: Self.log)
        defer { world.cleanup() }
        let error = await controlError { _ = try await world.control.consoleData(world.elsewhere.uuid.lowercasedString) }
        #expect(error?.code == .conflict)
        #expect(error?.message.contains("is on node hv2; its console is read on that node") == true, "\(error?.message ?? "")")
        #expect(await controlError { try await world.control.clearConsoleData("there") }?.code == .conflict)
    }
}
