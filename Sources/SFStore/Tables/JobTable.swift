import Foundation

/// The `job` table: the work queue (SQLStore+Queue.swift holds its rules).
enum JobTable: StoreTable {
    enum Column: Int, TableColumn {
        case id, kind, payload, target, objectKey, state, attempts, maxAttempts, notBefore, leaseOwner, leaseExpiry
        case lastError, created, updated, deaths, leaseToken

        var sqlName: String {
            switch self {
            case .id: "id"
            case .kind: "kind"
            case .payload: "payload"
            case .target: "target"
            case .objectKey: "object_key"
            case .state: "state"
            case .attempts: "attempts"
            case .maxAttempts: "max_attempts"
            case .notBefore: "not_before"
            case .leaseOwner: "lease_owner"
            case .leaseExpiry: "lease_expiry"
            case .lastError: "last_error"
            case .created: "created"
            case .updated: "updated"
            case .deaths: "deaths"
            case .leaseToken: "lease_token"
            }
        }
    }

    static let name = "job"
    static let select = selectStatement()
    static let selectByID = select + "WHERE id = ?"

    /// A queued job, never claimed; the id is the database's (the queue's order).
    static func insert(kind: String, payloadText: String, target: JobTarget, objectKey: String?, maxAttempts: Int, now: Date)
        -> TableStatement
    {
        insertStatement([
            .kind: kind,
            .payload: payloadText,
            .target: target.description,
            .objectKey: objectKey,
            .state: JobState.queued.rawValue,
            .attempts: 0,
            .leaseToken: 0,
            .maxAttempts: maxAttempts,
            .notBefore: now,
            .created: now,
            .updated: now,
        ])
    }

    static func decode<Row: PositionalRow>(_ row: TableRow<Self, Row>) throws -> Job {
        Job(
            id: try row.requiredInt64(.id),
            kind: try row.requiredText(.kind),
            payload: try JSONValue.parse(try row.requiredText(.payload)),
            target: try JobTarget.parse(try row.requiredText(.target)),
            objectKey: try row.text(.objectKey),
            state: try row.parsed(.state, JobState.init(rawValue:)),
            attempts: try row.requiredInt(.attempts),
            maxAttempts: try row.requiredInt(.maxAttempts),
            deaths: try row.requiredInt(.deaths),
            notBefore: try row.requiredDate(.notBefore),
            leaseOwner: try row.text(.leaseOwner),
            leaseToken: try row.requiredInt64(.leaseToken),
            leaseExpiry: try row.date(.leaseExpiry),
            lastError: try row.text(.lastError),
            created: try row.requiredDate(.created),
            updated: try row.requiredDate(.updated))
    }
}
