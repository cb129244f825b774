import Foundation

/// The limits on names users give objects, checked when a request arrives so that nothing fails
/// later deep inside libvirt or the kernel ("File name too long").
public enum Names {
    /// The longest instance name: a DNS label, since it becomes the guest's host name.
    public static let instanceNameLimit = 63
    /// The longest network, artifact or namespace name.
    public static let nameLimit = 64
    /// The longest metadata key.
    public static let metadataKeyLimit = 128

    /// Refuses an instance name that is not usable as a DNS and Linux host name (Shaken Fist's rule):
    /// 1 to 63 characters from a-z, A-Z, 0-9 and '-', not starting or ending with '-'.
    public static func checkInstanceName(_ name: String) throws(ControlError) {
        let valid =
            !name.isEmpty && name.utf8.count <= instanceNameLimit && !name.hasPrefix("-") && !name.hasSuffix("-")
            && name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-") }
        guard valid else {
            throw .invalid(
                "instance name '\(name.prefix(80))\(name.count > 80 ? "…" : "")' is not usable as a DNS and Linux host name: "
                    + "use 1 to \(instanceNameLimit) characters from a-z, A-Z, 0-9 and hyphen, not starting or ending with a hyphen")
        }
    }

    /// Refuses a namespace or key name that is not 1 to ``nameLimit`` characters of ASCII letters,
    /// digits, '.', '_' and '-'. Namespaces and keys are compared byte for byte by the store, but
    /// Swift's `==` takes canonically equivalent Unicode (`caf\u{e9}` and `cafe\u{301}`) for the
    /// same: non-ASCII names would make two namespaces that look and compare alike. Names stored
    /// before this rule keep working; only new ones are checked.
    public static func checkIdentifier(_ name: String, _ what: String) throws(ControlError) {
        guard !name.isEmpty else { throw .invalid("\(what) is empty") }
        guard name.utf8.count <= nameLimit else {
            throw .invalid("\(what) '\(name.prefix(40))…' is \(name.utf8.count) bytes long; the limit is \(nameLimit)")
        }
        guard name.utf8.allSatisfy({ isIdentifierByte($0) }) else {
            throw .invalid("\(what) '\(name.prefix(80))' may only contain ASCII letters, digits, '.', '_' and '-'")
        }
    }

    private static func isIdentifierByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): return true
        default: return false
        }
    }

    /// Refuses an empty name, one longer than ``nameLimit`` bytes, or one with control characters,
    /// '/' (names appear in paths and logs) or surrounding spaces. `what` is "network name" and so on.
    public static func checkName(_ name: String, _ what: String) throws(ControlError) {
        guard !name.isEmpty else { throw .invalid("\(what) is empty") }
        guard name.utf8.count <= nameLimit else {
            throw .invalid("\(what) '\(name.prefix(40))…' is \(name.utf8.count) bytes long; the limit is \(nameLimit)")
        }
        guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == "/" }) else {
            throw .invalid("\(what) '\(name)' contains '/' or a control character")
        }
        guard name.trimmingCharacters(in: .whitespaces) == name else {
            throw .invalid("\(what) '\(name)' starts or ends with a space")
        }
    }
}
