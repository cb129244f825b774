import Foundation
import SFSystem

// Bulk reads: one query per kind for a pass over the whole store (the agent's reconciliation),
// which would otherwise ask once per object and cost time that grows faster than the store.

extension SQLStore {
    public func liveInterfaces() async throws -> [Interface] {
        try await read { db in
            try db.allRows(InterfaceTable.self, InterfaceTable.select + "WHERE state != 'deleted' ORDER BY uuid", [])
        }
    }
}

extension NodeStore {
    /// ``liveInterfaces()`` for a backend without its own bulk read: one read per network, correct
    /// but as slow as the per-object reads it replaces.
    public func liveInterfaces() async throws -> [Interface] {
        var interfaces: [Interface] = []
        for network in try await networks(namespace: nil) { interfaces += try await self.interfaces(networkUUID: network.uuid) }
        return interfaces.sorted { $0.uuid.lowercasedString < $1.uuid.lowercasedString }
    }
}
