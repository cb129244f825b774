import Foundation

/// Retention: what ``RetentionPolicy`` says has been kept long enough is deleted, in bounded
/// transactions. Each transaction re-checks, under the write lock, everything that keeps a row
/// alive, so a job queued or a reference taken between two batches is seen before anything goes.
extension SQLStore {

    public func prune(_ policy: RetentionPolicy, now: Date) async throws -> PruneReport {
        try policy.validate()
        let clock = now.timeIntervalSince1970
        let eventCutoff = clock - policy.eventAge.seconds
        let jobCutoff = clock - policy.finishedJobAge.seconds
        let deletedCutoff = clock - policy.deletedAge.seconds
        var report = PruneReport()
        let rows = policy.batchRows

        // INDEXED BY: without statistics the planner prefers job_claim, which walks every
        // finished job, recent ones included, on every batch.
        try await drain(&report, rows) { db, batch in
            try Self.deleteSome(
                db, "DELETE FROM job WHERE id IN (SELECT id FROM job INDEXED BY job_finished WHERE state IN ('succeeded', 'failed') AND updated < ? LIMIT ?)",
                [jobCutoff], &batch, \.jobs)
        }
        try await drain(&report, rows) { db, batch in
            try Self.deleteSome(
                db, "DELETE FROM event WHERE id IN (SELECT id FROM event WHERE timestamp < ? LIMIT ?)", [eventCutoff], &batch, \.events)
        }
        try await drain(&report, rows) { db, batch in try Self.pruneInstances(db, before: deletedCutoff, &batch) }
        try await drain(&report, rows) { db, batch in try Self.pruneNetworks(db, before: deletedCutoff, &batch) }
        for type in ["artifact", "blob"] {
            try await drain(&report, rows) { db, batch in try Self.markDeleted(db, type: type, now: clock, &batch) }
        }
        try await drain(&report, rows) { db, batch in try Self.pruneArtifacts(db, before: deletedCutoff, &batch) }
        try await drain(&report, rows) { db, batch in try Self.pruneBlobs(db, before: deletedCutoff, &batch) }

        // Last, so that the rows already gone are not counted. One pass over the event index finds
        // the objects over the cap; each is then trimmed, newest kept, a batch at a time.
        let cap = policy.eventsPerObject
        let crowded = try await read { db in
            var objects: [[String]] = []
            try db.eachPositionalRow("SELECT object_type, object_uuid FROM event GROUP BY object_type, object_uuid HAVING count(*) > ?", [cap], reading: "event"
            ) { row in
                objects.append([try row.requiredString(at: 0, "event.object_type"), try row.requiredString(at: 1, "event.object_uuid")])
            }
            return objects
        }
        for object in crowded {
            try await drain(&report, rows) { db, batch in
                try Self.deleteSome(
                    db,
                    """
                    DELETE FROM event WHERE id IN (
                        SELECT id FROM event WHERE object_type = ?1 AND object_uuid = ?2
                        ORDER BY timestamp DESC, id DESC LIMIT ?4 OFFSET ?3)
                    """, [object[0], object[1], cap], &batch, \.events)
            }
        }
        return report
    }

    /// One prune transaction's allowance and tally.
    struct PruneBatch {
        /// Rows this transaction may still delete.
        var budget: Int
        var removed = PruneReport()

        mutating func spend(_ count: Int, _ counter: WritableKeyPath<PruneReport, Int>) {
            budget -= count
            removed[keyPath: counter] += count
        }
    }

    /// Runs `step` in one write transaction after another, each allowed `rows` rows, until a step
    /// reports that nothing of its kind remains (returns true). After each transaction it waits as
    /// long as the transaction took, so that a long prune holds the write lock at most half the
    /// time and other writers, in this process or another, are never shut out.
    private func drain(
        _ report: inout PruneReport, _ rows: Int, _ step: @escaping @Sendable (any StoreDatabase, inout PruneBatch) throws -> Bool
    ) async throws {
        while true {
            try Task.checkCancellation()
            let started = ContinuousClock.now
            let (finished, removed) = try await write { db in
                var batch = PruneBatch(budget: rows)
                let finished = try step(db, &batch)
                return (finished, batch.removed)
            }
            report.events += removed.events
            report.jobs += removed.jobs
            report.instances += removed.instances
            report.interfaces += removed.interfaces
            report.networks += removed.networks
            report.artifacts += removed.artifacts
            report.blobs += removed.blobs
            report.otherRows += removed.otherRows
            report.transactions += 1
            report.largestTransaction = max(report.largestTransaction, removed.total)
            if finished { return }
            try await Task.sleep(for: ContinuousClock.now - started)
        }
    }

    /// Runs `sql`, a DELETE whose last argument is the row limit, with the batch's remaining budget
    /// appended to `arguments`, and counts what it deleted. True when fewer rows than allowed were
    /// deleted, that is when no such row is left.
    static func deleteSome(
        _ db: any StoreDatabase, _ sql: String, _ arguments: StoreArguments, _ batch: inout PruneBatch,
        _ counter: WritableKeyPath<PruneReport, Int>
    ) throws -> Bool {
        let limit = batch.budget
        guard limit > 0 else { return false }
        var withLimit = arguments
        withLimit += [limit]
        try db.execute(sql: sql, arguments: withLimit)
        let deleted = db.changesCount
        batch.spend(deleted, counter)
        return deleted < limit
    }

    /// Deletes (within the budget) an object's events and metadata; true when none are left.
    static func deleteHistory(_ db: any StoreDatabase, type: String, uuid: String, _ batch: inout PruneBatch) throws -> Bool {
        guard
            try deleteSome(
                db, "DELETE FROM event WHERE id IN (SELECT id FROM event WHERE object_type = ? AND object_uuid = ? LIMIT ?)",
                [type, uuid], &batch, \.events)
        else { return false }
        return try deleteSome(
            db,
            """
            DELETE FROM metadata WHERE object_type = ?1 AND object_uuid = ?2
              AND key IN (SELECT key FROM metadata WHERE object_type = ?1 AND object_uuid = ?2 LIMIT ?3)
            """, [type, uuid], &batch, \.otherRows)
    }

    /// Deletes one fixed set of rows (an object's own row, or one of its few leftovers) and counts
    /// them; the caller has checked that the budget has room for them.
    static func deleteRow(
        _ db: any StoreDatabase, _ sql: String, _ arguments: StoreArguments, _ batch: inout PruneBatch,
        _ counter: WritableKeyPath<PruneReport, Int>
    ) throws {
        try db.execute(sql: sql, arguments: arguments)
        batch.spend(db.changesCount, counter)
    }

    // MARK: - Deleted objects

    /// Whether a queued or running job is about the object whose key `key` (an SQL expression)
    /// gives; written to match the partial index `job_unfinished_object`.
    private static func liveJob(_ key: String) -> String {
        "EXISTS (SELECT 1 FROM job WHERE object_key = \(key) AND state IN ('queued', 'running'))"
    }

    /// Deleted instances past the cutoff, with their interfaces. An instance stays while it holds a
    /// blob reference (its disks were not released yet: the agent still has work to do), while a
    /// job about it or one of its interfaces is queued or running, or while one of its interfaces
    /// is not deleted.
    static func pruneInstances(_ db: any StoreDatabase, before cutoff: Double, _ batch: inout PruneBatch) throws -> Bool {
        let limit = batch.budget
        let candidates = try db.fetchAll(String.self, sql: """
                SELECT i.uuid FROM instance AS i
                WHERE i.state = 'deleted' AND i.state_updated < ?1
                  AND NOT EXISTS (SELECT 1 FROM blob_reference WHERE holder_type = 'instance' AND holder_uuid = i.uuid)
                  AND NOT \(liveJob("'instance:' || i.uuid"))
                  AND NOT EXISTS (
                      SELECT 1 FROM interface AS f WHERE f.instance_uuid = i.uuid
                        AND (f.state != 'deleted' OR \(liveJob("'interface:' || f.uuid"))))
                ORDER BY i.state_updated, i.uuid
                LIMIT ?2
                """,
            arguments: [cutoff, limit])
        for uuid in candidates {
            guard try pruneInstance(db, uuid, &batch) else { return false }
        }
        return candidates.count < limit
    }

    private static let selectInterfacesToPrune = InterfaceTable.select + "WHERE instance_uuid = ?"

    /// Removes one instance and its interfaces, children first, so that whatever a full budget
    /// leaves for the next transaction is still a consistent deleted instance. True when it is gone.
    private static func pruneInstance(_ db: any StoreDatabase, _ uuid: String, _ batch: inout PruneBatch) throws -> Bool {
        // Read whole before the loop deletes from the same table.
        var interfaces: [(id: String, network: String, mac: String)] = []
        try db.eachRow(InterfaceTable.self, selectInterfacesToPrune, [uuid]) { row in
            interfaces.append((try row.requiredText(.uuid), try row.requiredText(.networkUUID), try row.requiredText(.macaddr)))
        }
        for (id, network, mac) in interfaces {
            guard try deleteHistory(db, type: "interface", uuid: id, &batch), batch.budget >= 4 else { return false }
            // Deleting the interface released these; an allocation still held by its owner is a
            // leftover (of a crash or an older build) that nothing else would ever free.
            let owner = ObjectKey.text(.interface, id)
            try deleteRow(db, "DELETE FROM ipv4_allocation WHERE network_uuid = ? AND owner = ?", [network, owner], &batch, \.otherRows)
            try deleteRow(db, "DELETE FROM mac_allocation WHERE macaddr = ? AND owner = ?", [mac, owner], &batch, \.otherRows)
            try deleteRow(db, "DELETE FROM floating_allocation WHERE owner = ?", [owner], &batch, \.otherRows)
            try deleteRow(db, "DELETE FROM interface WHERE uuid = ?", [id], &batch, \.interfaces)
        }
        guard try deleteHistory(db, type: "instance", uuid: uuid, &batch), batch.budget >= 1 else { return false }
        try deleteRow(db, "DELETE FROM instance WHERE uuid = ?", [uuid], &batch, \.instances)
        return true
    }

    /// Deleted networks past the cutoff. A network stays while any interface row names it (those
    /// go with their instance) or a job about it is queued or running.
    static func pruneNetworks(_ db: any StoreDatabase, before cutoff: Double, _ batch: inout PruneBatch) throws -> Bool {
        let limit = batch.budget
        let candidates = try db.fetchAll(String.self, sql: """
                SELECT n.uuid FROM network AS n
                WHERE n.state = 'deleted' AND n.state_updated < ?1
                  AND NOT EXISTS (SELECT 1 FROM interface WHERE network_uuid = n.uuid)
                  AND NOT \(liveJob("'network:' || n.uuid"))
                ORDER BY n.state_updated, n.uuid
                LIMIT ?2
                """,
            arguments: [cutoff, limit])
        for uuid in candidates {
            guard try deleteHistory(db, type: "network", uuid: uuid, &batch),
                // Leftovers, as for interfaces: addresses still allocated in the network, and its
                // floating gateway under either spelling of its owner (see releaseFloatingGateway).
                try deleteSome(
                    db,
                    """
                    DELETE FROM ipv4_allocation WHERE network_uuid = ?1
                      AND address IN (SELECT address FROM ipv4_allocation WHERE network_uuid = ?1 LIMIT ?2)
                    """, [uuid], &batch, \.otherRows),
                batch.budget >= 3
            else { return false }
            let upper = UUID(uuidString: uuid)?.uuidString ?? uuid
            try deleteRow(
                db, "DELETE FROM floating_allocation WHERE owner IN (?, ?)", ["network:\(uuid)", "network:\(upper)"], &batch, \.otherRows)
            try deleteRow(db, "DELETE FROM network WHERE uuid = ?", [uuid], &batch, \.networks)
        }
        return candidates.count < limit
    }

    /// Records when a prune first saw each deleted `type` ("artifact" or "blob") row, whose table
    /// keeps no time of deletion, and forgets the records of rows that are gone.
    static func markDeleted(_ db: any StoreDatabase, type: String, now: Double, _ batch: inout PruneBatch) throws -> Bool {
        guard batch.budget >= 1 else { return false }
        try db.execute(
            sql: """
                INSERT INTO deleted_seen (object_type, object_uuid, seen)
                SELECT ?1, o.uuid, ?2 FROM \(type) AS o
                WHERE o.state = 'deleted'
                  AND NOT EXISTS (SELECT 1 FROM deleted_seen WHERE object_type = ?1 AND object_uuid = o.uuid)
                LIMIT ?3
                """,
            arguments: [type, now, batch.budget])
        // Marks are bookkeeping, not history: they count against the budget but not as pruned.
        let marked = db.changesCount
        batch.budget -= marked
        guard batch.budget >= 1 else { return false }
        return try deleteSome(
            db,
            """
            DELETE FROM deleted_seen WHERE object_type = ?1 AND object_uuid IN (
                SELECT s.object_uuid FROM deleted_seen AS s
                WHERE s.object_type = ?1
                  AND NOT EXISTS (SELECT 1 FROM \(type) WHERE uuid = s.object_uuid AND state = 'deleted')
                LIMIT ?2)
            """, [type], &batch, \.otherRows)
    }

    /// Deleted artifacts seen deleted before the cutoff. Deleting an artifact dropped its versions
    /// and references; one that still has either, or a queued or running job, stays.
    static func pruneArtifacts(_ db: any StoreDatabase, before cutoff: Double, _ batch: inout PruneBatch) throws -> Bool {
        let limit = batch.budget
        let candidates = try db.fetchAll(String.self, sql: """
                SELECT a.uuid FROM artifact AS a
                JOIN deleted_seen AS s ON s.object_type = 'artifact' AND s.object_uuid = a.uuid
                WHERE a.state = 'deleted' AND s.seen < ?1
                  AND NOT EXISTS (SELECT 1 FROM blob_reference WHERE holder_type = 'artifact' AND holder_uuid = a.uuid)
                  AND NOT EXISTS (SELECT 1 FROM artifact_version WHERE artifact_uuid = a.uuid)
                  AND NOT \(liveJob("'artifact:' || a.uuid"))
                ORDER BY s.seen, a.uuid
                LIMIT ?2
                """,
            arguments: [cutoff, limit])
        return try deleteSeenDeleted(db, type: "artifact", uuids: candidates, limit: limit, &batch, \.artifacts)
    }

    /// Deleted blobs seen deleted before the cutoff whose data is gone from every node (no
    /// locations left: each node's sweep removes its copy and then its location). A blob that is
    /// referenced, holds a reference or is an artifact's version stays.
    static func pruneBlobs(_ db: any StoreDatabase, before cutoff: Double, _ batch: inout PruneBatch) throws -> Bool {
        let limit = batch.budget
        let candidates = try db.fetchAll(String.self, sql: """
                SELECT b.uuid FROM blob AS b
                JOIN deleted_seen AS s ON s.object_type = 'blob' AND s.object_uuid = b.uuid
                WHERE b.state = 'deleted' AND s.seen < ?1 AND b.locations = '[]'
                  AND NOT EXISTS (SELECT 1 FROM blob_reference WHERE blob_uuid = b.uuid)
                  AND NOT EXISTS (SELECT 1 FROM blob_reference WHERE holder_type = 'blob' AND holder_uuid = b.uuid)
                  AND NOT EXISTS (SELECT 1 FROM artifact_version WHERE blob_uuid = b.uuid)
                ORDER BY s.seen, b.uuid
                LIMIT ?2
                """,
            arguments: [cutoff, limit])
        return try deleteSeenDeleted(db, type: "blob", uuids: candidates, limit: limit, &batch, \.blobs)
    }

    /// Deletes each of `uuids` (artifacts or blobs, their table named as `type`) with its history and
    /// its deleted-since mark, while the batch has room; true when all `limit` candidates fit, so
    /// none are left.
    static func deleteSeenDeleted(
        _ db: any StoreDatabase, type: String, uuids: [String], limit: Int, _ batch: inout PruneBatch,
        _ counter: WritableKeyPath<PruneReport, Int>
    ) throws -> Bool {
        for uuid in uuids {
            guard try deleteHistory(db, type: type, uuid: uuid, &batch), batch.budget >= 2 else { return false }
            try deleteRow(db, "DELETE FROM deleted_seen WHERE object_type = ? AND object_uuid = ?", [type, uuid], &batch, \.otherRows)
            try deleteRow(db, "DELETE FROM \(type) WHERE uuid = ?", [uuid], &batch, counter)
        }
        return uuids.count < limit
    }
}
