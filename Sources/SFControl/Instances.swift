import Foundation
import SFStore
import SFSystem

extension Control {
    /// Creates an instance with its interfaces, places it, and queues its `instance.create` for
    /// the node chosen (and `interface.float` for interfaces asked to float), in one transaction.
    /// Networks still being created are fine: the job waits for them.
    public func createInstance(_ request: InstanceRequest) async throws -> (Instance, [Interface]) {
        let namespace = request.namespace ?? settings.defaultNamespace
        try Names.checkName(namespace, "namespace")
        try Names.checkInstanceName(request.name)
        guard InstanceLimits.cpus.contains(request.cpus) else {
            throw ControlError.invalid("cpus is \(request.cpus); an instance has \(InstanceLimits.cpus.lowerBound) to \(InstanceLimits.cpus.upperBound)")
        }
        guard InstanceLimits.memoryMiB.contains(request.memoryMiB) else {
            throw ControlError.invalid("memory is \(request.memoryMiB) MiB; an instance has \(InstanceLimits.memoryMiB.lowerBound) MiB to \(InstanceLimits.memoryMiB.upperBound / 1024) GiB")
        }
        guard !request.disks.isEmpty else { throw ControlError.invalid("instance must specify at least one disk") }
        guard InstanceLimits.disks.contains(request.disks.count) else {
            throw ControlError.invalid("\(request.disks.count) disks asked for; an instance has at most \(InstanceLimits.disks.upperBound)")
        }
        for (index, disk) in request.disks.enumerated() { try await checkDisk(disk, index: index, namespace: namespace) }
        let video = request.video ?? VideoSpec()
        guard VideoModel(rawValue: video.model) != nil else {
            throw ControlError.invalid("video model '\(video.model)' is not one of \(VideoModel.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard (0...262_144).contains(video.memory) else { throw ControlError.invalid("video memory \(video.memory) KiB is outside 0...262144") }
        try checkPlacementMetadata(request.metadata)
        try checkConfig(request.config)
        var config = request.config
        if let template = config.nvramTemplate { config.nvramTemplate = try await resolveNVRAMTemplate(template, namespace: namespace) }
        guard InstanceLimits.interfaces.contains(request.networks.count) else {
            throw ControlError.invalid("\(request.networks.count) interfaces asked for; an instance has at most \(InstanceLimits.interfaces.upperBound)")
        }
        var interfaces: [NewInterface] = []
        var floats: [UUID] = []
        for (index, asked) in request.networks.enumerated() {
            let network = try await self.network(asked.network, namespace: namespace == Namespace.system ? nil : namespace)
            guard [.initial, .created].contains(network.state) else {
                throw ControlError.conflict("network \(network.uuid.lowercasedString) is \(network.state.rawValue); no instance can join it")
            }
            let model = asked.model ?? NICModel.virtio.rawValue
            guard NICModel(rawValue: model) != nil else {
                throw ControlError.invalid("interface \(index): NIC model '\(model)' is not one of \(NICModel.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let address: AddressRequest
            switch asked.address {
            case nil: address = .any
            case "none"?: address = .none
            case let text?:
                guard let parsed = IPv4Address(text) else { throw ControlError.invalid("interface \(index): '\(text)' is not an IPv4 address") }
                guard network.netblock.contains(parsed) else {
                    throw ControlError.invalid("interface \(index): \(text) is outside the range of network \(network.name) (\(network.netblock))")
                }
                address = .specific(parsed)
            }
            let mac = try asked.macaddr.map { text in
                guard let mac = MACAddress(text) else { throw ControlError.invalid("interface \(index): '\(text)' is not a MAC address") }
                return mac
            }
            if asked.float && address == .none {
                throw ControlError.invalid("interface \(index) asks to float but has no address")
            }
            let interface = NewInterface(networkUUID: network.uuid, model: model, address: address, macaddr: mac)
            interfaces.append(interface)
            if asked.float { floats.append(interface.uuid) }
        }
        try await checkInstanceQuota(request, namespace: namespace, floats: floats.count)
        return try await controlled {
            let placement = try await place(request)
            var instance = Instance(
                name: request.name, namespace: namespace, cpus: request.cpus, memory: request.memoryMiB, diskSpec: request.disks,
                video: video, node: placement.node, config: config)
            instance.errorMessage = nil
            var jobs = [try JobOrder(.instanceCreate, .instance(instance.uuid), requestID: request.requestID).job(for: .node(placement.node))]
            for uuid in floats {
                jobs.append(try JobOrder(.interfaceFloat, .interface(uuid), requestID: request.requestID).job(for: .networkNode))
            }
            let created = try await store.createInstance(instance, interfaces: interfaces, jobs: jobs)
            // After the commit: an event for an instance that was never stored would be listed under nothing.
            for line in placement.audit {
                try await store.record(
                    Event(objectType: "instance", objectUUID: instance.uuid.lowercasedString, type: .audit, fqdn: placement.node, message: line,
                          extra: request.requestID.map { ["request-id": .string($0)] }))
            }
            for (key, value) in request.metadata {
                try await store.setMetadata(objectType: "instance", objectUUID: instance.uuid.lowercasedString, key: key, value: value)
            }
            return (instance, created)
        }
    }

    func checkConfig(_ config: InstanceConfig) throws(ControlError) {
        if config.secureBoot && !config.uefi { throw ControlError.invalid("secure boot requires UEFI be enabled") }
        if config.nvramTemplate != nil && !config.uefi { throw ControlError.invalid("nvram_template requires UEFI be enabled") }
        for channel in config.sideChannels where !InstanceLimits.sideChannels.contains(channel) {
            throw ControlError.invalid("\(channel) is not a known side channel type (use \(InstanceLimits.sideChannels.sorted().joined(separator: " or ")))")
        }
        if let key = config.sshKey {
            let fields = key.split(separator: " ")
            guard !key.contains("\n"), fields.count >= 2, fields[0].hasPrefix("ssh-") || fields[0].hasPrefix("ecdsa-") || fields[0].hasPrefix("sk-")
            else { throw ControlError.invalid("ssh_key is not one OpenSSH public key line (such as 'ssh-ed25519 AAAA… user@host')") }
        }
        if let userData = config.userData {
            guard let decoded = Data(base64Encoded: userData, options: .ignoreUnknownCharacters) else {
                throw ControlError.invalid("user_data is not base64; send the user data base64 encoded")
            }
            guard decoded.count <= InstanceLimits.userDataBytes else {
                throw ControlError.invalid("user_data is \(decoded.count) bytes decoded; at most \(InstanceLimits.userDataBytes) are allowed")
            }
        }
    }

    /// The blob a UEFI instance of `namespace` starts its firmware variables from, named as Shaken
    /// Fist does (a blob UUID) or as any disk base that names a blob (`sf://blob/…`, `label:…`,
    /// `sf://snapshot/…`): as the namespace sees images, with a 404 for what it cannot see, and no
    /// larger than ``InstanceLimits/nvramTemplateBytes``. Answers the blob's UUID, which is what the
    /// instance keeps: a label moved later does not change the variables it booted with.
    func resolveNVRAMTemplate(_ text: String, namespace: String) async throws -> String {
        let reference = try UUID(uuidString: text).map(ImageReference.blob) ?? ImageReference.parse(text, imageDownloadURL: settings.imageDownloadURL)
        switch reference {
        case .url: throw ControlError.invalid("nvram_template \(text) is a URL; name a blob (its UUID, sf://blob/UUID or a label)")
        default: break
        }
        let access = try imageAccess()
        guard let blob = try await controlled({ try await access.blob(for: reference, namespace: namespace) }) else {
            throw ControlError.notFound("nvram_template \(text): blob not found")
        }
        guard blob.state == .created else {
            throw ControlError.conflict("nvram_template blob \(blob.uuid.lowercasedString) is \(blob.state.rawValue), not created")
        }
        guard blob.size <= InstanceLimits.nvramTemplateBytes else {
            throw ControlError.invalid(
                "nvram_template blob \(blob.uuid.lowercasedString) is \(blob.size) bytes; an NVRAM template is at most \(InstanceLimits.nvramTemplateBytes) (a firmware variable store such as OVMF_VARS_4M.fd)")
        }
        return blob.uuid.lowercasedString
    }

    /// Checks one disk of an instance of `namespace`, its base included: a base that is missing,
    /// not ready or not the namespace's to see (``ImageAccess``) is refused now with Shaken Fist's
    /// 404, as the agent would refuse it later. A URL is checked by the agent when it fetches.
    func checkDisk(_ disk: DiskSpec, index: Int, namespace: String) async throws {
        if let bus = disk.bus {
            if bus == "ide" { throw ControlError.invalid("IDE disks are no longer supported") }
            if bus == "nvme" {
                throw ControlError.invalid("disk \(index): disk bus nvme is not supported: this node's libvirt has no NVMe disk bus (use virtio, sata, scsi or usb)")
            }
            guard DiskBus(rawValue: bus) != nil else {
                throw ControlError.invalid("disk \(index): invalid disk bus \(bus) (use virtio, sata, scsi or usb)")
            }
        }
        if let size = disk.size, !InstanceLimits.diskGiB.contains(size) {
            throw ControlError.invalid("disk \(index): size \(size) GiB is outside \(InstanceLimits.diskGiB.lowerBound)...\(InstanceLimits.diskGiB.upperBound)")
        }
        switch (disk.type, disk.base) {
        case (_, let base?):
            let reference = try ImageReference.parse(base, imageDownloadURL: settings.imageDownloadURL)
            let access = try imageAccess()
            _ = try await controlled { try await access.blob(for: reference, namespace: namespace) }
        case (.disk, nil):
            guard disk.size != nil else { throw ControlError.invalid("disk \(index): a blank disk needs a size in GiB") }
        case (.cdrom, nil): throw ControlError.invalid("disk \(index): a cdrom needs a base image")
        }
    }

    /// The instances of a namespace (all when nil), oldest first; deleted ones only when asked.
    public func instances(namespace: String?, includeDeleted: Bool = false) async throws -> [Instance] {
        try await controlled {
            try await store.instances(node: nil).filter {
                (namespace == nil || $0.namespace == namespace) && (includeDeleted || $0.state != .deleted)
            }
        }
    }

    /// The instance `reference` names: its UUID, or its name when unique among the live instances
    /// of `namespace`. A deleted instance is still found by UUID.
    public func instance(_ reference: String, namespace: String? = nil) async throws -> Instance {
        try await controlled {
            if let uuid = UUID(uuidString: reference) {
                let instance = try await store.instance(uuid: uuid)
                guard namespace == nil || instance.namespace == namespace else { throw ControlError.notFound("instance \(reference) not found") }
                return instance
            }
            let named = try await instances(namespace: namespace).filter { $0.name == reference }
            guard let instance = named.first else { throw ControlError.notFound("instance \(reference) not found") }
            guard named.count == 1 else {
                throw ControlError.invalid("\(named.count) instances are named '\(reference)'; name one by UUID: \(named.map { $0.uuid.lowercasedString }.joined(separator: ", "))")
            }
            return instance
        }
    }

    /// ``instance(_:namespace:)`` with its interfaces and the metadata of both, read at once: what
    /// the API shows of an instance.
    public func instanceRecord(_ reference: String, namespace: String? = nil) async throws -> InstanceRecord {
        try await controlled {
            var uuid = UUID(parsing: reference)
            if uuid == nil { uuid = try await instance(reference, namespace: namespace).uuid }
            guard let uuid else { throw ControlError.notFound("instance \(reference) not found") }
            let record: InstanceRecord
            do {
                record = try await store.instanceRecord(uuid: uuid)
            } catch StoreError.notFound {
                throw ControlError.notFound("instance \(reference) not found")
            }
            guard namespace == nil || record.instance.namespace == namespace else { throw ControlError.notFound("instance \(reference) not found") }
            return record
        }
    }

    /// The records of a namespace's instances (all when nil), oldest first; deleted ones only when asked.
    public func instanceRecords(namespace: String?, includeDeleted: Bool = false) async throws -> [InstanceRecord] {
        try await controlled {
            try await store.instanceRecords(namespace: namespace).filter { includeDeleted || $0.instance.state != .deleted }
        }
    }

    /// The interfaces of an instance, by order.
    public func interfaces(ofInstance instance: Instance) async throws -> [Interface] {
        try await controlled { try await store.interfaces(instanceUUID: instance.uuid) }
    }

    /// Queues the instance's deletion on its node (or, unplaced, on this cluster's network node).
    public func deleteInstance(_ reference: String, namespace: String? = nil, requestID: String? = nil) async throws -> Instance {
        let instance = try await self.instance(reference, namespace: namespace)
        if instance.state == .deleted { return instance }
        try await queue(.instanceDelete, for: instance, requestID: requestID)
        return instance
    }

    /// Runs a power operation and answers when it is done, as Shaken Fist does: the instance as
    /// its job left it. Refused at once with Shaken Fist's answers: 406 `not ready` while the
    /// instance is still being made (the client retries those), 409 in a state it will not leave
    /// (error, deleted) and for what a powered-off instance cannot do (reboot, pause, unpause). An
    /// instance placed nowhere is answered as it is, and nothing is done.
    ///
    /// - Parameter wait: how long to wait for the job (``ControlSettings/powerWait`` when nil); a
    ///   job still running then is left to finish, and the instance is answered as it is.
    @discardableResult public func power(
        _ operation: PowerOperation, _ reference: String, namespace: String? = nil, requestID: String? = nil, wait: Duration? = nil
    ) async throws -> Instance {
        let instance = try await self.instance(reference, namespace: namespace)
        let uuid = instance.uuid.lowercasedString
        switch instance.state {
        case .created: break
        case .initial, .preflight, .creating: throw ControlError.notReady("instance \(uuid) is not ready (\(instance.state.rawValue))")
        default: throw ControlError.conflict("instance \(uuid) is not ready (\(instance.state.rawValue))")
        }
        if instance.powerState == .off, let verb = operation.refusedWhenOff {
            throw ControlError.conflict("Invalid lifecycle state: you cannot \(verb) a powered off instance")
        }
        guard instance.node != nil else { return instance }
        // The caller's places: an admin acting on a tenant's instance does not use up the tenant's.
        let finished: Job? = try await waitingForJobs(namespace: namespace ?? Namespace.system) {
            guard let job = try await queue(JobKind(operation), for: instance, requestID: requestID) else { return nil }
            return try await waitForJob(job.id, timeout: wait ?? settings.powerWait)
        }
        guard let finished else { return try await self.instance(uuid, namespace: namespace) }
        if finished.state == .failed {
            throw ControlError.conflict(finished.lastError ?? "\(operation.verb) of instance \(uuid) failed")
        }
        return try await self.instance(uuid, namespace: namespace)
    }

    /// Whether a job about `object` is queued or running: what a caller waits out before it reads
    /// the object's state as final.
    public func hasPendingJobs(_ object: ObjectKey) async throws -> Bool {
        let jobs = try await controlled { try await store.jobs(states: [.queued, .running], limit: Self.queueScanLimit) }
        return jobs.contains { $0.objectKey == object.text }
    }

    /// The job once it has finished (succeeded or failed), or nil when it is still queued or
    /// running after `timeout`. How a caller learns that what it asked for is done: it reads the job
    /// again on each of the store's wake-ups (a commit here or in another process), and every `poll`
    /// when none comes.
    public func waitForJob(_ id: Int64, timeout: Duration, poll: Duration = .seconds(1)) async throws -> Job? {
        let deadline = ContinuousClock.now + timeout
        while true {
            // Subscribed before the read: a job that finishes just after it still ends this wait.
            let wakeups = store.wakeups()
            let job = try await controlled { try await store.job(id: id) }
            if !job.state.isLive { return job }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return nil }
            try Task.checkCancellation()
            await Self.firstWakeup(wakeups, within: min(poll, left))
        }
    }

    /// Returns on the stream's first wake-up, or after `limit`, whichever comes first.
    private static func firstWakeup(_ wakeups: AsyncStream<Void>, within limit: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in wakeups { return } }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Queues `kind` for the instance and answers its job: the one queued, or the same job queued
    /// already that it was coalesced into.
    @discardableResult private func queue(_ kind: JobKind, for instance: Instance, requestID: String?) async throws -> Job? {
        let order = try JobOrder(kind, .instance(instance.uuid), requestID: requestID)
        if case .coalesced(let queued) = try await admitJob(order) { return queued }
        let target: JobTarget = instance.node.map(JobTarget.node) ?? .networkNode
        return try await controlled { try await store.enqueue([order.job(for: target)]) }.first
    }
}
