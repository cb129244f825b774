import Foundation
import SFStore

/// Every kind of job an agent runs. A job of any other kind is refused when it is submitted.
public enum JobKind: String, Sendable, CaseIterable, Codable {
    case networkCreate = "network.create"
    case networkDelete = "network.delete"
    case networkRefresh = "network.refresh"
    case instanceCreate = "instance.create"
    case instanceDelete = "instance.delete"
    case instanceDeleteAll = "instance.delete_all"
    case instancePoweron = "instance.poweron"
    case instancePoweroff = "instance.poweroff"
    case instanceRebootsoft = "instance.rebootsoft"
    case instanceReboothard = "instance.reboothard"
    case instancePause = "instance.pause"
    case instanceUnpause = "instance.unpause"
    case interfaceFloat = "interface.float"
    case interfaceDefloat = "interface.defloat"
    /// Fetch (or refresh) an image artifact's URL into a blob on the node the job is sent to.
    case artifactFetch = "artifact.fetch"
    /// Copy an instance's disks into blobs, each the newest version of its snapshot artifact; the
    /// payload's `snapshot` member says which disks, into which artifacts and blob UUIDs.
    case instanceSnapshot = "instance.snapshot"

    /// What the payload names: the object the job is about, or a namespace.
    public enum Subject: String, Sendable {
        case network, instance, interface, artifact, namespace

        /// The payload key that holds it (`network_uuid`, …, `namespace`).
        public var payloadKey: String { self == .namespace ? "namespace" : rawValue + "_uuid" }
    }

    /// What this kind's payload names.
    public var subject: Subject {
        switch self {
        case .networkCreate, .networkDelete, .networkRefresh: return .network
        case .instanceDeleteAll: return .namespace
        case .interfaceFloat, .interfaceDefloat: return .interface
        case .artifactFetch: return .artifact
        default: return .instance
        }
    }

    /// Whether a job of this kind may download (an artifact's URL, an instance's disk bases) and so
    /// take as long as a slow server makes it: the agent runs these in a lane of their own, so that
    /// they never hold every worker (a network.create must not wait behind a download). A snapshot,
    /// which copies whole disks, is such long work too.
    public var mayDownload: Bool {
        switch self {
        case .artifactFetch, .instanceCreate, .instanceSnapshot: return true
        default: return false
        }
    }

    /// Payload members this kind has beside its subject's key and `request_id`, which the handler
    /// checks itself (a snapshot's disks).
    public var extraPayloadKeys: Set<String> { self == .instanceSnapshot ? ["snapshot"] : [] }

    /// The power operation of an `instance.power…`/`pause` kind, nil for the others.
    public var powerOperation: PowerOperation? {
        switch self {
        case .instancePoweron: return .poweron
        case .instancePoweroff: return .poweroff
        case .instanceRebootsoft: return .rebootsoft
        case .instanceReboothard: return .reboothard
        case .instancePause: return .pause
        case .instanceUnpause: return .unpause
        default: return nil
        }
    }

    /// The kind that carries out `operation`.
    public init(_ operation: PowerOperation) {
        switch operation {
        case .poweron: self = .instancePoweron
        case .poweroff: self = .instancePoweroff
        case .rebootsoft: self = .instanceRebootsoft
        case .reboothard: self = .instanceReboothard
        case .pause: self = .instancePause
        case .unpause: self = .instanceUnpause
        }
    }
}

/// The power operations a job can ask for, named as Shaken Fist's API names them.
public enum PowerOperation: String, Sendable, CaseIterable, Codable {
    case poweron, poweroff, rebootsoft, reboothard, pause, unpause

    /// The operation in words, for events and errors.
    public var verb: String {
        switch self {
        case .poweron: return "power on"
        case .poweroff: return "power off"
        case .rebootsoft: return "soft reboot"
        case .reboothard: return "hard reboot"
        case .pause: return "pause"
        case .unpause: return "unpause"
        }
    }

    /// The word of Shaken Fist's refusal when the instance is powered off (`you cannot reboot a
    /// powered off instance`); nil for what a powered-off instance can do.
    public var refusedWhenOff: String? {
        switch self {
        case .rebootsoft, .reboothard: return "reboot"
        case .pause: return "pause"
        case .unpause: return "unpause"
        case .poweron, .poweroff: return nil
        }
    }
}

/// A job's kind and payload, typed and checked: what the agent's handlers take, and what every
/// submitter (the command line, the API, the use cases) builds jobs from.
public struct JobOrder: Hashable, Sendable {
    public let kind: JobKind
    /// The object (or namespace) the job is about.
    public let subject: Reference
    /// The request that caused the job, carried into its events and log lines.
    public let requestID: String?

    /// What a job is about.
    public enum Reference: Hashable, Sendable {
        case network(UUID)
        case instance(UUID)
        case interface(UUID)
        case artifact(UUID)
        case namespace(String)
    }

    public init(_ kind: JobKind, _ subject: Reference, requestID: String? = nil) throws(ControlError) {
        switch (kind.subject, subject) {
        case (.network, .network), (.instance, .instance), (.interface, .interface), (.artifact, .artifact), (.namespace, .namespace):
            break
        default: throw .invalid("a \(kind.rawValue) job is about a \(kind.subject.rawValue), not \(subject)")
        }
        if case .namespace(let name) = subject { try Names.checkName(name, "namespace") }
        self.kind = kind
        self.subject = subject
        self.requestID = requestID
    }

    /// The UUID of the object the job is about; nil for a namespace.
    public var objectUUID: UUID? {
        switch subject {
        case .network(let uuid), .instance(let uuid), .interface(let uuid), .artifact(let uuid): return uuid
        case .namespace: return nil
        }
    }

    /// The payload as stored: `{"<subject>_uuid": "…"}` or `{"namespace": "…"}`, plus `request_id`.
    public var payload: JSONValue {
        var fields: [String: JSONValue] = [:]
        switch subject {
        case .network(let uuid), .instance(let uuid), .interface(let uuid), .artifact(let uuid):
            fields[kind.subject.payloadKey] = .string(uuid.lowercasedString)
        case .namespace(let name): fields["namespace"] = .string(name)
        }
        if let requestID { fields["request_id"] = .string(requestID) }
        return .object(fields)
    }

    /// The key that orders jobs about the same object (`instance:<uuid>`); nil for namespace jobs.
    public var objectKey: String? { object?.text }

    /// The object the job is about; nil for a namespace.
    public var object: ObjectKey? {
        switch subject {
        case .network(let uuid): return ObjectKey(.network, uuid)
        case .instance(let uuid): return ObjectKey(.instance, uuid)
        case .interface(let uuid): return .interface(uuid)
        case .artifact(let uuid): return ObjectKey(.artifact, uuid)
        case .namespace: return nil
        }
    }

    /// The job to queue for `target`.
    public func job(for target: JobTarget, maxAttempts: Int = 5) -> NewJob {
        NewJob(kind: kind.rawValue, payload: payload, target: target, objectKey: objectKey, maxAttempts: maxAttempts)
    }

    /// Decodes a stored or submitted job, refusing an unknown kind, a payload that is not an object,
    /// a missing or malformed field, and fields the kind does not have, each by name.
    public static func decode(kind text: String, payload: JSONValue) throws(ControlError) -> JobOrder {
        guard let kind = JobKind(rawValue: text) else {
            throw .invalid("unknown job kind '\(text)' (known: \(JobKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard case .object(let fields) = payload else {
            throw .invalid("the payload of a \(text) job must be a JSON object with \"\(kind.subject.payloadKey)\"")
        }
        let key = kind.subject.payloadKey
        let unknown = Set(fields.keys).subtracting([key, "request_id"]).subtracting(kind.extraPayloadKeys)
        guard unknown.isEmpty else {
            let extra = kind.extraPayloadKeys.sorted().map { ", \"\($0)\"" }.joined()
            throw .invalid("the payload of a \(text) job has unknown field(s) \(unknown.sorted().map { "\"\($0)\"" }.joined(separator: ", ")); it takes \"\(key)\"\(extra) and \"request_id\"")
        }
        guard let value = fields[key] else { throw .invalid("the payload of a \(text) job has no \"\(key)\"") }
        guard let string = value.stringValue else { throw .invalid("\"\(key)\" of a \(text) job must be a string") }
        var requestID: String?
        if let field = fields["request_id"] {
            guard let text = field.stringValue, !text.isEmpty, text.utf8.count <= 128 else {
                throw .invalid("\"request_id\" of a \(text) job must be a string of 1 to 128 bytes")
            }
            requestID = text
        }
        let subject: Reference
        if kind.subject == .namespace {
            subject = .namespace(string)
        } else {
            guard let uuid = UUID(uuidString: string) else { throw .invalid("\"\(key)\" of a \(text) job is '\(string)', not a UUID") }
            switch kind.subject {
            case .network: subject = .network(uuid)
            case .instance: subject = .instance(uuid)
            case .artifact: subject = .artifact(uuid)
            default: subject = .interface(uuid)
            }
        }
        return try JobOrder(kind, subject, requestID: requestID)
    }
}
