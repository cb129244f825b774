import Foundation
import SFControl
import SFLibvirt
import SFStore

/// The instance jobs: instance.create, instance.delete, instance.delete_all, the power operations
/// and instance.snapshot (``SnapshotJobs``).
///
/// instance.create runs in two stages: the images stage (states, the networks' readiness, the disk
/// bases, which may download) holds only the instance's own lock and the image lock shared, so a
/// slow download holds up nothing but this instance; the host stage (taps, domain, networks'
/// shares) holds the host lock shared like every other host change (see ``HostLocks``).
public struct InstanceJobs: JobHandlers {
    let context: AgentContext
    let networks: NetworkJobs

    public func register(with runner: JobRunner) async {
        await runner.register(.instanceCreate) { order, _ in try await create(try order.uuid()) }
        await runner.register(.instanceDelete) { order, _ in try await delete(try order.uuid()) }
        await runner.register(.instanceDeleteAll) { order, _ in
            guard case .namespace(let namespace) = order.subject else { throw JobError("\(order.kind.rawValue) names no namespace") }
            try await deleteAll(namespace: namespace)
        }
        for operation in PowerOperation.allCases {
            await runner.register(JobKind(operation)) { order, _ in try await power(operation, try order.uuid()) }
        }
        await runner.register(.instanceSnapshot) { [context] order, job in try await SnapshotJobs(context: context).run(order, job) }
    }

    var store: any NodeStore { context.store }
    var planner: HostPlanner { context.planner }

    /// Creates and starts the instance: initial → preflight → creating → created, with status events.
    public func create(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        try await context.locks.objectStep([HostLocks.instance(uuid)]) {
            // The images stage: no host lock.
            var instance = try await store.instance(uuid: uuid)
            // Refused without touching the instance: only these states can (still) be created.
            guard [.initial, .preflight, .creating, .created].contains(instance.state) else {
                throw JobError.refusal("instance \(uuid) is \(instance.state.rawValue); it cannot be created")
            }
            try context.refuseIfElsewhere(instance)
            if instance.state == .created, try await context.instances.domainControl.state(of: .uuid(uuid)) == .on { return }
            for next in [InstanceState.preflight, .creating] where instance.state.canTransition(to: next) {
                instance = try await store.setInstanceState(uuid: uuid, to: next)
            }
            guard instance.state == .creating || instance.state == .created else {
                throw ControlError.invalid("instance \(uuid) is \(instance.state.rawValue); it cannot be created")
            }
            let joined = Set(try await store.interfaces(instanceUUID: uuid).map(\.networkUUID))
            for networkUUID in joined {
                let network = try await store.network(uuid: networkUUID)
                switch network.state {
                case .created: break
                // Its create may still be queued, or held by an agent that died: the job waits for it
                // without spending attempts.
                case .initial: throw ControlError.notReady("network \(networkUUID) is initial, not created yet")
                default: throw ControlError.invalid("network \(networkUUID) is \(network.state.rawValue); no instance can join it")
                }
            }
            // Images are fetched (or found) once the networks are known to be ready: a job that waits
            // for a network must not hold a download.
            let plan = try await planner.plan(for: instance, images: .fetchIfStale)
            // The host stage.
            let prepared = instance
            try await context.locks.hostStep {
                var instance = prepared
                // Placed before anything is built: the node that builds an instance is the one that keeps
                // (and reconciles) its taps, and the other nodes of its networks must flood to it.
                if instance.node != context.nodeName { instance = try await store.setInstanceNode(uuid: uuid, context.nodeName) }
                // The bridges must exist before a tap can join them, and the network node must know the
                // new interface (DHCP host, flood list) before the guest asks for an address.
                try await networks.announce(joined, meshChanged: true)
                try await context.instances.ensureRunning(plan)
                if instance.state != .created { try await store.setInstanceState(uuid: uuid, to: .created) }
                try await store.setPowerState(uuid: uuid, .on)
                for interface in try await store.interfaces(instanceUUID: uuid) where interface.state != .created {
                    try await store.setInterfaceState(uuid: interface.uuid, to: .created)
                }
            }
            try await context.event("instance", uuid, .status, "instance creation complete", since: started)
        }
    }

    /// Destroys the instance and everything of it on this host; its interfaces become deleted and
    /// their addresses and floating addresses are released; the instance stays readable as deleted.
    public func delete(_ uuid: UUID) async throws {
        let started = ContinuousClock.now
        try await context.locks.objectStep([HostLocks.instance(uuid)]) {
            let found = try await store.instance(uuid: uuid)
            if found.state == .deleted { return }
            try context.refuseIfElsewhere(found)
            try await context.locks.hostStep {
                var instance = found
                // A `<state>-error` instance may only move to `error`, and from there to deletion.
                if instance.state.isError && instance.state != .error {
                    instance = try await store.setInstanceState(uuid: uuid, to: .error)
                }
                if instance.state.canTransition(to: .deleteWait) { try await store.setInstanceState(uuid: uuid, to: .deleteWait) }
                try await context.instances.remove(try await planner.removalPlan(for: instance))
                var touched = Set<UUID>()
                for interface in try await store.interfaces(instanceUUID: uuid) {
                    touched.insert(interface.networkUUID)
                    // Deleting releases its address, MAC and floating address by owner, in one transaction:
                    // releasing by address first could free one already handed to someone else after a crash.
                    if interface.state != .deleted { try await store.setInterfaceState(uuid: interface.uuid, to: .deleted) }
                }
                try await networks.announce(touched, meshChanged: true)
            }
            // Outside the host lock: releasing waits for running downloads (see HostLocks).
            if let images = context.images {
                let nodeName = context.nodeName
                try await context.locks.releasingImages {
                    let live = try await store.instances(node: nodeName).filter { $0.state != .deleted && $0.uuid != uuid }.map(\.uuid)
                    try await images.release(instance: uuid, liveInstances: live)
                }
            }
            try await store.setInstanceState(uuid: uuid, to: .deleted)
            try await store.setPowerState(uuid: uuid, .off)
            try await context.event("instance", uuid, .status, "instance deletion complete", since: started)
        }
    }

    /// Deletes every instance of a namespace that is not deleted yet, each under its own lock.
    public func deleteAll(namespace: String) async throws {
        let nodeName = context.nodeName
        // This node's instances and unplaced ones: another node's are that node's to delete.
        for instance in try await store.instances(node: nil)
        where instance.namespace == namespace && instance.state != .deleted && (instance.node == nil || instance.node == nodeName) {
            try await delete(instance.uuid)
        }
    }

    /// Shaken Fist's power operations. Each checks the domain's actual state first and refuses an
    /// impossible transition (pausing an instance that is off) with a message that says so.
    public func power(_ operation: PowerOperation, _ uuid: UUID) async throws {
        try await context.locks.objectStep([HostLocks.instance(uuid)]) {
            try await context.locks.hostStep { try await powerHeld(operation, uuid) }
        }
    }

    private func powerHeld(_ operation: PowerOperation, _ uuid: UUID) async throws {
        let instance = try await store.instance(uuid: uuid)
        guard instance.state == .created else {
            throw JobError.refusal("cannot \(operation.verb) instance \(uuid): it is \(instance.state.rawValue), not created")
        }
        try context.refuseIfElsewhere(instance)
        let domains = context.instances.domainControl
        let reference = DomainReference.uuid(uuid)
        let actual = try await domains.state(of: reference)
        func refuse(_ why: String) -> JobError { JobError.refusal("cannot \(operation.verb) instance \(uuid): \(why)") }
        let result: SFStore.PowerState
        switch operation {
        case .poweron:
            if actual == .paused {
                try await domains.resume(reference)
            } else if actual != .on {
                try await context.instances.ensureRunning(try await planner.plan(for: instance))
            }
            result = .on
        case .poweroff:
            try await domains.destroy(reference)
            result = .off
        case .rebootsoft, .reboothard:
            guard actual == .on else { throw refuse("it is \(actual.map(\.rawValue) ?? "not defined"), not on") }
            if operation == .rebootsoft { try await domains.reboot(reference) } else { try await domains.reset(reference) }
            result = .on
        case .pause:
            guard actual == .on || actual == .paused else { throw refuse("it is \(actual.map(\.rawValue) ?? "not defined"), not on") }
            try await domains.suspend(reference)
            result = .paused
        case .unpause:
            guard actual == .paused || actual == .on else {
                throw refuse("it is \(actual.map(\.rawValue) ?? "not defined"), not paused")
            }
            try await domains.resume(reference)
            result = .on
        }
        try await store.setPowerState(uuid: uuid, result)
        try await context.event("instance", uuid, .audit, operation.verb)
    }
}
