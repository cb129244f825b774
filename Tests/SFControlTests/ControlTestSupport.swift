import Foundation
import Logging
import SFControl
import SFStore

/// A Control over a fresh temporary store with one hypervisor that has checked in now.
struct ControlFixture {
    let store: SQLStore
    let control: Control

    init(nodes: [Node] = [ControlFixture.hypervisor("hv1")], settings: ControlSettings = ControlSettings()) async throws {
        store = try SQLStore.temporary()
        var logger = Logger(label: "sfnode.test.control")
        logger.logLevel = .critical
        control = Control(store: store, settings: settings, logger: logger)
        for node in nodes { try await store.saveNode(node) }
    }

    static func hypervisor(_ name: String, cpus: Int = 4, memoryMiB: Int = 8192, diskGiB: Int = 100, seen: Date = Date()) -> Node {
        Node(name: name, roles: [.hypervisor, .networkNode], lastSeen: seen, capacity: NodeCapacity(cpus: cpus, memoryMiB: memoryMiB, diskGiB: diskGiB))
    }

    func cleanup() { store.removeFiles() }

    /// A request for a small instance from a URL on `network`.
    static func request(_ name: String = "web", cpus: Int = 1, memory: Int = 512, network: String? = "net", disk: Int = 8) -> InstanceRequest {
        InstanceRequest(
            name: name, cpus: cpus, memoryMiB: memory, disks: [DiskSpec(base: "http://127.0.0.1/images/guest.qcow2", size: disk)],
            networks: network.map { [NetworkRequest(network: $0)] } ?? [])
    }
}

/// The ControlError `body` throws, or nil.
func controlError(_ body: () async throws -> Void) async -> ControlError? {
    do {
        try await body()
        return nil
    } catch let error as ControlError {
        return error
    } catch {
        return ControlError(.internal, "not a ControlError: \(error)")
    }
}
