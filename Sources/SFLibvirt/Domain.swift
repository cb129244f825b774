import CLibvirt
import Foundation

/// Names a domain, the way an API request or a log line does.
public enum DomainReference: Sendable, Hashable, CustomStringConvertible {
    /// By name: unique on the host at any moment, but a domain can be renamed.
    case name(String)
    /// By UUID: stable for the domain's whole life.
    case uuid(UUID)

    /// `domain 'NAME'` or `domain UUID`, as error messages name it.
    public var description: String {
        switch self {
        case .name(let name): return "domain '\(name)'"
        case .uuid(let uuid): return "domain \(uuid.lowercasedString)"
        }
    }
}

/// Who a domain is: what libvirt knows it by.
public struct DomainIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The domain's name, unique on the host.
    public let name: String
    /// The domain's UUID, unique everywhere and stable across renames.
    public let uuid: UUID

    /// An identity from its two parts.
    public init(name: String, uuid: UUID) {
        self.name = name
        self.uuid = uuid
    }

    /// `domain 'NAME' (UUID)`.
    public var description: String { "domain '\(name)' (\(uuid.lowercasedString))" }
}

/// A domain and its power state at the moment it was read.
public struct DomainStatus: Sendable, Hashable {
    /// Which domain.
    public let identity: DomainIdentity
    /// Its state, as sfnode reports it.
    public let powerState: PowerState
    /// libvirt's own `virDomainState`, for logs and for the states ``PowerState`` folds together.
    public let libvirtState: Int32
    /// libvirt's reason for that state (for a shut-off domain, a `virDomainShutoffReason`).
    public let libvirtReason: Int32

    /// A status from libvirt's `virDomainState` and its reason.
    public init(identity: DomainIdentity, libvirtState: Int32, libvirtReason: Int32 = 0) {
        self.identity = identity
        self.libvirtState = libvirtState
        self.libvirtReason = libvirtReason
        self.powerState = PowerState(libvirtState: libvirtState)
    }

    /// Whether the domain is off because someone meant it to be: the guest shut itself down, or it
    /// was destroyed. Not when it crashed, failed, or was never started since the host booted.
    public var isOffOnPurpose: Bool {
        guard UInt32(bitPattern: libvirtState) == VIR_DOMAIN_SHUTOFF.rawValue else { return false }
        let reason = UInt32(bitPattern: libvirtReason)
        return reason == VIR_DOMAIN_SHUTOFF_SHUTDOWN.rawValue || reason == VIR_DOMAIN_SHUTOFF_DESTROYED.rawValue
    }
}

/// A domain lifecycle event from libvirt (`VIR_DOMAIN_EVENT_ID_LIFECYCLE`).
public struct DomainLifecycleEvent: Sendable, Hashable {
    /// The domain the event is about.
    public let identity: DomainIdentity
    /// What happened.
    public let kind: Kind
    /// libvirt's detail code, whose meaning depends on the kind (for `stopped`: 0 shutdown,
    /// 1 destroyed, 2 crashed, ...; see `virDomainEvent*DetailType`).
    public let detail: Int32

    /// An event from its parts.
    public init(identity: DomainIdentity, kind: Kind, detail: Int32) {
        self.identity = identity
        self.kind = kind
        self.detail = detail
    }

    /// libvirt's `virDomainEventType`.
    public enum Kind: Sendable, Hashable {
        /// A persistent definition was added or changed (`VIR_DOMAIN_EVENT_DEFINED`).
        case defined
        /// The persistent definition was removed (`VIR_DOMAIN_EVENT_UNDEFINED`).
        case undefined
        /// The domain began running: booted, migrated in or restored (`VIR_DOMAIN_EVENT_STARTED`).
        case started
        /// The virtual CPUs were paused (`VIR_DOMAIN_EVENT_SUSPENDED`).
        case suspended
        /// The virtual CPUs run again, including when a start sets them going (`VIR_DOMAIN_EVENT_RESUMED`).
        case resumed
        /// The domain is no longer running: shut down, destroyed, crashed or saved (`VIR_DOMAIN_EVENT_STOPPED`).
        case stopped
        /// The guest or the host began a shutdown; a `stopped` follows once it is off (`VIR_DOMAIN_EVENT_SHUTDOWN`).
        case shutdown
        /// The guest put itself into ACPI sleep (`VIR_DOMAIN_EVENT_PMSUSPENDED`).
        case pmsuspended
        /// The guest panicked (`VIR_DOMAIN_EVENT_CRASHED`).
        case crashed
        /// An event type newer than this code.
        case unknown(Int32)

        /// Maps libvirt's `virDomainEventType`.
        public init(libvirtEvent event: Int32) {
            switch UInt32(bitPattern: event) {
            case VIR_DOMAIN_EVENT_DEFINED.rawValue: self = .defined
            case VIR_DOMAIN_EVENT_UNDEFINED.rawValue: self = .undefined
            case VIR_DOMAIN_EVENT_STARTED.rawValue: self = .started
            case VIR_DOMAIN_EVENT_SUSPENDED.rawValue: self = .suspended
            case VIR_DOMAIN_EVENT_RESUMED.rawValue: self = .resumed
            case VIR_DOMAIN_EVENT_STOPPED.rawValue: self = .stopped
            case VIR_DOMAIN_EVENT_SHUTDOWN.rawValue: self = .shutdown
            case VIR_DOMAIN_EVENT_PMSUSPENDED.rawValue: self = .pmsuspended
            case VIR_DOMAIN_EVENT_CRASHED.rawValue: self = .crashed
            default: self = .unknown(event)
            }
        }
    }
}
