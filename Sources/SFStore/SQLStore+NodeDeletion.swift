import Foundation

extension SQLStore {
    public func deleteNode(named name: String, reason: String) async throws -> Node {
        let now = Date.storableNow().timeIntervalSince1970
        return try await write { db in
            try db.execute(sql: "UPDATE node SET deleted = ? WHERE name = ? AND deleted IS NULL", arguments: [now, name])
            guard let node = try db.firstRow(NodeTable.self, NodeTable.select + "WHERE name = ?", [name]) else {
                throw StoreError.notFound(type: "node", id: name)
            }
            // Queued or leased to that node by name: nobody else may claim them, so they would wait forever.
            try db.execute(
                sql: """
                    UPDATE job SET state = 'failed', lease_owner = NULL, lease_expiry = NULL, last_error = ?, updated = ?
                    WHERE target = ? AND state IN ('queued', 'running')
                    """,
                arguments: [reason, now, JobTarget.node(name).description])
            return node
        }
    }
}
