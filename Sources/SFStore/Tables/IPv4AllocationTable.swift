import Foundation
import SFSystem

/// The `ipv4_allocation` table: which owner holds each address of a network.
enum IPv4AllocationTable: StoreTable {
    enum Column: Int, TableColumn {
        case networkUUID, address, owner

        var sqlName: String {
            switch self {
            case .networkUUID: "network_uuid"
            case .address: "address"
            case .owner: "owner"
            }
        }
    }

    /// One allocated address and its owner's key.
    struct Allocation {
        var address: IPv4Address
        var owner: String
    }

    static let name = "ipv4_allocation"
    static let select = selectStatement()

    static func insert(networkUUID: UUID, address: IPv4Address, owner: String) -> TableStatement {
        insertStatement([.networkUUID: networkUUID, .address: Int64(address.value), .owner: owner])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Allocation {
        let address = try row.requiredInt64(.address)
        guard let value = UInt32(exactly: address) else { throw row.corrupt(.address, "\(address) is not an IPv4 address") }
        return Allocation(address: IPv4Address(value), owner: try row.requiredText(.owner))
    }
}
