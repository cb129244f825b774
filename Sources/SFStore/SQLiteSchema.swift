import Foundation
import GRDB

/// The SQLite schema: versioned migrations, applied in order by GRDB's migrator; append new ones,
/// never edit an applied one. The PostgreSQL schema (PostgresSchema.swift) must end with the same
/// tables and columns, which RowVocabularyTests checks on both.
extension SQLiteBackend {
    /// Versioned migrations; append new ones, never edit an applied one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE node (
                        name TEXT PRIMARY KEY NOT NULL,
                        roles TEXT NOT NULL,
                        last_seen REAL);
                    CREATE TABLE network (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        namespace TEXT NOT NULL,
                        netblock TEXT NOT NULL,
                        provide_dhcp INTEGER NOT NULL,
                        provide_nat INTEGER NOT NULL,
                        vxid INTEGER NOT NULL UNIQUE CHECK (vxid BETWEEN 1 AND 16777215),
                        state TEXT NOT NULL,
                        state_updated REAL NOT NULL,
                        floating_gateway TEXT,
                        created REAL NOT NULL);
                    CREATE TABLE instance (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        namespace TEXT NOT NULL,
                        cpus INTEGER NOT NULL,
                        memory INTEGER NOT NULL,
                        disk_spec TEXT NOT NULL,
                        video TEXT NOT NULL,
                        node TEXT,
                        state TEXT NOT NULL,
                        state_updated REAL NOT NULL,
                        power_state TEXT NOT NULL,
                        power_state_previous TEXT,
                        power_state_updated REAL NOT NULL,
                        error_message TEXT,
                        created REAL NOT NULL);
                    CREATE INDEX instance_node ON instance(node);
                    CREATE TABLE interface (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        instance_uuid TEXT NOT NULL,
                        network_uuid TEXT NOT NULL,
                        macaddr TEXT NOT NULL,
                        ipv4 TEXT,
                        "order" INTEGER NOT NULL,
                        model TEXT NOT NULL,
                        floating TEXT,
                        state TEXT NOT NULL);
                    CREATE INDEX interface_instance ON interface(instance_uuid);
                    CREATE INDEX interface_network ON interface(network_uuid);
                    CREATE TABLE ipv4_allocation (
                        network_uuid TEXT NOT NULL,
                        address INTEGER NOT NULL,
                        owner TEXT NOT NULL,
                        PRIMARY KEY (network_uuid, address)) WITHOUT ROWID;
                    CREATE TABLE floating_allocation (
                        address INTEGER PRIMARY KEY NOT NULL,
                        range TEXT NOT NULL,
                        owner TEXT NOT NULL);
                    CREATE TABLE mac_allocation (
                        macaddr TEXT PRIMARY KEY NOT NULL,
                        owner TEXT NOT NULL) WITHOUT ROWID;
                    CREATE TABLE metadata (
                        object_type TEXT NOT NULL,
                        object_uuid TEXT NOT NULL,
                        key TEXT NOT NULL,
                        value TEXT NOT NULL,
                        PRIMARY KEY (object_type, object_uuid, key)) WITHOUT ROWID;
                    CREATE TABLE event (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        object_type TEXT NOT NULL,
                        object_uuid TEXT NOT NULL,
                        type TEXT NOT NULL,
                        timestamp REAL NOT NULL,
                        fqdn TEXT NOT NULL,
                        duration REAL,
                        message TEXT NOT NULL,
                        extra TEXT);
                    CREATE INDEX event_object ON event(object_type, object_uuid, timestamp);
                    CREATE TABLE job (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        kind TEXT NOT NULL,
                        payload TEXT NOT NULL,
                        target TEXT NOT NULL,
                        object_key TEXT,
                        state TEXT NOT NULL,
                        attempts INTEGER NOT NULL,
                        max_attempts INTEGER NOT NULL,
                        not_before REAL NOT NULL,
                        lease_owner TEXT,
                        lease_expiry REAL,
                        last_error TEXT,
                        created REAL NOT NULL,
                        updated REAL NOT NULL);
                    CREATE INDEX job_claim ON job(state, target, id);
                    CREATE INDEX job_unfinished_object ON job(object_key, id) WHERE state IN ('queued', 'running');
                    """)
        }
        migrator.registerMigration("v2: node mesh address") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN mesh_address TEXT")
        }
        migrator.registerMigration("v3: node capacity") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN capacity TEXT")
        }
        // v4: blobs, references, artifacts, uploads (below).
        registerBlobMigrations(&migrator)
        // v5: instance config, namespaces, keys, settings (below).
        registerNamespaceMigrations(&migrator)
        // v6-job-deaths: how often a job's agent died under it (below).
        registerQueueMigrations(&migrator)
        // Existing networks keep the anti-spoofing filter on, as new ones get it.
        migrator.registerMigration("v7-network-spoof-filter") { db in
            try db.execute(sql: "ALTER TABLE network ADD COLUMN spoof_filter INTEGER NOT NULL DEFAULT 1")
        }
        // v8: retention's indexes (below).
        registerRetentionMigrations(&migrator)
        // Existing networks never offered DNS.
        migrator.registerMigration("v9-network-provide-dns") { db in
            try db.execute(sql: "ALTER TABLE network ADD COLUMN provide_dns INTEGER NOT NULL DEFAULT 0")
            // Extra DNS records, {name: address} (SQLStore+NetworkDNS.swift).
            try db.execute(sql: "ALTER TABLE network ADD COLUMN dns_entries TEXT NOT NULL DEFAULT '{}'")
        }
        registerTrustMigrations(&migrator)
        // The console and display ports a node gave its instances (issue 14).
        migrator.registerMigration("v11-instance-ports") { db in
            try db.execute(sql: "ALTER TABLE instance ADD COLUMN console_port INTEGER")
            try db.execute(sql: "ALTER TABLE instance ADD COLUMN vdi_port INTEGER")
        }
        // Nodes an operator deleted (issue 14): check-ins update the row but never this column.
        migrator.registerMigration("v12-node-deleted") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN deleted REAL")
        }
        migrator.registerMigration("v13-job-live") { db in
            // The live jobs in queue order: a claim walks it from the oldest and stops at its
            // limit (PostgreSQL needs another shape of the same index: PostgresSchema.swift).
            try db.execute(sql: "CREATE INDEX job_live ON job(id) WHERE state IN ('queued', 'running')")
        }
        // Which claim of a job holds its lease (Job.leaseToken): a job running at the migration
        // keeps claim 0, which its holder's lease names too.
        migrator.registerMigration("v14-job-lease-token") { db in
            try db.execute(sql: "ALTER TABLE job ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0")
        }
        return migrator
    }

    /// Registers the blob, reference, artifact and upload tables ("v4: blobs"). Append later blob
    /// migrations here, never edit an applied one.
    static func registerBlobMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v4: blobs") { db in
            try db.execute(
                sql: """
                    CREATE TABLE blob (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        size INTEGER NOT NULL,
                        sha512 TEXT,
                        state TEXT NOT NULL,
                        modified REAL NOT NULL,
                        fetched_at REAL,
                        last_used REAL,
                        locations TEXT NOT NULL,
                        info TEXT NOT NULL,
                        created REAL NOT NULL);
                    CREATE INDEX blob_sha512 ON blob(sha512);
                    CREATE TABLE blob_reference (
                        blob_uuid TEXT NOT NULL,
                        holder_type TEXT NOT NULL,
                        holder_uuid TEXT NOT NULL,
                        relationship TEXT NOT NULL,
                        created REAL NOT NULL,
                        PRIMARY KEY (blob_uuid, holder_type, holder_uuid, relationship)) WITHOUT ROWID;
                    CREATE INDEX blob_reference_holder ON blob_reference(holder_type, holder_uuid);
                    CREATE TABLE artifact (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        type TEXT NOT NULL,
                        name TEXT NOT NULL,
                        source_url TEXT,
                        namespace TEXT NOT NULL,
                        state TEXT NOT NULL,
                        max_versions INTEGER NOT NULL CHECK (max_versions >= 1),
                        highest_index INTEGER NOT NULL,
                        created REAL NOT NULL);
                    CREATE UNIQUE INDEX artifact_live ON artifact(type, namespace, name) WHERE state != 'deleted';
                    CREATE TABLE artifact_version (
                        artifact_uuid TEXT NOT NULL,
                        "index" INTEGER NOT NULL,
                        blob_uuid TEXT NOT NULL,
                        created REAL NOT NULL,
                        last_modified TEXT,
                        content_length INTEGER,
                        PRIMARY KEY (artifact_uuid, "index")) WITHOUT ROWID;
                    CREATE INDEX artifact_version_blob ON artifact_version(blob_uuid);
                    CREATE TABLE upload (
                        uuid TEXT PRIMARY KEY NOT NULL,
                        node TEXT NOT NULL,
                        namespace TEXT NOT NULL,
                        received INTEGER NOT NULL,
                        created REAL NOT NULL);
                    """)
        }
        // Artifacts belong to their namespace; `shared` ones (system's only) are seen by every
        // namespace. Until now every system image artifact cached from a URL was shared: they stay so.
        migrator.registerMigration("v6: shared artifacts") { db in
            try db.execute(
                sql: """
                    ALTER TABLE artifact ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
                    UPDATE artifact SET shared = 1
                        WHERE namespace = 'system' AND type = 'image' AND name = source_url
                        AND (lower(name) LIKE 'http://%' OR lower(name) LIKE 'https://%');
                    """)
        }
    }

    /// Registers "v5: namespaces": the instance's config column, namespaces, their keys and the
    /// cluster settings. Append later migrations here, never edit an applied one.
    static func registerNamespaceMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v5: namespaces") { db in
            try db.execute(
                sql: """
                    ALTER TABLE instance ADD COLUMN config TEXT;
                    CREATE TABLE namespace (
                        name TEXT PRIMARY KEY NOT NULL,
                        state TEXT NOT NULL,
                        created REAL NOT NULL);
                    CREATE TABLE namespace_key (
                        namespace TEXT NOT NULL,
                        name TEXT NOT NULL,
                        hash TEXT NOT NULL,
                        nonce TEXT NOT NULL,
                        created REAL NOT NULL,
                        PRIMARY KEY (namespace, name)) WITHOUT ROWID;
                    CREATE TABLE setting (
                        key TEXT PRIMARY KEY NOT NULL,
                        value TEXT NOT NULL) WITHOUT ROWID;
                    """)
        }
    }

    /// Which namespaces trust which (issue 14): registered after every earlier migration.
    static func registerTrustMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v10-namespace-trusts") { db in
            try db.execute(
                sql: """
                    CREATE TABLE namespace_trust (
                        namespace TEXT NOT NULL,
                        trusted TEXT NOT NULL,
                        PRIMARY KEY (namespace, trusted)) WITHOUT ROWID;
                    CREATE INDEX namespace_trusted ON namespace_trust(trusted);
                    """)
        }
    }

    /// v6-job-deaths: lease lapses of a running job, counted apart from attempts.
    static func registerQueueMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v6-job-deaths") { db in
            try db.execute(sql: "ALTER TABLE job ADD COLUMN deaths INTEGER NOT NULL DEFAULT 0")
        }
    }

    /// Registers "v8-retention-indexes": the indexes that let a prune find old and deleted rows
    /// without scanning their tables, and `deleted_seen`, which remembers when a prune first saw a
    /// deleted artifact or blob (those rows record no time of deletion).
    static func registerRetentionMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v8-retention-indexes") { db in
            try db.execute(
                sql: """
                    CREATE INDEX event_timestamp ON event(timestamp);
                    CREATE INDEX job_finished ON job(updated) WHERE state IN ('succeeded', 'failed');
                    CREATE INDEX instance_deleted ON instance(state_updated) WHERE state = 'deleted';
                    CREATE INDEX network_deleted ON network(state_updated) WHERE state = 'deleted';
                    CREATE INDEX artifact_deleted ON artifact(uuid) WHERE state = 'deleted';
                    CREATE INDEX blob_deleted ON blob(uuid) WHERE state = 'deleted';
                    CREATE TABLE deleted_seen (
                        object_type TEXT NOT NULL,
                        object_uuid TEXT NOT NULL,
                        seen REAL NOT NULL,
                        PRIMARY KEY (object_type, object_uuid)) WITHOUT ROWID;
                    """)
        }
    }
}
