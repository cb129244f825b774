import CLibvirt
import Foundation
import Logging
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// One connection to libvirt, owned by an actor that runs on a dedicated thread.
///
/// Every libvirt call, and the thread-local `virGetLastError` read after it, happens on that one
/// thread, off Swift's cooperative pool (libvirt calls block on RPC). The connection opens on first
/// use; keepalive and a close callback detect a dead daemon, and the next call reconnects and
/// re-registers for lifecycle events, so the agent survives a libvirtd restart without restarting
/// itself. A call that fails because the connection died under it is retried once on a new one,
/// unless running it twice could do harm (see ``reset(_:)`` and ``reboot(_:)``).
public actor LibvirtConnection {
    /// The URI connected to, such as `qemu:///system`.
    public nonisolated let uri: String
    private let logger: Logger
    private let thread: ThreadExecutor
    private let broadcaster = LifecycleBroadcaster()

    private var handle: OpaquePointer?
    private var liveness: ConnectionLiveness?
    private var lifecycleCallbackID: Int32 = -1
    /// How many times a connection has been opened: 1 after the first call, more after reconnects.
    public private(set) var connectionCount = 0

    /// Runs isolated methods on the connection's own thread.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.asUnownedSerialExecutor() }

    /// A connection to `uri`, opened by the first call that needs it (or ``connect()``). Throws only
    /// when the connection's thread cannot be started (the process is out of threads or memory).
    public init(uri: String = "qemu:///system", logger: Logger) throws {
        self.uri = uri
        var logger = logger
        logger[metadataKey: "libvirt.uri"] = "\(uri)"
        self.logger = logger
        thread = try ThreadExecutor(name: "libvirt")
    }

    // Isolated, so the final libvirt calls also run on the connection's thread.
    // No libvirt call here: a connection released as the process exits would close it on this
    // thread while exit() tears libvirt's globals down (seen as a double free at test-process exit).
    // Release a connection with ``close()``; one still open at exit goes with the process.
    deinit {
        broadcaster.finishAll()
    }

    // MARK: Connection

    /// Opens the connection now if it is not open, rather than on the first call.
    public func connect() throws {
        _ = try connection()
    }

    /// Closes the connection. Streams from ``lifecycleEvents(bufferingPolicy:)`` stay subscribed
    /// and deliver again once a later call reconnects.
    public func close() {
        teardown()
    }

    /// The versions of the libvirt library the daemon runs and of its hypervisor (QEMU), as
    /// `major.minor.release`.
    public func versions() throws -> (libvirt: String, hypervisor: String) {
        try withConnection { conn in
            var library: UInt = 0
            var hypervisor: UInt = 0
            guard virConnectGetLibVersion(conn, &library) == 0 else { throw LibvirtError.last("virConnectGetLibVersion", object: uri) }
            guard virConnectGetVersion(conn, &hypervisor) == 0 else { throw LibvirtError.last("virConnectGetVersion", object: uri) }
            func text(_ version: UInt) -> String { "\(version / 1_000_000).\(version / 1000 % 1000).\(version % 1000)" }
            return (text(library), text(hypervisor))
        }
    }

    /// Whether a connection is open and libvirt considers it alive. Makes no RPC.
    public var isConnected: Bool {
        guard let handle, let liveness else { return false }
        return liveness.isAlive && virConnectIsAlive(handle) == 1
    }

    private func connection() throws -> OpaquePointer {
        if let handle {
            if liveness?.isAlive == true && virConnectIsAlive(handle) == 1 { return handle }
            logger.warning("libvirt connection is dead; reconnecting")
            teardown()
        }
        return try open()
    }

    private func open() throws -> OpaquePointer {
        try LibvirtRuntime.ensureStarted()
        guard let conn = virConnectOpen(uri) else {
            throw LibvirtError.last("connect to", object: uri)
        }
        // 5 s interval, 3 missed answers: a hung daemon is noticed in about 20 s.
        if virConnectSetKeepAlive(conn, 5, 3) < 0 {
            let error = LibvirtError.last("enable keepalive on", object: uri)
            logger.debug("keepalive unavailable; relying on the close callback", metadata: ["libvirt.error": "\(error.message)"])
        }
        let live = ConnectionLiveness(uri: uri, logger: logger)
        let liveContext = Unmanaged.passRetained(live).toOpaque()
        if virConnectRegisterCloseCallback(conn, connectionClosed, liveContext, releaseContext) < 0 {
            Unmanaged<ConnectionLiveness>.fromOpaque(liveContext).release()
            let error = LibvirtError.last("register the close callback on", object: uri)
            virConnectClose(conn)
            throw error
        }
        let eventContext = Unmanaged.passRetained(broadcaster).toOpaque()
        let callbackID = virConnectDomainEventRegisterAny(
            conn, nil, Int32(VIR_DOMAIN_EVENT_ID_LIFECYCLE.rawValue),
            unsafeBitCast(lifecycleEventReceived, to: virConnectDomainEventGenericCallback.self),
            eventContext, releaseContext)
        if callbackID < 0 {
            Unmanaged<LifecycleBroadcaster>.fromOpaque(eventContext).release()
            let error = LibvirtError.last("register for lifecycle events on", object: uri)
            virConnectUnregisterCloseCallback(conn, connectionClosed)
            virConnectClose(conn)
            throw error
        }
        handle = conn
        liveness = live
        lifecycleCallbackID = callbackID
        connectionCount += 1
        logger.info("connected to libvirt", metadata: ["libvirt.connection_count": "\(connectionCount)"])
        return conn
    }

    private func teardown() {
        guard let conn = handle else { return }
        // On a dead connection these fail; the local callback state is released on close anyway.
        if lifecycleCallbackID >= 0 && virConnectDomainEventDeregisterAny(conn, lifecycleCallbackID) < 0 {
            virResetLastError()
        }
        if virConnectUnregisterCloseCallback(conn, connectionClosed) < 0 {
            virResetLastError()
        }
        virConnectClose(conn)
        handle = nil
        liveness = nil
        lifecycleCallbackID = -1
    }

    /// Runs `body` on the live connection; if it fails because the connection died (libvirtd was
    /// restarted between two calls), reconnects and, when `retry` is true, runs it once more.
    ///
    /// A call that meets a dead connection may or may not have reached the daemon before it died:
    /// the request can have been carried out with only the reply lost. Running it again is only
    /// safe for operations whose second run changes nothing (define, start and destroy check the
    /// state first, reads change nothing). Pass `retry: false` for the others, such as reset and
    /// reboot, which would otherwise reset or reboot the guest twice; they reconnect, so the next
    /// call works, but throw the original error and leave the decision to the caller.
    private func withConnection<T>(retry: Bool = true, _ body: (OpaquePointer) throws -> T) throws -> T {
        let conn = try connection()
        do {
            return try body(conn)
        } catch let error as LibvirtError {
            guard virConnectIsAlive(conn) != 1 || liveness?.isAlive == false else { throw error }
            guard retry else {
                logger.warning(
                    "libvirt connection died during a call that is not safe to repeat; reconnecting on the next call without retrying",
                    metadata: ["libvirt.error": "\(error)"])
                teardown()
                throw error
            }
            logger.warning(
                "libvirt connection died during a call; reconnecting and retrying once",
                metadata: ["libvirt.error": "\(error)"])
            teardown()
            return try body(try connection())
        }
    }

    // MARK: Events

    /// A stream of every domain's lifecycle events. It keeps delivering across reconnects (events
    /// raised while disconnected are lost: reconcile after a reconnect rather than trust the stream
    /// alone). Opens the connection if needed, so that events start flowing at once.
    public func lifecycleEvents(
        bufferingPolicy: AsyncStream<DomainLifecycleEvent>.Continuation.BufferingPolicy = .bufferingNewest(4096)
    ) throws -> AsyncStream<DomainLifecycleEvent> {
        _ = try connection()
        return broadcaster.subscribe(bufferingPolicy: bufferingPolicy)
    }

    // MARK: Domains

    /// Defines (or redefines) a persistent domain from XML and returns who it is.
    @discardableResult
    public func define(xml: String) throws -> DomainIdentity {
        try withConnection { conn in
            guard let domain = virDomainDefineXML(conn, xml) else {
                throw LibvirtError.last("define", object: "domain from XML")
            }
            defer { virDomainFree(domain) }
            guard let identity = identity(of: domain) else {
                throw LibvirtError.last("read the identity of", object: "the defined domain")
            }
            logger.info("defined domain", metadata: ["domain.name": "\(identity.name)", "domain.uuid": "\(identity.uuid)"])
            return identity
        }
    }

    /// Defines (or redefines) a persistent domain from a spec, after validating it.
    @discardableResult
    public func define(_ spec: DomainSpec) throws -> DomainIdentity {
        try define(xml: try spec.xml())
    }

    /// Removes a domain's persistent definition, with its managed save image, NVRAM and snapshot
    /// and checkpoint metadata. A running domain keeps running as a transient one until it stops.
    /// Undefining a domain that does not exist is not an error.
    public func undefine(_ reference: DomainReference) throws {
        try withDomain(reference, "undefine", ifAbsent: {}) { domain in
            let flags =
                VIR_DOMAIN_UNDEFINE_MANAGED_SAVE.rawValue | VIR_DOMAIN_UNDEFINE_NVRAM.rawValue
                | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue | VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA.rawValue
            if virDomainUndefineFlags(domain, flags) < 0 {
                let error = LibvirtError.last("undefine", object: reference.description)
                if error.isNoDomain { return }
                throw error
            }
            logger.info("undefined domain", metadata: metadata(reference))
        }
    }

    /// Starts a defined domain. Starting one that is already running (or paused) is not an error,
    /// and leaves it as it is: a paused domain stays paused until ``resume(_:)``.
    public func start(_ reference: DomainReference) throws {
        try withDomain(reference, "start") { domain in
            if virDomainIsActive(domain) == 1 { return }
            if virDomainCreate(domain) < 0 {
                throw LibvirtError.last("start", object: reference.description)
            }
            logger.info("started domain", metadata: metadata(reference))
        }
    }

    /// Powers a domain off at once, like pulling the plug. Destroying a domain that does not exist
    /// or is not running is not an error.
    public func destroy(_ reference: DomainReference) throws {
        try withDomain(reference, "destroy", ifAbsent: {}) { domain in
            if virDomainIsActive(domain) == 0 { return }
            if virDomainDestroy(domain) < 0 {
                let error = LibvirtError.last("destroy", object: reference.description)
                // It stopped (or vanished) between the check and the call.
                if error.isNoDomain || (error.code == LibvirtError.operationInvalidCode && virDomainIsActive(domain) == 0) {
                    return
                }
                throw error
            }
            logger.info("destroyed domain", metadata: metadata(reference))
        }
    }

    /// Asks the guest to shut down by pressing the ACPI power button; the guest decides whether and
    /// when. Asking a domain that is not running is not an error. Retried after a dead connection:
    /// a second press lands while the guest is already shutting down on the first (or finds the
    /// domain off), so it asks for nothing new, unlike a second reboot.
    public func shutdown(_ reference: DomainReference) throws {
        try withDomain(reference, "shut down") { domain in
            if virDomainIsActive(domain) == 0 { return }
            if virDomainShutdownFlags(domain, VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN.rawValue) < 0 {
                throw LibvirtError.last("shut down", object: reference.description)
            }
            logger.info("sent ACPI shutdown to domain", metadata: metadata(reference))
        }
    }

    /// Asks the guest to reboot by pressing the ACPI power button (libvirt restarts the domain once
    /// the guest powers off); the guest decides whether and when. Not retried when the connection
    /// dies during the call: the request may already have reached the daemon, and a second press
    /// could reboot the guest twice, so the error is thrown and the caller decides.
    public func reboot(_ reference: DomainReference) throws {
        try withDomain(reference, "reboot", retry: false) { domain in
            if virDomainReboot(domain, VIR_DOMAIN_REBOOT_ACPI_POWER_BTN.rawValue) < 0 {
                throw LibvirtError.last("reboot", object: reference.description)
            }
            logger.info("sent ACPI reboot to domain", metadata: metadata(reference))
        }
    }

    /// Resets the virtual machine at once, like the reset button; the guest gets no say. Not
    /// retried when the connection dies during the call: the reset may already have happened, and
    /// a second one would interrupt the guest's fresh boot, so the error is thrown instead.
    public func reset(_ reference: DomainReference) throws {
        try withDomain(reference, "reset", retry: false) { domain in
            if virDomainReset(domain, 0) < 0 {
                throw LibvirtError.last("reset", object: reference.description)
            }
            logger.info("reset domain", metadata: metadata(reference))
        }
    }

    /// Pauses a running domain's virtual CPUs.
    public func suspend(_ reference: DomainReference) throws {
        try withDomain(reference, "suspend") { domain in
            if virDomainSuspend(domain) < 0 {
                throw LibvirtError.last("suspend", object: reference.description)
            }
            logger.info("suspended domain", metadata: metadata(reference))
        }
    }

    /// Resumes a paused domain.
    public func resume(_ reference: DomainReference) throws {
        try withDomain(reference, "resume") { domain in
            if virDomainResume(domain) < 0 {
                throw LibvirtError.last("resume", object: reference.description)
            }
            logger.info("resumed domain", metadata: metadata(reference))
        }
    }

    /// The domain called `name`, or nil when there is none.
    public func lookup(name: String) throws -> DomainIdentity? {
        try lookup(.name(name))
    }

    /// The domain with `uuid`, or nil when there is none.
    public func lookup(uuid: UUID) throws -> DomainIdentity? {
        try lookup(.uuid(uuid))
    }

    /// The domain `reference` names, or nil when there is none.
    public func lookup(_ reference: DomainReference) throws -> DomainIdentity? {
        try withDomain(reference, "look up", ifAbsent: { nil }) { domain in
            guard let identity = identity(of: domain) else {
                throw LibvirtError.last("read the identity of", object: reference.description)
            }
            return identity
        }
    }

    /// The domain's status, or nil when there is none.
    public func status(of reference: DomainReference) throws -> DomainStatus? {
        try withDomain(reference, "read the state of", ifAbsent: { nil }) { domain in
            try status(of: domain, reference.description)
        }
    }

    /// The domain's power state, or nil when there is none.
    public func state(of reference: DomainReference) throws -> PowerState? {
        try status(of: reference)?.powerState
    }

    /// Every domain libvirt knows, running or not, with its state and its reason. One RPC
    /// (`virConnectGetAllDomainStats` with the state group only), where a state read per domain
    /// cost a round trip each: 150 ms at 1000 domains, the largest part of a reconciliation pass
    /// (BENCHMARKS.md (f)). The listing and the states are one snapshot: no domain can go between them.
    public func domains() throws -> [DomainStatus] {
        try bulkStats(VIR_DOMAIN_STATS_STATE.rawValue, "read the state of") { identity, parameters in
            DomainStatus(
                identity: identity, libvirtState: Int32(clamping: parameters.integer("state.state") ?? 0),
                libvirtReason: Int32(clamping: parameters.integer("state.reason") ?? 0))
        }
    }

    /// Every domain's figures in one bulk read (`virConnectGetAllDomainStats`): state, CPU time,
    /// balloon, vCPUs, interfaces and disks. One RPC whatever the number of domains, which is what
    /// lets a metrics scrape cost the same with 2 domains or 200.
    public func allDomainStats() throws -> [DomainStats] {
        let groups =
            VIR_DOMAIN_STATS_STATE.rawValue | VIR_DOMAIN_STATS_CPU_TOTAL.rawValue | VIR_DOMAIN_STATS_BALLOON.rawValue
            | VIR_DOMAIN_STATS_VCPU.rawValue | VIR_DOMAIN_STATS_INTERFACE.rawValue | VIR_DOMAIN_STATS_BLOCK.rawValue
        return try bulkStats(groups, "read the statistics of") { DomainStats(identity: $0, parameters: $1) }
    }

    /// One `virConnectGetAllDomainStats` of every domain for the stats `groups`, each record's
    /// typed parameters copied out and turned into a `T` by `record`.
    private func bulkStats<T>(
        _ groups: UInt32, _ operation: String, _ record: (DomainIdentity, TypedParameters) -> T
    ) throws -> [T] {
        try withConnection { conn in
            var records: UnsafeMutablePointer<UnsafeMutablePointer<virDomainStatsRecord>?>?
            let count = virConnectGetAllDomainStats(conn, groups, &records, 0)
            if count < 0 {
                throw LibvirtError.last(operation, object: "all domains")
            }
            guard let records else { return [] }
            defer { virDomainStatsRecordListFree(records) }
            var result: [T] = []
            result.reserveCapacity(Int(count))
            for index in 0..<Int(count) {
                guard let entry = records[index], let domain = entry.pointee.dom, let identity = identity(of: domain) else { continue }
                result.append(record(identity, TypedParameters(entry.pointee.params, count: entry.pointee.nparams)))
            }
            return result
        }
    }

    /// The domain's live XML (the inactive definition if it is not running), or nil when there is none.
    public func xmlDescription(of reference: DomainReference) throws -> String? {
        try withDomain(reference, "read the XML of", ifAbsent: { nil }) { domain in
            guard let text = virDomainGetXMLDesc(domain, 0) else {
                throw LibvirtError.last("read the XML of", object: reference.description)
            }
            defer { free(text) }
            return String(cString: text)
        }
    }

    /// The sfnode instance UUID stored in the domain's sfnode metadata element, or nil when the
    /// domain has none (it is not sfnode's) or does not exist.
    public func instanceUUID(of reference: DomainReference) throws -> UUID? {
        try withDomain(reference, "read the sfnode metadata of", ifAbsent: { nil }) { domain in
            guard
                let text = virDomainGetMetadata(
                    domain, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), DomainSpec.metadataNamespace, 0)
            else {
                let error = LibvirtError.last("read the sfnode metadata of", object: reference.description)
                if error.code == LibvirtError.noMetadataCode { return nil }
                throw error
            }
            defer { free(text) }
            return Self.uuidAttribute(in: String(cString: text))
        }
    }

    /// The `uuid` attribute of the single element libvirt returns for a metadata namespace.
    static func uuidAttribute(in element: String) -> UUID? {
        for quote in ["\"", "'"] {
            guard let start = element.range(of: " uuid=\(quote)") else { continue }
            let rest = element[start.upperBound...]
            guard let end = rest.firstIndex(of: Character(quote)) else { return nil }
            return UUID(uuidString: String(rest[..<end]))
        }
        return nil
    }

    // MARK: Helpers

    private func status(of domain: OpaquePointer, _ object: String) throws -> DomainStatus {
        var state: Int32 = 0
        var reason: Int32 = 0
        guard virDomainGetState(domain, &state, &reason, 0) == 0 else {
            throw LibvirtError.last("read the state of", object: object)
        }
        guard let identity = identity(of: domain) else {
            throw LibvirtError.last("read the identity of", object: object)
        }
        return DomainStatus(identity: identity, libvirtState: state, libvirtReason: reason)
    }

    /// Looks the domain up and runs `body` on it; an absent domain is an error (libvirt's own).
    /// `retry` is ``withConnection(retry:_:)``'s: false for operations that must not run twice.
    private func withDomain<T>(
        _ reference: DomainReference, _ operation: String, retry: Bool = true, _ body: (OpaquePointer) throws -> T
    ) throws -> T {
        try withDomain(reference, operation, retry: retry, ifAbsent: nil, body)
    }

    /// Looks the domain up and runs `body` on it, or `ifAbsent` when libvirt says it does not exist
    /// (a nil `ifAbsent` makes that an error).
    private func withDomain<T>(
        _ reference: DomainReference, _ operation: String, retry: Bool = true, ifAbsent: (() -> T)?,
        _ body: (OpaquePointer) throws -> T
    ) throws -> T {
        try withConnection(retry: retry) { conn in
            let found: OpaquePointer?
            switch reference {
            case .name(let name): found = virDomainLookupByName(conn, name)
            case .uuid(let uuid): found = virDomainLookupByUUIDString(conn, uuid.lowercasedString)
            }
            guard let domain = found else {
                let error = LibvirtError.last(operation, object: reference.description)
                if error.isNoDomain, let ifAbsent { return ifAbsent() }
                throw error
            }
            defer { virDomainFree(domain) }
            return try body(domain)
        }
    }

    private func metadata(_ reference: DomainReference) -> Logger.Metadata {
        switch reference {
        case .name(let name): return ["domain.name": "\(name)"]
        case .uuid(let uuid): return ["domain.uuid": "\(uuid.lowercasedString)"]
        }
    }
}
