import Foundation
import SFAgent
import SFLibvirt
import SFNetlink
import SFSystem
import Synchronization

// In-memory stand-ins for the agent's host seams (``InstanceRealizing``, ``NetworkRealizing``,
// ``DomainControl``), so that the job handlers' state transitions, refusals and failure recording
// are tested without root, libvirtd or a kernel to change. They record what they were asked to do
// and can be told to fail.

/// What a fake was asked to do, in order, as short lines such as `ensureRunning <uuid>`.
public final class FakeCalls: Sendable {
    private let calls = Mutex<[String]>([])

    public init() {}

    public func append(_ call: String) { calls.withLock { $0.append(call) } }
    /// Every call so far.
    public var all: [String] { calls.withLock { $0 } }
}

/// Domains held in memory: defined ones with their power state.
public final class FakeDomains: DomainControl {
    private let states = Mutex<[UUID: SFLibvirt.PowerState]>([:])

    public init() {}

    /// Sets a domain's state (nil undefines it).
    public func set(_ uuid: UUID, _ state: SFLibvirt.PowerState?) { states.withLock { $0[uuid] = state } }

    private func uuid(_ reference: DomainReference) -> UUID? {
        switch reference {
        case .uuid(let uuid): return uuid
        // sfnode's domain names end in the instance's UUID.
        case .name(let name): return UUID(uuidString: String(name.suffix(36)))
        }
    }

    public func state(of reference: DomainReference) async throws -> SFLibvirt.PowerState? {
        guard let uuid = uuid(reference) else { return nil }
        return states.withLock { $0[uuid] }
    }

    public func domains() async throws -> [DomainStatus] {
        states.withLock { states in
            states.map { uuid, state in
                // libvirt's virDomainState: running 1, paused 3, shut off 5.
                let code: Int32 = state == .on ? 1 : state == .paused ? 3 : 5
                return DomainStatus(identity: DomainIdentity(name: "fake-" + uuid.lowercasedString, uuid: uuid), libvirtState: code)
            }
        }
    }

    public func instanceUUID(of reference: DomainReference) async throws -> UUID? { uuid(reference) }
    public func destroy(_ reference: DomainReference) async throws { change(reference) { $0 == nil ? nil : .off } }
    public func undefine(_ reference: DomainReference) async throws { change(reference) { _ in nil } }
    public func reboot(_ reference: DomainReference) async throws {}
    public func reset(_ reference: DomainReference) async throws {}
    public func suspend(_ reference: DomainReference) async throws { change(reference) { $0 == nil ? nil : .paused } }
    public func resume(_ reference: DomainReference) async throws { change(reference) { $0 == nil ? nil : .on } }
    public func domainLifecycleEvents() async throws -> AsyncStream<DomainLifecycleEvent> { AsyncStream { _ in } }

    private func change(_ reference: DomainReference, _ next: (SFLibvirt.PowerState?) -> SFLibvirt.PowerState?) {
        guard let uuid = uuid(reference) else { return }
        states.withLock { $0[uuid] = next($0[uuid]) }
    }
}

/// An instance realizer that runs instances as entries of a ``FakeDomains``.
public final class FakeInstanceRealizer: InstanceRealizing {
    public let layout: HostLayout
    public let storagePath: String
    public let domains = FakeDomains()
    public let calls = FakeCalls()
    private let failure = Mutex<(any Error & Sendable)?>(nil)
    private let pluggedPlans = Mutex<[InstancePlan]>([])

    /// The plans ``plugTaps(_:)`` was given, in order.
    public var plugged: [InstancePlan] { pluggedPlans.withLock { $0 } }

    public init(layout: HostLayout = HostLayout(namespacePrefix: "fake-", tapPrefix: "fk"), storagePath: String = "/nonexistent") {
        self.layout = layout
        self.storagePath = storagePath
    }

    public var domainControl: any DomainControl { domains }

    /// Makes every later ``ensureRunning(_:)`` throw `error` (nil: succeed again).
    public func failEnsureRunning(with error: (any Error & Sendable)?) { failure.withLock { $0 = error } }

    public func domainName(of instance: UUID) -> String { layout.namespacePrefix + instance.lowercasedString }

    public func ensureRunning(_ plan: InstancePlan) async throws {
        calls.append("ensureRunning \(plan.uuid.lowercasedString)")
        if let error = failure.withLock({ $0 }) { throw error }
        domains.set(plan.uuid, .on)
    }

    public func plugTaps(_ plan: InstancePlan) async throws {
        calls.append("plugTaps \(plan.uuid.lowercasedString)")
        pluggedPlans.withLock { $0.append(plan) }
    }

    public func remove(_ plan: InstancePlan) async throws {
        calls.append("remove \(plan.uuid.lowercasedString)")
        domains.set(plan.uuid, nil)
    }
}

/// A network realizer that only records what it was asked to build or remove.
public final class FakeNetworkRealizer: NetworkRealizing {
    public let layout: HostLayout
    public let calls = FakeCalls()
    private let thread = Mutex<NamespaceExecutor?>(nil)

    public init(layout: HostLayout = HostLayout(namespacePrefix: "fake-", tapPrefix: "fk")) {
        self.layout = layout
    }

    public func ensureOnNode(_ plan: NetworkPlan, underlay: String?, local: IPv4Address?) async throws {
        calls.append("ensureOnNode \(plan.uuid.lowercasedString)")
    }

    public func ensureEgress(floatingRange: IPv4Prefix, uplink: String?) async throws { calls.append("ensureEgress") }
    public func defaultRouteInterface() async throws -> String? { nil }

    /// Returns a thread in this process's own namespace: the fake makes no namespace.
    public func ensureOnNetworkNode(_ plan: NetworkPlan) async throws -> NamespaceExecutor {
        calls.append("ensureOnNetworkNode \(plan.uuid.lowercasedString)")
        if let thread = thread.withLock({ $0 }) { return thread }
        let started = try await NamespaceExecutor.start(namespace: nil)
        return thread.withLock { existing in
            if let existing { return existing }
            existing = started
            return started
        }
    }

    public func remove(_ plan: NetworkPlan) async throws { calls.append("remove \(plan.uuid.lowercasedString)") }
    public func removeNamespace(_ namespace: String) async throws { calls.append("removeNamespace \(namespace)") }
    public func removeNodeSide(_ plan: NetworkPlan) async throws { calls.append("removeNodeSide \(plan.uuid.lowercasedString)") }
    public func withPassSnapshot<T: Sendable>(_ body: (_ hostLinks: [String]) async throws -> T) async throws -> T { try await body([]) }
    public func deleteHostLink(_ name: String) async throws { calls.append("deleteHostLink \(name)") }
    public func hostLinkChanges() async throws -> AsyncStream<LinkChange> { AsyncStream { _ in } }
}
