import Foundation
import SFSystem

/// The `interface` table: an instance's network interfaces, read with every instance view.
enum InterfaceTable: StoreTable {
    enum Column: Int, TableColumn {
        case uuid, instanceUUID, networkUUID, macaddr, ipv4, order, model, floating, state

        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .instanceUUID: "instance_uuid"
            case .networkUUID: "network_uuid"
            case .macaddr: "macaddr"
            case .ipv4: "ipv4"
            case .order: "order"
            case .model: "model"
            case .floating: "floating"
            case .state: "state"
            }
        }
    }

    static let name = "interface"
    static let select = selectStatement()
    static let selectByUUID = select + "WHERE uuid = ?"
    static let selectOfInstance = select + #"WHERE instance_uuid = ? ORDER BY "order", uuid"#

    static func insert(_ interface: Interface) -> TableStatement {
        insertStatement([
            .uuid: interface.uuid,
            .instanceUUID: interface.instanceUUID,
            .networkUUID: interface.networkUUID,
            .macaddr: interface.macaddr.description,
            .ipv4: interface.ipv4?.description,
            .order: interface.order,
            .model: interface.model,
            .floating: interface.floating?.description,
            .state: interface.state.rawValue,
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Interface {
        Interface(
            uuid: try row.uuid(.uuid),
            instanceUUID: try row.uuid(.instanceUUID),
            networkUUID: try row.uuid(.networkUUID),
            macaddr: try row.parsed(.macaddr, MACAddress.init),
            ipv4: try row.optionalParsed(.ipv4, IPv4Address.init),
            order: try row.requiredInt(.order),
            model: try row.requiredText(.model),
            floating: try row.optionalParsed(.floating, IPv4Address.init),
            state: try row.parsed(.state, InterfaceState.init(rawValue:)))
    }
}
