import CLibvirt

/// A failed libvirt call: libvirt's own error (code, domain, message from `virGetLastError`, read on
/// the calling thread right after the call) and what sfnode was doing to which object.
public struct LibvirtError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What sfnode was doing, such as `start` or `connect`.
    public let operation: String
    /// The object it was done to, such as `domain 'web1'` or a connection URI.
    public let object: String
    /// libvirt's `virErrorNumber` (`VIR_ERR_*`).
    public let code: Int32
    /// libvirt's `virErrorDomain` (`VIR_FROM_*`): the subsystem that raised it.
    public let domain: Int32
    /// libvirt's message.
    public let message: String

    /// An error with every field given; sfnode builds them from ``LibvirtError/last(_:object:)``.
    public init(operation: String, object: String, code: Int32, domain: Int32, message: String) {
        self.operation = operation
        self.object = object
        self.code = code
        self.domain = domain
        self.message = message
    }

    /// `VIR_ERR_NO_DOMAIN`: the domain does not exist.
    public static let noDomainCode = Int32(VIR_ERR_NO_DOMAIN.rawValue)
    /// `VIR_ERR_OPERATION_INVALID`: the domain is in the wrong state for the operation.
    public static let operationInvalidCode = Int32(VIR_ERR_OPERATION_INVALID.rawValue)
    /// `VIR_ERR_NO_DOMAIN_METADATA`: the domain has no such metadata element.
    public static let noMetadataCode = Int32(VIR_ERR_NO_DOMAIN_METADATA.rawValue)
    /// `VIR_ERR_XML_ERROR`: libvirt refused the XML's content.
    public static let xmlErrorCode = Int32(VIR_ERR_XML_ERROR.rawValue)
    /// `VIR_ERR_XML_DETAIL`: the XML is not well-formed (libxml2's parse error).
    public static let xmlDetailCode = Int32(VIR_ERR_XML_DETAIL.rawValue)

    /// Whether libvirt said the domain does not exist.
    public var isNoDomain: Bool { code == Self.noDomainCode }

    /// Reads the calling thread's last libvirt error. Must run on the thread that made the failing
    /// call, before any other libvirt call: libvirt keeps it per thread and overwrites it.
    static func last(_ operation: String, object: String) -> LibvirtError {
        guard let error = virGetLastError() else {
            return LibvirtError(operation: operation, object: object, code: -1, domain: -1, message: "libvirt reported no error detail")
        }
        let message = error.pointee.message.map { String(cString: $0) } ?? "libvirt reported no message"
        let result = LibvirtError(
            operation: operation, object: object, code: error.pointee.code, domain: error.pointee.domain, message: message)
        virResetLastError()
        return result
    }

    /// `<operation> <object>: <libvirt's message> (libvirt error <code>, from <domain>)`.
    public var description: String {
        "\(operation) \(object): \(message) (libvirt error \(code), from \(domain))"
    }
}
