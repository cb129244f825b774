import Foundation
import SFSystem

/// The `network` table. Its `dns_entries` column is read and written on its own
/// (SQLStore+NetworkDNS.swift), never as part of a ``Network``.
enum NetworkTable: StoreTable {
    enum Column: Int, TableColumn {
        case uuid, name, namespace, netblock, provideDHCP, provideNAT, vxid, state, stateUpdated, floatingGateway
        case created, spoofFilter, provideDNS

        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .name: "name"
            case .namespace: "namespace"
            case .netblock: "netblock"
            case .provideDHCP: "provide_dhcp"
            case .provideNAT: "provide_nat"
            case .vxid: "vxid"
            case .state: "state"
            case .stateUpdated: "state_updated"
            case .floatingGateway: "floating_gateway"
            case .created: "created"
            case .spoofFilter: "spoof_filter"
            case .provideDNS: "provide_dns"
            }
        }
    }

    static let name = "network"
    static let select = selectStatement()
    static let selectByUUID = select + "WHERE uuid = ?"

    static func insert(_ network: Network, created: Date) -> TableStatement {
        insertStatement([
            .uuid: network.uuid,
            .name: network.name,
            .namespace: network.namespace,
            .netblock: network.netblock.description,
            .provideDHCP: network.provideDHCP,
            .provideNAT: network.provideNAT,
            .vxid: network.vxid,
            .state: network.state.rawValue,
            .stateUpdated: network.stateUpdated,
            .floatingGateway: network.floatingGateway?.description,
            .created: created,
            .spoofFilter: network.spoofFilter,
            .provideDNS: network.provideDNS,
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Network {
        Network(
            uuid: try row.uuid(.uuid),
            name: try row.requiredText(.name),
            namespace: try row.requiredText(.namespace),
            netblock: try row.parsed(.netblock, IPv4Prefix.init),
            provideDHCP: try row.requiredBool(.provideDHCP),
            provideNAT: try row.requiredBool(.provideNAT),
            vxid: try row.requiredInt(.vxid),
            state: try row.parsed(.state, NetworkState.init(rawValue:)),
            stateUpdated: try row.requiredDate(.stateUpdated),
            floatingGateway: try row.optionalParsed(.floatingGateway, IPv4Address.init),
            spoofFilter: try row.requiredBool(.spoofFilter),
            provideDNS: try row.requiredBool(.provideDNS))
    }
}
