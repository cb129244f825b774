import Foundation
import SFStore
import SFSystem

extension Control {
    /// The interface `reference` names: its UUID or its MAC address (unique and stable, and what
    /// users see inside the guest).
    public func interface(_ reference: String, namespace: String? = nil) async throws -> Interface {
        try await controlled {
            let interface: Interface
            if let uuid = UUID(uuidString: reference) {
                interface = try await store.interface(uuid: uuid)
            } else if let mac = MACAddress(reference) {
                let owner = try await store.macOwner(mac)
                guard let owner = owner.flatMap(ObjectKey.init(text:)), owner.type == .interface, let uuid = UUID(uuidString: owner.id) else {
                    throw ControlError.notFound("interface \(reference) not found")
                }
                interface = try await store.interface(uuid: uuid)
            } else {
                throw ControlError.invalid("'\(reference)' is neither an interface UUID nor a MAC address")
            }
            if let namespace {
                let instance = try await store.instance(uuid: interface.instanceUUID)
                guard instance.namespace == namespace else { throw ControlError.notFound("interface \(reference) not found") }
            }
            return interface
        }
    }

    /// Queues a floating address for the interface (the network node allocates it and adds its NAT).
    public func float(_ reference: String, namespace: String? = nil, requestID: String? = nil) async throws -> Interface {
        let interface = try await self.interface(reference, namespace: namespace)
        guard interface.state != .deleted else { throw ControlError.conflict("interface \(reference) is deleted") }
        guard interface.ipv4 != nil else { throw ControlError.conflict("interface \(reference) has no IPv4 address to float") }
        try await queue(.interfaceFloat, interface, requestID: requestID)
        return interface
    }

    /// Queues the release of the interface's floating address.
    public func defloat(_ reference: String, namespace: String? = nil, requestID: String? = nil) async throws -> Interface {
        let interface = try await self.interface(reference, namespace: namespace)
        try await queue(.interfaceDefloat, interface, requestID: requestID)
        return interface
    }

    private func queue(_ kind: JobKind, _ interface: Interface, requestID: String?) async throws {
        let order = try JobOrder(kind, .interface(interface.uuid), requestID: requestID)
        guard case .admitted = try await admitJob(order) else { return }
        _ = try await controlled { try await store.enqueue([order.job(for: .networkNode)]) }
    }
}
