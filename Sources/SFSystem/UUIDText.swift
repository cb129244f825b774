import Foundation

extension UUID {
    /// The UUID in lowercase, as Shaken Fist, the store, log metadata and file names write it
    /// (Foundation's `uuidString` is uppercase).
    public var lowercasedString: String { uuidString.lowercased() }
}
