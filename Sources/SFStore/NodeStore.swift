import Foundation
import SFSystem

/// Everything sfnode keeps: objects, address allocations, events and the work queue.
///
/// All access goes through this protocol so that another backend (PostgreSQL) can implement the
/// same contract; `Tests/SFStoreTests` runs one contract suite against every backend. Each method
/// is atomic: it either commits completely or changes nothing. Errors are ``StoreError``.
public protocol NodeStore: Sendable {
    // MARK: Nodes

    /// Creates or replaces the node named `node.name`.
    func saveNode(_ node: Node) async throws
    /// The node named `name`, or nil.
    func node(named name: String) async throws -> Node?
    /// All nodes, by name.
    func nodes() async throws -> [Node]
    /// Marks the node deleted (once: a second call keeps the first time) and fails the jobs still
    /// queued for it by name, which no agent will claim; answers the node. `notFound` when unknown.
    @discardableResult func deleteNode(named name: String, reason: String) async throws -> Node

    // MARK: Networks

    /// Creates a network in state `initial`, giving it a fresh unique VXLAN id, and queues `jobs`
    /// in the same transaction. `netblock`'s host bits are cleared (10.0.0.7/24 is stored as
    /// 10.0.0.0/24). `provideDNS` and `spoofFilter` are the network's ``Network/provideDNS`` and
    /// ``Network/spoofFilter``.
    func createNetwork(
        uuid: UUID, name: String, namespace: String, netblock: IPv4Prefix, provideDHCP: Bool, provideNAT: Bool,
        provideDNS: Bool, spoofFilter: Bool, jobs: [NewJob]
    ) async throws -> Network
    /// The network, or ``StoreError/notFound(type:id:)``.
    func network(uuid: UUID) async throws -> Network
    /// The network's extra DNS records, name to address.
    func networkDNSEntries(uuid: UUID) async throws -> [String: IPv4Address]
    /// Sets (or with a nil `address` removes) one extra DNS record, and queues `jobs` in the same
    /// transaction; a new name beyond `limit` records is ``StoreError/invalidArgument(_:)``.
    func setNetworkDNSEntry(uuid: UUID, name: String, address: IPv4Address?, limit: Int, jobs: [NewJob]) async throws
    /// Networks, all or of one namespace, oldest first.
    func networks(namespace: String?) async throws -> [Network]
    /// Moves the network to `state`, refusing transitions ``NetworkState/canTransition(to:)`` forbids.
    @discardableResult func setNetworkState(uuid: UUID, to state: NetworkState) async throws -> Network
    /// Allocates the network's floating gateway from `range` and records it, in one transaction; a
    /// network that has one keeps it. A crash can therefore never leave an allocated gateway that no
    /// network records, nor a recorded one that is not allocated.
    @discardableResult func ensureFloatingGateway(networkUUID: UUID, range: IPv4Prefix) async throws -> Network
    /// Clears the network's floating gateway and releases every floating address the network owns,
    /// in one transaction.
    @discardableResult func releaseFloatingGateway(networkUUID: UUID) async throws -> Network

    // MARK: Instances

    /// Stores a new instance (in state `initial`) with its interfaces (each allocating its address
    /// and MAC as ``createInterface(uuid:instanceUUID:networkUUID:order:model:address:macaddr:)``
    /// does) and queues `jobs`, all in one transaction.
    @discardableResult func createInstance(_ instance: Instance, interfaces: [NewInterface], jobs: [NewJob])
        async throws -> [Interface]
    /// The instance, or ``StoreError/notFound(type:id:)``.
    func instance(uuid: UUID) async throws -> Instance
    /// Instances, all or those placed on `node`, oldest first.
    func instances(node: String?) async throws -> [Instance]
    /// Moves the instance to `state`, refusing what ``InstanceState/canTransition(to:)`` forbids with
    /// ``StoreError/invalidTransition(type:id:from:to:)``. `errorMessage`, when given, replaces the
    /// stored one (error states carry the reason).
    @discardableResult func setInstanceState(uuid: UUID, to state: InstanceState, errorMessage: String?)
        async throws -> Instance
    /// Gives the instance the first of `candidates` (console port, display port) that no other live
    /// instance of `node` holds, unless it has its ports already; answers the instance.
    @discardableResult func reserveConsolePorts(uuid: UUID, node: String, candidates: [(console: Int, vdi: Int?)]) async throws -> Instance
    /// Records a power state; the old one becomes `powerStatePrevious` when it differs.
    @discardableResult func setPowerState(uuid: UUID, _ state: PowerState) async throws -> Instance
    /// The instance with its interfaces and their metadata, in one read; ``StoreError/notFound(type:id:)``
    /// when there is no such instance.
    func instanceRecord(uuid: UUID) async throws -> InstanceRecord
    /// The records of the instances of a namespace (all when nil), oldest first, in one read.
    func instanceRecords(namespace: String?) async throws -> [InstanceRecord]
    /// Places the instance on `node` (nil unplaces it).
    @discardableResult func setInstanceNode(uuid: UUID, _ node: String?) async throws -> Instance

    // MARK: Interfaces and addresses

    /// Creates an interface in state `initial`, allocating its address in the network per `address`
    /// and its MAC (a fresh unique 02:00:00:xx:xx:xx, or `macaddr` if free) in the same transaction.
    func createInterface(
        uuid: UUID, instanceUUID: UUID, networkUUID: UUID, order: Int, model: String, address: AddressRequest,
        macaddr: MACAddress?
    ) async throws -> Interface
    /// The interface, or ``StoreError/notFound(type:id:)``.
    func interface(uuid: UUID) async throws -> Interface
    /// The interfaces of an instance, by order.
    func interfaces(instanceUUID: UUID) async throws -> [Interface]
    /// The interfaces on a network that are not deleted.
    func interfaces(networkUUID: UUID) async throws -> [Interface]
    /// Sets the interface's state. Moving to `deleted` releases its address, MAC and floating address.
    @discardableResult func setInterfaceState(uuid: UUID, to state: InterfaceState) async throws -> Interface
    /// Allocates a floating address from `range` and records it on the interface, atomically.
    /// Refuses an interface that is already floating or has no address.
    @discardableResult func floatInterface(uuid: UUID, range: IPv4Prefix) async throws -> Interface
    /// Clears and releases the interface's floating address; a no-op when it has none.
    @discardableResult func defloatInterface(uuid: UUID) async throws -> Interface

    /// Allocates an address in the network for `owner` (free text, such as "interface:<uuid>"):
    /// the lowest free one, or exactly `requested`. Skips the network address, the broadcast address
    /// and .1 (the router).
    func allocateIPv4(networkUUID: UUID, requested: IPv4Address?, owner: String) async throws -> IPv4Address
    /// Releases an address in the network; a no-op when it is not allocated.
    func releaseIPv4(networkUUID: UUID, address: IPv4Address) async throws
    /// The allocated addresses of a network with their owners.
    func allocatedIPv4(networkUUID: UUID) async throws -> [IPv4Address: String]
    /// Allocates a floating address from `range` (skipping its network, broadcast and .1 addresses).
    /// A floating address is unique across all ranges.
    func allocateFloating(range: IPv4Prefix, requested: IPv4Address?, owner: String) async throws -> IPv4Address
    /// Releases a floating address; a no-op when it is not allocated.
    func releaseFloating(_ address: IPv4Address) async throws
    /// Reserves a MAC address: `requested`, or a fresh random 02:00:00:xx:xx:xx.
    func allocateMAC(requested: MACAddress?, owner: String) async throws -> MACAddress
    /// Releases a MAC address; a no-op when it is not allocated.
    func releaseMAC(_ address: MACAddress) async throws
    /// Who holds a MAC address (such as "interface:<uuid>"), or nil when it is free.
    func macOwner(_ address: MACAddress) async throws -> String?

    // MARK: Metadata

    /// Sets one metadata key of an object.
    func setMetadata(objectType: String, objectUUID: String, key: String, value: JSONValue) async throws
    /// All metadata of an object.
    func metadata(objectType: String, objectUUID: String) async throws -> [String: JSONValue]
    /// Removes one metadata key; a no-op when absent.
    func deleteMetadata(objectType: String, objectUUID: String, key: String) async throws

    // MARK: Events

    /// Appends an event to its object's log.
    func record(_ event: Event) async throws
    /// An object's events (of `type` only, when given), newest first; `limit` is capped at 1000.
    func events(objectType: String, objectUUID: String, type: EventType?, limit: Int) async throws -> [Event]

    // MARK: Retention

    /// Deletes what `policy` says has been kept long enough as of `now`: old events and events
    /// beyond an object's cap, finished jobs, deleted objects with their rows. It works in
    /// transactions of at most `policy.batchRows` rows, each leaving the store consistent, so it is
    /// safe while other processes use the store, and running it again removes nothing more.
    /// ``RetentionPolicy`` says what is never pruned.
    @discardableResult func prune(_ policy: RetentionPolicy, now: Date) async throws -> PruneReport

    // MARK: Work queue

    /// Adds jobs in state `queued`, in order, in one transaction. They exist (and can be claimed)
    /// only once this returns: the insert is committed before the ids are handed back.
    func enqueue(_ jobs: [NewJob]) async throws -> [Job]
    /// Atomically claims the oldest claimable job for any of `targets`, or returns nil.
    ///
    /// Claimable: queued (or running with an expired lease: its agent died), `notBefore` passed,
    /// and no earlier job with the same object key is queued or running. The claimed job becomes
    /// running, leased by `owner` until now + `lease`, with `attempts` + 1 and a new
    /// ``Job/leaseToken`` (its ``Job/lease`` is what later changes name). A job reclaimed after its
    /// lease expired with no attempts left is handed over all the same, with `attempts` above
    /// `maxAttempts` and `lastError` saying whose lease lapsed: the claimer records the failure
    /// (``Job/isExhausted``), so that it reaches the job's object like any other.
    ///
    /// Reclaiming a running job whose lease lapsed counts a death (``Job/deaths``): its agent died
    /// or hung with the job in flight. At `maxDeaths` the job is handed over with `lastError`
    /// ``Job/deathMessage(deaths:)``, for the claimer to record as failed and never run
    /// (``Job/diedTooOften(limit:)``). Only jobs whose kind `kinds` admits are claimed.
    func claimNext(targets: [JobTarget], owner: String, lease: Duration, kinds: JobKindFilter, maxDeaths: Int) async throws -> Job?
    /// Claims up to `limit` claimable jobs in one transaction, oldest first, by the rules of
    /// ``claimNext(targets:owner:lease:kinds:maxDeaths:)`` (deaths, the `maxDeaths` handover,
    /// kinds), each leased by `owner`; never two jobs of the same object key, since a later job of
    /// an object waits for the earlier one. Fewer (or none) when fewer are claimable. `limit` is
    /// from 1 to ``SQLStore/claimBatchLimit`` (1000); else ``StoreError/invalidArgument(_:)``.
    func claimBatch(
        targets: [JobTarget], owner: String, lease: Duration, kinds: JobKindFilter, maxDeaths: Int, limit: Int
    ) async throws -> [Job]
    /// Extends `lease` to now + `duration`; false when it no longer holds the job (it expired, or
    /// the job was claimed again or finished): the caller must stop working on it.
    func renewLease(_ lease: JobLease, for duration: Duration) async throws -> Bool
    /// Marks the job succeeded. Only its current lease may; else
    /// ``StoreError/notLeaseOwner(jobID:owner:actual:)`` (or ``StoreError/jobNotRunning(jobID:state:)``).
    func complete(_ lease: JobLease) async throws
    /// Marks the job of every lease of `leases` that still holds it succeeded, in one transaction
    /// (a batch from ``claimBatch(targets:owner:lease:kinds:maxDeaths:limit:)``); answers the
    /// leases it refused because they no longer held their job (claimed again, finished, unknown).
    /// At most ``SQLStore/claimBatchLimit`` leases; else ``StoreError/invalidArgument(_:)``.
    func complete(_ leases: [JobLease]) async throws -> [JobLease]
    /// Records a failure. A retryable one with attempts left goes back to queued after
    /// ``Job/retryDelay(afterAttempt:)``; otherwise the job becomes failed. Only its current lease may.
    func fail(_ lease: JobLease, error: String, retryable: Bool) async throws
    /// Puts a running job back in the queue for `delay` without spending its attempt: what it needs
    /// is not ready yet (another job is still making it), which is no fault of the job. `reason`
    /// becomes its `lastError`. Only its current lease may.
    func postpone(_ lease: JobLease, delay: Duration, reason: String) async throws
    /// Jobs in any of `states` (all when empty), newest first, at most `limit`.
    func jobs(states: [JobState], limit: Int) async throws -> [Job]
    /// How many live jobs (queued, or running) there are of each kind and state: the queue's
    /// depth, counted on the index of live jobs, never over the finished ones.
    func liveJobCounts() async throws -> [JobCount]
    /// The job, or ``StoreError/notFound(type:id:)``.
    func job(id: Int64) async throws -> Job

    /// Fires (coalesced) soon after any process using this store commits a transaction that
    /// enqueues jobs or finishes, fails or postpones one (a finished job may unblock the next job of
    /// its object): at once for this process's own commits, on a notification for the others' (with
    /// SQLite a doorbell file watched through inotify; a server backend would use its own, such as
    /// PostgreSQL's LISTEN/NOTIFY). Best effort: a claimer still polls now and then, for delayed jobs
    /// coming due, lapsed leases and a notification lost.
    func wakeups() -> AsyncStream<Void>
    /// An opaque number that changes whenever another process (or another store instance) commits
    /// anything: a cheap "has anything changed since I looked" for a poller that has no wake-ups.
    /// With SQLite it is `PRAGMA data_version` on a dedicated connection, a read of shared memory.
    func changeToken() async throws -> Int64
    /// The store's clock: PostgreSQL's server's, SQLite's machine's. A node's check-in is stamped
    /// with it and a node's age measured against it, so that nodes whose clocks differ agree on
    /// which of them is missing.
    func clock() async throws -> Date
    /// Gives back what the store's connections keep between reads (SQLite's page caches, idle
    /// readers): for after a read of the whole store, such as a reconciliation pass, which would
    /// otherwise leave each reader holding its cache full (2 MiB each) for an idle agent.
    func releaseMemory() async

    // MARK: Bulk reads

    /// Every interface that is not deleted, of every instance and network, by UUID: one read where
    /// a pass over the whole store would otherwise ask once per instance or network.
    func liveInterfaces() async throws -> [Interface]
}

/// An interface to create with its instance.
public struct NewInterface: Hashable, Sendable {
    public var uuid: UUID
    public var networkUUID: UUID
    public var model: String
    public var address: AddressRequest
    public var macaddr: MACAddress?

    public init(uuid: UUID = UUID(), networkUUID: UUID, model: String, address: AddressRequest, macaddr: MACAddress? = nil) {
        self.uuid = uuid
        self.networkUUID = networkUUID
        self.model = model
        self.address = address
        self.macaddr = macaddr
    }
}

extension NodeStore {
    /// ``createNetwork(uuid:name:namespace:netblock:provideDHCP:provideNAT:provideDNS:spoofFilter:jobs:)``
    /// without DNS and with the anti-spoofing filter on.
    public func createNetwork(
        uuid: UUID, name: String, namespace: String, netblock: IPv4Prefix, provideDHCP: Bool, provideNAT: Bool,
        jobs: [NewJob]
    ) async throws -> Network {
        try await createNetwork(
            uuid: uuid, name: name, namespace: namespace, netblock: netblock, provideDHCP: provideDHCP,
            provideNAT: provideNAT, provideDNS: false, spoofFilter: true, jobs: jobs)
    }

    /// ``createNetwork(uuid:name:namespace:netblock:provideDHCP:provideNAT:jobs:)`` queuing nothing.
    public func createNetwork(
        uuid: UUID, name: String, namespace: String, netblock: IPv4Prefix, provideDHCP: Bool, provideNAT: Bool
    ) async throws -> Network {
        try await createNetwork(
            uuid: uuid, name: name, namespace: namespace, netblock: netblock, provideDHCP: provideDHCP,
            provideNAT: provideNAT, jobs: [])
    }

    /// Stores a new instance with no interfaces, queuing nothing.
    public func createInstance(_ instance: Instance) async throws {
        try await createInstance(instance, interfaces: [], jobs: [])
    }

    /// Claims a job of any kind with the default death limit (see
    /// ``claimNext(targets:owner:lease:kinds:maxDeaths:)``).
    public func claimNext(targets: [JobTarget], owner: String, lease: Duration) async throws -> Job? {
        try await claimNext(targets: targets, owner: owner, lease: lease, kinds: .any, maxDeaths: Job.defaultMaxDeaths)
    }

    /// Claims up to `limit` jobs of any kind with the default death limit (see
    /// ``claimBatch(targets:owner:lease:kinds:maxDeaths:limit:)``).
    public func claimBatch(targets: [JobTarget], owner: String, lease: Duration, limit: Int) async throws -> [Job] {
        try await claimBatch(targets: targets, owner: owner, lease: lease, kinds: .any, maxDeaths: Job.defaultMaxDeaths, limit: limit)
    }

    /// Adds one job (see ``enqueue(_:)``).
    public func enqueue(kind: String, payload: JSONValue, target: JobTarget, objectKey: String?, maxAttempts: Int)
        async throws -> Job
    {
        let jobs = try await enqueue([NewJob(kind: kind, payload: payload, target: target, objectKey: objectKey, maxAttempts: maxAttempts)])
        guard let job = jobs.first else { throw StoreError.backend("enqueue returned no job") }
        return job
    }

    /// ``events(objectType:objectUUID:type:limit:)`` of every type.
    public func events(objectType: String, objectUUID: String, limit: Int) async throws -> [Event] {
        try await events(objectType: objectType, objectUUID: objectUUID, type: nil, limit: limit)
    }

    /// ``events(objectType:objectUUID:type:limit:)`` of every type, with the default limit of 100.
    public func events(objectType: String, objectUUID: String) async throws -> [Event] {
        try await events(objectType: objectType, objectUUID: objectUUID, type: nil, limit: 100)
    }

    /// ``enqueue(kind:payload:target:objectKey:maxAttempts:)`` with 5 attempts.
    public func enqueue(kind: String, payload: JSONValue, target: JobTarget, objectKey: String?) async throws -> Job {
        try await enqueue(kind: kind, payload: payload, target: target, objectKey: objectKey, maxAttempts: 5)
    }

    /// ``setInstanceState(uuid:to:errorMessage:)`` keeping the stored error message.
    @discardableResult public func setInstanceState(uuid: UUID, to state: InstanceState) async throws -> Instance {
        try await setInstanceState(uuid: uuid, to: state, errorMessage: nil)
    }
}
