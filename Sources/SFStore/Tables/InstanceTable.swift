import Foundation
import SFSystem

/// The `instance` table: read on every API request, so its decoder reads each column once, by
/// position, and its JSON columns through ``DecodedColumns``.
enum InstanceTable: StoreTable {
    enum Column: Int, TableColumn {
        case uuid, name, namespace, cpus, memory, diskSpec, video, node, state, stateUpdated
        case powerState, powerStatePrevious, powerStateUpdated, errorMessage, config, consolePort, vdiPort, created

        var sqlName: String {
            switch self {
            case .uuid: "uuid"
            case .name: "name"
            case .namespace: "namespace"
            case .cpus: "cpus"
            case .memory: "memory"
            case .diskSpec: "disk_spec"
            case .video: "video"
            case .node: "node"
            case .state: "state"
            case .stateUpdated: "state_updated"
            case .powerState: "power_state"
            case .powerStatePrevious: "power_state_previous"
            case .powerStateUpdated: "power_state_updated"
            case .errorMessage: "error_message"
            case .config: "config"
            case .consolePort: "console_port"
            case .vdiPort: "vdi_port"
            case .created: "created"
            }
        }
    }

    static let name = "instance"
    static let select = selectStatement()
    static let selectByUUID = select + "WHERE uuid = ?"

    /// A new instance's row. Its console and display ports are not written: a node reserves them
    /// when it first starts the instance (`reserveConsolePorts`).
    static func insert(_ instance: Instance, created: Date) throws -> TableStatement {
        insertStatement([
            .uuid: instance.uuid,
            .name: instance.name,
            .namespace: instance.namespace,
            .cpus: instance.cpus,
            .memory: instance.memory,
            .diskSpec: try StoredJSON.text(instance.diskSpec),
            .video: try StoredJSON.text(instance.video),
            .node: instance.node,
            .state: instance.state.rawValue,
            .stateUpdated: instance.stateUpdated,
            .powerState: instance.powerState.rawValue,
            .powerStatePrevious: instance.powerStatePrevious?.rawValue,
            .powerStateUpdated: instance.powerStateUpdated,
            .errorMessage: instance.errorMessage,
            .created: created,
            .config: try StoredJSON.text(instance.config),
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Instance {
        var instance = Instance(
            uuid: try row.uuid(.uuid),
            name: try row.requiredText(.name),
            namespace: try row.requiredText(.namespace),
            cpus: try row.requiredInt(.cpus),
            memory: try row.requiredInt(.memory),
            diskSpec: try row.requiredJSON([DiskSpec].self, .diskSpec),
            video: try row.requiredJSON(VideoSpec.self, .video),
            node: try row.text(.node))
        instance.state = try row.parsed(.state, InstanceState.init(rawValue:))
        instance.stateUpdated = try row.requiredDate(.stateUpdated)
        instance.powerState = try row.parsed(.powerState, PowerState.init(rawValue:))
        instance.powerStatePrevious = try row.optionalParsed(.powerStatePrevious, PowerState.init(rawValue:))
        instance.powerStateUpdated = try row.requiredDate(.powerStateUpdated)
        instance.errorMessage = try row.text(.errorMessage)
        if let config = try row.json(InstanceConfig.self, .config) { instance.config = config }
        instance.consolePort = try row.int(.consolePort)
        instance.vdiPort = try row.int(.vdiPort)
        return instance
    }
}
