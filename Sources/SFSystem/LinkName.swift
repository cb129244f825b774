/// The kernel's rule for network device names (`dev_valid_name`), plus no control characters: the one
/// rule netlink, the firewall and the configuration all check names against, so that a bad name
/// fails with a message saying why rather than a bare "Invalid input data or parameter".
public enum LinkName {
    /// IFNAMSIZ less its terminating zero.
    public static let maximumLength = 15

    /// Why `name` cannot be a device name, as the end of a sentence ("is empty"), or nil when it can.
    public static func problem(with name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "is empty" }
        if bytes.count > maximumLength { return "is \(bytes.count) bytes long; device names have at most \(maximumLength)" }
        if bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 || $0 == 0x7f }) {
            return "contains '/', ':', whitespace or a control character, which device names cannot"
        }
        if name == "." || name == ".." { return "is '.' or '..', which the kernel refuses" }
        return nil
    }
}
