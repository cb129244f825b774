import Foundation
import SFLibvirt
import SFNetlink
import SFSystem

// The seams between the job handlers and the host. The handlers, the planner and the reconciler
// talk to the host only through these, so that their state transitions, refusals and failure
// recording are tested without root against the fakes in SFTestSupport; the real realizers are
// tested against the real kernel and libvirtd.

/// The domains of this host, as the handlers and the reconciler drive them (libvirt).
public protocol DomainControl: Sendable {
    /// The domain's power state; nil when it is not defined.
    func state(of reference: DomainReference) async throws -> SFLibvirt.PowerState?
    /// Every domain with its power state.
    func domains() async throws -> [DomainStatus]
    /// The instance UUID in sfnode's metadata of the domain (its mark), nil when it has none.
    func instanceUUID(of reference: DomainReference) async throws -> UUID?
    func destroy(_ reference: DomainReference) async throws
    func undefine(_ reference: DomainReference) async throws
    func reboot(_ reference: DomainReference) async throws
    func reset(_ reference: DomainReference) async throws
    func suspend(_ reference: DomainReference) async throws
    func resume(_ reference: DomainReference) async throws
    /// Every domain's lifecycle events as they happen.
    func domainLifecycleEvents() async throws -> AsyncStream<DomainLifecycleEvent>
}

extension LibvirtConnection: DomainControl {
    public func domainLifecycleEvents() async throws -> AsyncStream<DomainLifecycleEvent> {
        try lifecycleEvents(bufferingPolicy: .bufferingNewest(4096))
    }
}

/// What makes an instance exist, run and go away on this host (``InstanceRealizer``).
public protocol InstanceRealizing: Sendable {
    var layout: HostLayout { get }
    /// Where instance directories live (and whose filesystem's size the node reports).
    var storagePath: String { get }
    /// The host's domains.
    var domainControl: any DomainControl { get }
    /// The domain name of an instance: recognisably sfnode's.
    func domainName(of instance: UUID) -> String
    /// Creates what is missing and starts the domain unless it runs; idempotent.
    func ensureRunning(_ plan: InstancePlan) async throws
    /// Puts the instance's taps on their bridges.
    func plugTaps(_ plan: InstancePlan) async throws
    /// Destroys and undefines the domain and removes its taps and files; removing what is gone is no error.
    func remove(_ plan: InstancePlan) async throws
}

extension InstanceRealizer: InstanceRealizing {
    public var domainControl: any DomainControl { libvirt }
}

/// What makes a network exist on this host (``NetworkRealizer``).
public protocol NetworkRealizing: Sendable {
    var layout: HostLayout { get }
    /// The bridge and VXLAN every node with the network has, flooding to `plan.meshPeers`.
    func ensureOnNode(_ plan: NetworkPlan, underlay: String?, local: IPv4Address?) async throws
    /// The network node's egress bridge and masquerade out of `uplink`.
    func ensureEgress(floatingRange: IPv4Prefix, uplink: String?) async throws
    /// The interface of the default route, if any.
    func defaultRouteInterface() async throws -> String?
    /// The network node's share (namespace, router, NAT, floats); returns the namespace's thread.
    func ensureOnNetworkNode(_ plan: NetworkPlan) async throws -> NamespaceExecutor
    /// Removes the network from the network node.
    func remove(_ plan: NetworkPlan) async throws
    /// Deletes a network namespace of sfnode's.
    func removeNamespace(_ namespace: String) async throws
    /// Removes a hypervisor's share (bridge and VXLAN).
    func removeNodeSide(_ plan: NetworkPlan) async throws
    /// Runs a reconciliation pass's work on the networks (`body`) with what it would otherwise read
    /// once per network read once for all of them; `body` gets the names of the host namespace's
    /// links as that read found them.
    func withPassSnapshot<T: Sendable>(_ body: (_ hostLinks: [String]) async throws -> T) async throws -> T
    /// Deletes a link of the host namespace; deleting one that is gone is no error.
    func deleteHostLink(_ name: String) async throws
    /// Changes to the host namespace's links as they happen.
    func hostLinkChanges() async throws -> AsyncStream<LinkChange>
}

extension NetworkRealizer: NetworkRealizing {
    public func deleteHostLink(_ name: String) async throws { try await host.deleteLink(name) }
    public func hostLinkChanges() async throws -> AsyncStream<LinkChange> { try await host.linkChanges() }
}
