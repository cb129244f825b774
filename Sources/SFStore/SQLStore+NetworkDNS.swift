import Foundation
import SFSystem

/// A network's extra DNS records (Shaken Fist's `hosteddns`): names its dnsmasq answers besides its
/// instances', kept as one JSON object `{name: address}` in the network's row, in no view.
extension SQLStore {
    public func networkDNSEntries(uuid: UUID) async throws -> [String: IPv4Address] {
        try await read { db in try Self.dnsEntries(db, uuid) }
    }

    public func setNetworkDNSEntry(uuid: UUID, name: String, address: IPv4Address?, limit: Int, jobs: [NewJob]) async throws {
        let jobRows = try jobs.map(Self.validatedRow)
        try await write { db in
            var entries = try Self.dnsEntries(db, uuid)
            if let address {
                if entries[name] == nil && entries.count >= limit {
                    throw StoreError.invalidArgument(
                        "network \(uuid.lowercasedString) already has \(entries.count) DNS entries, the most one network may have")
                }
                entries[name] = address
            } else {
                entries[name] = nil
            }
            let text = String(decoding: try JSONEncoder.sorted.encode(entries.mapValues(\.description)), as: UTF8.self)
            try db.execute(sql: "UPDATE network SET dns_entries = ? WHERE uuid = ?", arguments: [text, uuid.lowercasedString])
            for row in jobRows { _ = try Self.insertJob(db, row) }
        }
    }

    private static func dnsEntries(_ db: any StoreDatabase, _ uuid: UUID) throws -> [String: IPv4Address] {
        guard let text = try db.fetchOne(String.self, sql: "SELECT dns_entries FROM network WHERE uuid = ?", arguments: [uuid.lowercasedString])
        else { throw StoreError.notFound(type: "network", id: uuid.lowercasedString) }
        guard let raw = try? JSONDecoder().decode([String: String].self, from: Data(text.utf8)) else {
            throw StoreError.corrupt("network \(uuid.lowercasedString) has unreadable DNS entries")
        }
        return try raw.mapValues { value in
            guard let address = IPv4Address(value) else {
                throw StoreError.corrupt("network \(uuid.lowercasedString) has DNS entry address '\(value)'")
            }
            return address
        }
    }
}

extension JSONEncoder {
    /// Keys sorted, so that the same entries are always the same text.
    fileprivate static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
