import CLibvirt
import Foundation
import Logging
import SFSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// libvirt's process-wide set-up, done once however many connections sfnode opens: SIGPIPE ignored,
/// `virInitialize`, a silent error handler (libvirt otherwise prints every error to stderr, and the handler is
/// process-global, so it is set exactly once), and the default event loop on a thread of its own.
/// The event loop must be registered before the first `virConnectOpen`, or keepalive, the close
/// callback and domain events never fire on that connection.
enum LibvirtRuntime {
    /// nil once the runtime is up; the error otherwise. Swift runs a global's initialiser once,
    /// thread-safely, on first use.
    static let startupError: LibvirtError? = start()

    /// Throws if libvirt could not be set up.
    static func ensureStarted() throws {
        if let startupError { throw startupError }
    }

    private static func start() -> LibvirtError? {
        // libvirt's RPC client writes to its socket with plain write(): a call that meets a daemon
        // which just went away raises SIGPIPE, whose default action kills the whole agent. Ignore it
        // process-wide (as libvirt's own tools do) so that the write fails with EPIPE instead and
        // the connection is re-opened. Found by ReconnectTests.aCallWhoseConnectionDiedUnderItIsRetriedOnce.
        BrokenPipes.ignore()
        if virInitialize() < 0 {
            return .last("initialize", object: "libvirt")
        }
        virSetErrorFunc(nil) { _, _ in }
        if virEventRegisterDefaultImpl() < 0 {
            return .last("register the default event loop", object: "libvirt")
        }
        // An OS thread rather than Foundation's Thread, whose name never reaches the kernel: this
        // one shows as libvirt-events in `top -H` and /proc/<pid>/task/*/comm.
        do {
            try OSThread.spawn(name: "libvirt-events") {
                while true {
                    // It only fails on a broken poll set; back off rather than spin a core.
                    if virEventRunDefaultImpl() < 0 {
                        usleep(100_000)
                    }
                }
            }
        } catch {
            // Without the loop no keepalive, close callback or event would ever fire.
            return LibvirtError(
                operation: "start the event loop thread of", object: "libvirt", code: -1, domain: -1,
                message: "\(error)")
        }
        return nil
    }
}

/// Releases the reference libvirt held on a callback's context object (`virFreeCallback`).
let releaseContext: @convention(c) (UnsafeMutableRawPointer?) -> Void = { opaque in
    guard let opaque else { return }
    Unmanaged<AnyObject>.fromOpaque(opaque).release()
}

/// Whether one opened connection is still usable. libvirt's close callback flips it from the event
/// thread, so it is shared state behind a lock, and each open gets a new one so that a late callback
/// from an old connection cannot condemn its successor.
final class ConnectionLiveness: Sendable {
    private let alive = Mutex(true)
    private let uri: String
    private let logger: Logger

    init(uri: String, logger: Logger) {
        self.uri = uri
        self.logger = logger
    }

    var isAlive: Bool { alive.withLock { $0 } }

    func markClosed(reason: Int32) {
        alive.withLock { $0 = false }
        let why: String
        switch UInt32(bitPattern: reason) {
        case VIR_CONNECT_CLOSE_REASON_ERROR.rawValue: why = "socket error"
        case VIR_CONNECT_CLOSE_REASON_EOF.rawValue: why = "the daemon closed the socket"
        case VIR_CONNECT_CLOSE_REASON_KEEPALIVE.rawValue: why = "keepalive timed out"
        case VIR_CONNECT_CLOSE_REASON_CLIENT.rawValue: why = "closed by the client"
        default: why = "reason \(reason)"
        }
        logger.warning(
            "libvirt connection closed; the next call reconnects",
            metadata: ["libvirt.uri": "\(uri)", "libvirt.close_reason": "\(why)"])
    }
}

/// `virConnectCloseFunc`: runs on the event thread.
let connectionClosed: @convention(c) (OpaquePointer?, Int32, UnsafeMutableRawPointer?) -> Void = { _, reason, opaque in
    guard let opaque else { return }
    Unmanaged<ConnectionLiveness>.fromOpaque(opaque).takeUnretainedValue().markClosed(reason: reason)
}

/// Fans lifecycle events out to every subscribed stream. It outlives connections: each reconnect
/// registers the same broadcaster again, so a stream keeps delivering across libvirtd restarts.
final class LifecycleBroadcaster: Sendable {
    private struct Subscribers {
        var next = 0
        var continuations: [Int: AsyncStream<DomainLifecycleEvent>.Continuation] = [:]
    }
    private let subscribers = Mutex(Subscribers())

    func subscribe(bufferingPolicy: AsyncStream<DomainLifecycleEvent>.Continuation.BufferingPolicy) -> AsyncStream<DomainLifecycleEvent> {
        let (stream, continuation) = AsyncStream<DomainLifecycleEvent>.makeStream(bufferingPolicy: bufferingPolicy)
        let id = subscribers.withLock { state in
            let id = state.next
            state.next += 1
            state.continuations[id] = continuation
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    func publish(_ event: DomainLifecycleEvent) {
        let targets = subscribers.withLock { Array($0.continuations.values) }
        for continuation in targets {
            continuation.yield(event)
        }
    }

    func finishAll() {
        let targets = subscribers.withLock { state in
            defer { state.continuations.removeAll() }
            return Array(state.continuations.values)
        }
        for continuation in targets {
            continuation.finish()
        }
    }
}

/// Reads a domain's name and UUID. Both are cached in the domain object, so this makes no RPC and
/// is safe on the event thread.
func identity(of domain: OpaquePointer) -> DomainIdentity? {
    guard let namePointer = virDomainGetName(domain) else { return nil }
    var buffer = [CChar](repeating: 0, count: 64)
    guard virDomainGetUUIDString(domain, &buffer) == 0 else { return nil }
    let uuidText = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let uuid = UUID(uuidString: uuidText) else { return nil }
    return DomainIdentity(name: String(cString: namePointer), uuid: uuid)
}

/// `virConnectDomainEventCallback` for `VIR_DOMAIN_EVENT_ID_LIFECYCLE`: runs on the event thread.
let lifecycleEventReceived: @convention(c) (OpaquePointer?, OpaquePointer?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = {
    _, domain, event, detail, opaque in
    guard let domain, let opaque, let identity = identity(of: domain) else { return 0 }
    let broadcaster = Unmanaged<LifecycleBroadcaster>.fromOpaque(opaque).takeUnretainedValue()
    broadcaster.publish(DomainLifecycleEvent(identity: identity, kind: .init(libvirtEvent: event), detail: detail))
    return 0
}
