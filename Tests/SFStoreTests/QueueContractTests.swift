import Foundation
import SFStore
import SFSystem
import Testing

@Suite("Store contract: work queue")
struct QueueContractTests {
    let hv1 = JobTarget.node("sf-1")
    let hv2 = JobTarget.node("sf-2")

    @Test("jobs for a target come out in enqueue order; other targets are not seen", arguments: Backend.all)
    func fifo(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let a = try await store.enqueue(kind: "instance.start", payload: ["n": 1], target: hv1, objectKey: "instance:a")
            _ = try await store.enqueue(kind: "instance.start", payload: ["n": 2], target: hv2, objectKey: "instance:b")
            let c = try await store.enqueue(kind: "network.create", payload: ["n": 3], target: .networkNode, objectKey: nil)
            let d = try await store.enqueue(kind: "instance.start", payload: ["n": 4], target: hv1, objectKey: "instance:d")
            #expect(a.state == .queued && a.attempts == 0)
            var order: [Int64] = []
            while let job = try await store.claimNext(targets: [hv1, .networkNode], owner: "w", lease: .seconds(30)) {
                #expect(job.state == .running && job.attempts == 1 && job.leaseOwner == "w")
                order.append(job.id)
            }
            #expect(order == [a.id, c.id, d.id])
            #expect(try await store.job(id: c.id).payload == ["n": 3])
            #expect(try await store.jobs(states: [.queued], limit: 10).map(\.target) == [hv2])
            #expect(try await store.jobs(states: [], limit: 10).count == 4)
        }
    }

    @Test("the queue's depth counts live jobs by kind and state, and never finished ones", arguments: Backend.all)
    func liveJobCounts(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            #expect(try await store.liveJobCounts().isEmpty)
            for key in ["a", "b", "c"] {
                _ = try await store.enqueue(kind: "instance.start", payload: nil, target: hv1, objectKey: "instance:\(key)")
            }
            _ = try await store.enqueue(kind: "network.create", payload: nil, target: .networkNode, objectKey: nil)
            let done = try #require(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30)))
            try await store.complete(try #require(done.lease))
            _ = try #require(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30)))
            #expect(
                Set(try await store.liveJobCounts()) == [
                    JobCount(kind: "instance.start", state: .queued, count: 1),
                    JobCount(kind: "instance.start", state: .running, count: 1),
                    JobCount(kind: "network.create", state: .queued, count: 1),
                ])
        }
    }

    @Test("a later job for the same object waits until the earlier one finishes", arguments: Backend.all)
    func perObjectOrder(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let create = try await store.enqueue(kind: "network.create", payload: nil, target: hv1, objectKey: "network:x")
            let delete = try await store.enqueue(kind: "network.delete", payload: nil, target: hv1, objectKey: "network:x")
            let other = try await store.enqueue(kind: "network.create", payload: nil, target: hv1, objectKey: "network:y")
            let running = try #require(try await store.claimNext(targets: [hv1], owner: "w1", lease: .seconds(30)))
            #expect(running.id == create.id)
            // The delete is blocked by the running create; the unrelated job is not.
            #expect(try await store.claimNext(targets: [hv1], owner: "w2", lease: .seconds(30))?.id == other.id)
            #expect(try await store.claimNext(targets: [hv1], owner: "w2", lease: .seconds(30)) == nil)
            try await store.complete(try #require(running.lease))
            #expect(try await store.job(id: create.id).state == .succeeded)
            #expect(try await store.claimNext(targets: [hv1], owner: "w2", lease: .seconds(30))?.id == delete.id)
        }
    }

    @Test("an expired lease makes the job claimable again; renewing keeps it", arguments: Backend.all)
    func leases(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let job = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o")
            // Renewals come at a sixth of the lease, so a loaded 2-core machine (the whole suite runs
            // in parallel, beside builds) still renews in time; the renewals span more than one lease.
            let lease = Duration.seconds(3)
            let first = try #require(try await store.claimNext(targets: [hv1], owner: "w1", lease: lease)?.lease)
            #expect(first == JobLease(jobID: job.id, owner: "w1", token: 1))
            for _ in 0..<7 {
                try await Task.sleep(for: .milliseconds(500))
                #expect(try await store.renewLease(first, for: lease))
                #expect(try await store.claimNext(targets: [hv1], owner: "w2", lease: lease) == nil)
            }
            #expect(try await store.renewLease(JobLease(jobID: job.id, owner: "w2", token: 1), for: lease) == false)
            try await Task.sleep(for: .milliseconds(3300))
            #expect(try await store.renewLease(first, for: lease) == false)
            let reclaimed = try #require(try await store.claimNext(targets: [hv1], owner: "w2", lease: .seconds(30)))
            #expect(reclaimed.id == job.id && reclaimed.attempts == 2 && reclaimed.leaseOwner == "w2")
            let notOwner = await storeError { try await store.complete(first) }
            #expect(notOwner == .notLeaseOwner(jobID: job.id, owner: "w1 (claim 1)", actual: "w2 (claim 2)"))
            #expect(notOwner?.description.contains("not leased by w1 (claim 1)") == true)
            #expect(await storeError { try await store.fail(first, error: "x", retryable: false) } != nil)
            let second = try #require(reclaimed.lease)
            try await store.complete(second)
            #expect(await storeError { try await store.complete(second) }
                == .jobNotRunning(jobID: job.id, state: "succeeded"))
            #expect(await storeError { try await store.complete(JobLease(jobID: 999_999, owner: "w2", token: 1)) }
                == .notFound(type: "job", id: "999999"))
        }
    }

    @Test("a lease that lapsed and was claimed again by the same owner changes nothing (River #1302)", arguments: Backend.all)
    func sameOwnerReclaim(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let job = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o")
            let stale = try #require(try await store.claimNext(targets: [hv1], owner: "agent", lease: .milliseconds(200))?.lease)
            try await Task.sleep(for: .milliseconds(400))
            let current = try #require(try await store.claimNext(targets: [hv1], owner: "agent", lease: .seconds(30))?.lease)
            #expect(current.owner == stale.owner && current.token == stale.token + 1)
            // The old holder, late, can neither finish, fail, postpone nor renew the job again.
            let expected = StoreError.notLeaseOwner(jobID: job.id, owner: "agent (claim 1)", actual: "agent (claim 2)")
            #expect(await storeError { try await store.complete(stale) } == expected)
            #expect(await storeError { try await store.fail(stale, error: "late", retryable: false) } == expected)
            #expect(await storeError { try await store.postpone(stale, delay: .zero, reason: "late") } == expected)
            #expect(try await store.renewLease(stale, for: .seconds(30)) == false)
            #expect(try await store.complete([stale]) == [stale])
            let running = try await store.job(id: job.id)
            #expect(running.state == .running && running.lease == current && running.lastError == nil)
            // A postponement gives its attempt back, but the next claim's token is still new.
            try await store.postpone(current, delay: .zero, reason: "not ready")
            let third = try #require(try await store.claimNext(targets: [hv1], owner: "agent", lease: .seconds(30)))
            #expect(third.attempts == current.token && third.leaseToken == 3)
            #expect(await storeError { try await store.complete(current) } != nil)
            try await store.complete(try #require(third.lease))
            #expect(try await store.job(id: job.id).state == .succeeded)
        }
    }

    @Test("a retryable failure backs off, then the job fails for good after max attempts", arguments: Backend.all)
    func retries(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            #expect(Job.retryDelay(afterAttempt: 1) == .milliseconds(500))
            #expect(Job.retryDelay(afterAttempt: 2) == .seconds(1))
            #expect(Job.retryDelay(afterAttempt: 20) == .seconds(30))
            let job = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o", maxAttempts: 3)
            var failedAt = ContinuousClock.now
            for attempt in 1...3 {
                var claimed: Job?
                while claimed == nil {
                    claimed = try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30))
                    if claimed == nil { try await Task.sleep(for: .milliseconds(20)) }
                }
                #expect(claimed?.attempts == attempt)
                if attempt > 1 {
                    // Backoff after attempt n-1 is 0.5 s × 2^(n-2); allow scheduling slack only upwards.
                    // Measured from just before the failure was recorded, the earliest the store can
                    // have started the backoff.
                    #expect(ContinuousClock.now - failedAt >= Job.retryDelay(afterAttempt: attempt - 1) - .milliseconds(50))
                }
                failedAt = ContinuousClock.now
                try await store.fail(try #require(claimed?.lease), error: "boom \(attempt)", retryable: true)
                let after = try await store.job(id: job.id)
                #expect(after.state == (attempt < 3 ? .queued : .failed))
                #expect(after.lastError == "boom \(attempt)")
            }
            #expect(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30)) == nil)

            let fatal = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: nil, maxAttempts: 5)
            let fatalLease = try #require(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30))?.lease)
            #expect(fatalLease.jobID == fatal.id)
            try await store.fail(fatalLease, error: "bad input", retryable: false)
            let failed = try await store.job(id: fatal.id)
            #expect(failed.state == .failed && failed.lastError == "bad input" && failed.attempts == 1)
            #expect(try await store.jobs(states: [.failed], limit: 10).count == 2)
        }
    }

    @Test("a job whose agent died on its last attempt is handed over exhausted, for its claimer to fail", arguments: Backend.all)
    func expiredLastAttempt(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let job = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o", maxAttempts: 1)
            let next = try await store.enqueue(kind: "k2", payload: nil, target: hv1, objectKey: "o")
            _ = try await store.claimNext(targets: [hv1], owner: "dead", lease: .milliseconds(100))
            try await Task.sleep(for: .milliseconds(200))
            let exhausted = try #require(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30)))
            #expect(exhausted.id == job.id && exhausted.isExhausted)
            #expect(exhausted.lastError == "lease of dead expired during attempt 1 of 1")
            try await store.fail(try #require(exhausted.lease), error: exhausted.lastError ?? "", retryable: true)
            #expect(try await store.job(id: job.id).state == .failed)
            // Failing it unblocks the next job of its object.
            #expect(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30))?.id == next.id)
        }
    }

    @Test("a postponed job goes back to the queue without spending its attempt", arguments: Backend.all)
    func postpone(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let job = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o", maxAttempts: 1)
            let held = try #require(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30))?.lease)
            try await store.postpone(held, delay: .seconds(60), reason: "network n is initial")
            let waiting = try await store.job(id: job.id)
            #expect(waiting.state == .queued && waiting.attempts == 0 && waiting.lastError == "network n is initial")
            #expect(try await store.claimNext(targets: [hv1], owner: "w", lease: .seconds(30)) == nil)
            #expect(await storeError { try await store.postpone(held, delay: .zero, reason: "") } != nil)
        }
    }

    @Test("an object and its jobs are stored in one transaction, or neither is", arguments: Backend.all)
    func objectWithJobs(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let network = try await store.createNetwork(
                uuid: UUID(), name: "n", namespace: "ns", netblock: try #require(IPv4Prefix("10.9.0.0/24")), provideDHCP: true,
                provideNAT: true, jobs: [NewJob(kind: "network.create", payload: nil, target: .networkNode, objectKey: "network:x")])
            #expect(try await store.jobs(states: [.queued], limit: 10).map(\.kind) == ["network.create"])
            // An interface that cannot be made (its address is outside the network) takes the
            // instance and its job with it.
            let instance = Instance(name: "i", namespace: "ns", cpus: 1, memory: 64, diskSpec: [])
            let refused = await storeError {
                try await store.createInstance(
                    instance,
                    interfaces: [NewInterface(networkUUID: network.uuid, model: "virtio", address: .specific(try #require(IPv4Address("10.8.0.5"))))],
                    jobs: [NewJob(kind: "instance.create", payload: nil, target: hv1, objectKey: nil)])
            }
            #expect(refused != nil)
            #expect(await storeError { _ = try await store.instance(uuid: instance.uuid) } == .notFound(type: "instance", id: instance.uuid.uuidString.lowercased()))
            #expect(try await store.jobs(states: [.queued], limit: 10).count == 1)
        }
    }

    @Test("malformed and unknown targets are refused", arguments: Backend.all)
    func targets(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            for bad in ["", "sf-1", "role:hypervisor", "node:", "node:has space", "queue:x"] {
                #expect(throws: StoreError.self, "\(bad)") { try JobTarget.parse(bad) }
            }
            let named = try JobTarget.parse("node:sf-1.example.com")
            let role = try JobTarget.parse("role:network-node")
            #expect(named == .node("sf-1.example.com"))
            #expect(role == .networkNode)
            #expect(await storeError { _ = try await store.enqueue(kind: "k", payload: nil, target: .node(""), objectKey: nil) }
                == .invalidTarget("empty node name"))
            #expect(await storeError { _ = try await store.enqueue(kind: "k", payload: nil, target: .node("a b"), objectKey: nil) } != nil)
            #expect(await storeError { _ = try await store.claimNext(targets: [], owner: "w", lease: .seconds(1)) } != nil)
            #expect(await storeError { _ = try await store.claimNext(targets: [.node("x/y")], owner: "w", lease: .seconds(1)) } != nil)
            #expect(await storeError {
                _ = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: nil, maxAttempts: 0)
            } != nil)
        }
    }

    @Test("two stores on the same data never claim the same job", arguments: Backend.all)
    func twoProcesses(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let other = try opened.reopen()
            var ids: [Int64] = []
            for index in 0..<50 {
                ids.append(try await store.enqueue(kind: "k", payload: ["i": .number(Double(index))], target: hv1, objectKey: nil).id)
            }
            let claimed = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for (name, claimer) in [("p1", store), ("p2", other)] {
                    group.addTask {
                        var mine: [Int64] = []
                        while let job = try await claimer.claimNext(targets: [.node("sf-1")], owner: name, lease: .seconds(30)) {
                            mine.append(job.id)
                            try await claimer.complete(try #require(job.lease))
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: [[Int64]]()) { $0.append($1) }
            }
            let all = claimed.flatMap { $0 }
            #expect(all.count == 50)
            #expect(all.sorted() == ids)
            #expect(try await store.jobs(states: [.succeeded], limit: 100).count == 50)
        }
    }

    @Test("a batch claim takes the oldest claimable jobs in order, one per object, at most its limit", arguments: Backend.all)
    func batchOrder(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            var ids: [String: Int64] = [:]
            for (name, target, key) in [
                ("a", hv1, "network:x"), ("b", hv1, "network:x"), ("c", hv1, "network:y"), ("d", hv1, nil),
                ("e", hv2, nil), ("f", hv1, nil), ("g", hv1, "network:z"),
            ] as [(String, JobTarget, String?)] {
                ids[name] = try await store.enqueue(kind: "k", payload: ["name": .string(name)], target: target, objectKey: key).id
            }
            let first = try await store.claimBatch(targets: [hv1], owner: "w1", lease: .seconds(30), limit: 3)
            #expect(first.map(\.id) == ["a", "c", "d"].map { ids[$0] })
            #expect(first.allSatisfy { $0.state == .running && $0.attempts == 1 && $0.leaseOwner == "w1" && $0.leaseExpiry != nil })
            #expect(try await store.job(id: try #require(ids["a"])).leaseOwner == "w1")
            // b waits for a (same object), e is another node's: what is left is f and g, fewer than asked.
            let second = try await store.claimBatch(targets: [hv1], owner: "w2", lease: .seconds(30), limit: 10)
            #expect(second.map(\.id) == ["f", "g"].map { ids[$0] })
            #expect(try await store.claimBatch(targets: [hv1], owner: "w2", lease: .seconds(30), limit: 10).isEmpty)
            try await store.complete(try #require(first.first?.lease))
            #expect(try await store.claimBatch(targets: [hv1, hv2], owner: "w2", lease: .seconds(30), limit: 10).map(\.id)
                == ["b", "e"].map { ids[$0] })
        }
    }

    @Test("a batch completes in one call; the jobs the owner does not hold are answered and left alone", arguments: Backend.all)
    func batchCompletion(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let first = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o1")
            let behind = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o1")
            let second = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o2")
            let others = try await store.enqueue(kind: "k", payload: nil, target: hv2, objectKey: nil)
            let batch = try await store.claimBatch(targets: [hv1], owner: "w1", lease: .seconds(30), limit: 10)
            #expect(batch.map(\.id) == [first.id, second.id])
            #expect(try await store.claimNext(targets: [hv2], owner: "w2", lease: .seconds(30))?.id == others.id)
            let held = batch.compactMap(\.lease)
            let notHeld = [JobLease(jobID: others.id, owner: "w1", token: 1), JobLease(jobID: 987_654, owner: "w1", token: 1)]
            let refused = try await store.complete([held[0], notHeld[0], held[1], notHeld[1]])
            #expect(refused == notHeld)
            #expect(try await store.job(id: first.id).state == .succeeded)
            #expect(try await store.job(id: second.id).state == .succeeded)
            let untouched = try await store.job(id: others.id)
            #expect(untouched.state == .running && untouched.leaseOwner == "w2")
            // The job that waited behind the first on its object is free now; a second call changes nothing.
            #expect(try await store.claimNext(targets: [hv1], owner: "w1", lease: .seconds(30))?.id == behind.id)
            #expect(try await store.complete(held) == held)
            #expect(try await store.complete([JobLease]()).isEmpty)
            await #expect(throws: StoreError.self) {
                _ = try await store.complete((1...Int64(SQLStore.claimBatchLimit + 1)).map { JobLease(jobID: $0, owner: "w1", token: 1) })
            }
        }
    }

    @Test("a batch never holds two jobs of one object, and kinds filter it as they do a single claim", arguments: Backend.all)
    func batchObjectRule(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            var byKey: [String: [Int64]] = [:]
            for index in 0..<30 {
                let key = "instance:\(index % 4)"
                let kind = index < 2 ? "instance.delete" : "instance.start"
                byKey[key, default: []].append(try await store.enqueue(kind: kind, payload: nil, target: hv1, objectKey: key).id)
            }
            let batch = try await store.claimBatch(
                targets: [hv1], owner: "w", lease: .seconds(30), kinds: .excluding(["instance.delete"]), maxDeaths: 2, limit: 100)
            // Each object's oldest job, unless that one is a delete (the first jobs of instance:0 and
            // instance:1): a later job never passes an earlier one of its object.
            #expect(batch.map(\.objectKey) == ["instance:2", "instance:3"])
            #expect(batch.map(\.id) == [byKey["instance:2"]?[0], byKey["instance:3"]?[0]])
            let rest = try await store.claimBatch(targets: [hv1], owner: "w", lease: .seconds(30), limit: 100)
            #expect(rest.map(\.id) == [byKey["instance:0"]?[0], byKey["instance:1"]?[0]])
        }
    }

    @Test("a batch claim counts the deaths of lapsed leases and hands over a job that died too often", arguments: Backend.all)
    func batchDeaths(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let dying = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o1")
            let fresh = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: "o2")
            #expect(try await store.claimNext(targets: [hv1], owner: "dead", lease: .milliseconds(100))?.id == dying.id)
            try await Task.sleep(for: .milliseconds(200))
            let batch = try await store.claimBatch(targets: [hv1], owner: "w", lease: .seconds(30), kinds: .any, maxDeaths: 1, limit: 10)
            #expect(batch.map(\.id) == [dying.id, fresh.id])
            let died = try #require(batch.first)
            #expect(died.deaths == 1 && died.attempts == 2 && died.leaseOwner == "w")
            #expect(died.lastError == Job.deathMessage(deaths: 1) && died.diedTooOften(limit: 1))
            #expect(batch.last?.deaths == 0 && batch.last?.lastError == nil)
        }
    }

    @Test("a batch limit outside 1...1000 is refused, naming the value", arguments: Backend.all)
    func batchLimit(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            _ = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: nil)
            for bad in [0, -1, 1001, Int.max, Int.min] {
                let error = await storeError { _ = try await store.claimBatch(targets: [hv1], owner: "w", lease: .seconds(30), limit: bad) }
                #expect(error == .invalidArgument("claim batch limit \(bad) is not from 1 to 1000"))
            }
            #expect(try await store.jobs(states: [.queued], limit: 10).count == 1)
            #expect(try await store.claimBatch(targets: [hv1], owner: "w", lease: .seconds(30), limit: 1000).count == 1)
            #expect(await storeError { _ = try await store.claimBatch(targets: [], owner: "w", lease: .seconds(30), limit: 5) } != nil)
        }
    }

    @Test("two stores claiming batches at once never get the same job", arguments: Backend.all)
    func concurrentBatches(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let other = try opened.reopen()
            let jobs = (0..<400).map { NewJob(kind: "k", payload: ["i": .number(Double($0))], target: hv1, objectKey: nil) }
            let ids = try await store.enqueue(jobs).map(\.id)
            let claimed = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for (name, claimer) in [("p1", store), ("p2", other), ("p3", store), ("p4", other)] {
                    group.addTask {
                        var mine: [Int64] = []
                        while true {
                            let batch = try await claimer.claimBatch(targets: [self.hv1], owner: name, lease: .seconds(30), limit: 25)
                            if batch.isEmpty { break }
                            for job in batch {
                                mine.append(job.id)
                                try await claimer.complete(try #require(job.lease))
                            }
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: [[Int64]]()) { $0.append($1) }
            }
            let all = claimed.flatMap { $0 }
            #expect(all.count == 400)
            #expect(all.sorted() == ids)
            #expect(try await store.jobs(states: [.succeeded], limit: 1000).count == 400)
        }
    }

    @Test("enqueue wakes this process; another store's commit changes the change token", arguments: Backend.all)
    func signals(backend: Backend) async throws {
        try await withStore(backend) { store, opened in
            let wakeups = store.wakeups()
            _ = try await store.enqueue(kind: "k", payload: nil, target: hv1, objectKey: nil)
            var iterator = wakeups.makeAsyncIterator()
            let woke: Void? = await iterator.next()
            #expect(woke != nil)

            let other = try opened.reopen()
            let before = try await store.changeToken()
            #expect(try await store.changeToken() == before)
            _ = try await other.enqueue(kind: "k", payload: nil, target: hv1, objectKey: nil)
            #expect(try await store.changeToken() != before)
        }
    }
}
