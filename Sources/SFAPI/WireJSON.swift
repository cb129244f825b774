import SFControl
import SFStore

/// The API's JSON of its objects, for the command line's `--json`: byte for byte what the API
/// answers, so `sfnode instance show --json` prints `GET /instances/<uuid>`.
public enum WireJSON {
    /// The body of `GET /instances/<uuid>`, given the nodes that are missing now.
    public static func instance(_ record: InstanceRecord, missingNodes: Set<String>) -> String {
        String(decoding: JSONWriter.encode(InstanceView(record, missingNodes: missingNodes)), as: UTF8.self)
    }

    /// The body of `GET /nodes/<name>`, from the node, its metadata and its state.
    public static func node(_ node: Node, metadata: [String: JSONValue], state: String) -> String {
        String(decoding: JSONWriter.encode(NodeView(node: node, metadata: metadata, state: state)), as: UTF8.self)
    }

    /// The body of `GET /instances/<uuid>/snapshot`, from the snapshots and each blob's metadata.
    public static func snapshots(_ versions: [(SnapshotVersion, metadata: [String: JSONValue])]) -> String {
        String(decoding: JSONWriter.encode(versions.map { SnapshotVersionView(version: $0.0, metadata: $0.metadata) }), as: UTF8.self)
    }
}
