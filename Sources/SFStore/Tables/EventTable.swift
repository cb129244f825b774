import Foundation

/// The `event` table: an object's history, newest read first.
enum EventTable: StoreTable {
    enum Column: Int, TableColumn {
        case id, objectType, objectUUID, type, timestamp, fqdn, duration, message, extra

        var sqlName: String {
            switch self {
            case .id: "id"
            case .objectType: "object_type"
            case .objectUUID: "object_uuid"
            case .type: "type"
            case .timestamp: "timestamp"
            case .fqdn: "fqdn"
            case .duration: "duration"
            case .message: "message"
            case .extra: "extra"
            }
        }
    }

    static let name = "event"
    static let select = selectStatement()

    /// The id is the database's.
    static func insert(_ event: Event) throws -> TableStatement {
        insertStatement([
            .objectType: event.objectType,
            .objectUUID: event.objectUUID,
            .type: event.type.rawValue,
            .timestamp: event.timestamp,
            .fqdn: event.fqdn,
            .duration: event.duration,
            .message: event.message,
            .extra: try event.extra.map { try JSONValue.object($0).jsonText() },
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Event {
        Event(
            objectType: try row.requiredText(.objectType),
            objectUUID: try row.requiredText(.objectUUID),
            type: try row.parsed(.type, EventType.init(rawValue:)),
            timestamp: try row.requiredDate(.timestamp),
            fqdn: try row.requiredText(.fqdn),
            duration: try row.double(.duration),
            message: try row.requiredText(.message),
            extra: try row.jsonObject(.extra))
    }
}
