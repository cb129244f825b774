import Foundation
import SFControl
import SFStore

/// The floating address jobs: interface.float and interface.defloat. The address lives in the store;
/// its DNAT and SNAT are the network's, made by converging it (see ``NetworkJobs``).
public struct FloatJobs: JobHandlers {
    let context: AgentContext
    let networks: NetworkJobs

    public func register(with runner: JobRunner) async {
        await runner.register(.interfaceFloat) { order, _ in try await float(try order.uuid()) }
        await runner.register(.interfaceDefloat) { order, _ in try await defloat(try order.uuid()) }
    }

    /// Allocates a floating address for the interface (unless it has one) and adds its DNAT and SNAT.
    public func float(_ uuid: UUID) async throws {
        let store = context.store
        try await context.locks.objectStep([HostLocks.interface(uuid)]) {
            var interface = try await store.interface(uuid: uuid)
            guard interface.ipv4 != nil else { throw JobError.refusal("interface \(uuid) has no IPv4 address to float") }
            if interface.floating == nil { interface = try await store.floatInterface(uuid: uuid, range: context.planner.floatingRange) }
            let floated = interface
            try CrashPoint.reach("interface.float.after-allocate")
            try await context.locks.hostStep { try await networks.announce([floated.networkUUID], meshChanged: false) }
            try CrashPoint.reach("interface.float.after-rules")
            try await context.event(
                "interface", uuid, .audit, "interface floated as \(floated.floating.map(String.init(describing:)) ?? "?")")
        }
    }

    /// Removes the interface's DNAT and SNAT and releases its floating address.
    public func defloat(_ uuid: UUID) async throws {
        let store = context.store
        try await context.locks.objectStep([HostLocks.interface(uuid)]) {
            let interface = try await store.interface(uuid: uuid)
            if interface.floating != nil { try await store.defloatInterface(uuid: uuid) }
            try await context.locks.hostStep { try await networks.announce([interface.networkUUID], meshChanged: false) }
            try await context.event("interface", uuid, .audit, "interface defloated")
        }
    }
}
