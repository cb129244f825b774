import Foundation
import NIOCore
import SFAPI
import SFControl
import SFStore
import Testing

/// Calls the real client makes that must answer as Shaken Fist answers them (issue 14).
@Suite("Shaken Fist parity of the API")
struct ParityTests {
    @Test("a known path with a wrong method is 405 with Allow, before authentication; OPTIONS and HEAD answer; unknown paths stay 404")
    func wrongMethodIs405() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let put = try await api.send(.put, "/auth/namespaces/system/keys")
            #expect(put.status == .methodNotAllowed, "\(put.text)")
            #expect(put["error"]?.stringValue == "The method is not allowed for the requested URL.")
            #expect(put.headers[.allow] == "GET, HEAD, OPTIONS, POST", "\(put.headers)")
            let root = try await api.send(.post, "/")
            #expect(root.status == .methodNotAllowed && root.headers[.allow]?.contains("GET") == true)
            let options = try await api.send(.options, "/instances")
            #expect(options.status == .ok && options.headers[.allow] == "DELETE, GET, HEAD, OPTIONS, POST", "\(options.headers)")
            let unknown = try await api.send(.put, "/no/such/path")
            #expect(unknown.status == .notFound)
            // The route exists for GET: HEAD is answered (401 here, as its GET is without a token).
            let head = try await api.send(.head, "/instances")
            #expect(head.status == .unauthorized)
            let token = try await api.token()
            let authorised = try await api.send(.head, "/instances", token: token)
            #expect(authorised.status == .ok)
        }
    }

    @Test("any namespace that sees a blob may change its metadata; one that does not see it gets 404")
    func blobMetadataIsNotAdminOnly() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let tenant = try await api.tenant("tenant", admin: admin)
            let made = try await api.uploadArtifact("img", content: "some image bytes", token: tenant)
            let blob = try #require(made["blob_uuid"]?.stringValue, "\(made.text)")
            let set = try await api.send(.put, "/blobs/\(blob)/metadata/owner", token: tenant, body: ["value": "team-a"])
            #expect(set.status == .ok, "\(set.text)")
            let read = try await api.send(.get, "/blobs/\(blob)/metadata", token: tenant)
            #expect(read["owner"] == .string("team-a"))
            let other = try await api.tenant("other", admin: admin)
            let foreign = try await api.send(.put, "/blobs/\(blob)/metadata/owner", token: other, body: ["value": "mine"])
            #expect(foreign.status == .notFound)
        }
    }

    @Test("namespace metadata for the namespace and the admin only; node metadata, events and locks for the admin")
    func namespaceAndNodeMetadata() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let tenant = try await api.tenant("tenant", admin: admin)
            let set = try await api.send(.post, "/auth/namespaces/tenant/metadata", token: tenant, body: ["key": "team", "value": "blue"])
            #expect(set.status == .ok && set.json == .null, "\(set.text)")
            #expect(try await api.send(.get, "/auth/namespaces/tenant/metadata", token: admin)["team"] == .string("blue"))
            #expect(try await api.send(.get, "/auth/namespaces/tenant", token: tenant)["metadata"] == .object(["team": "blue"]))
            let empty = try await api.send(.put, "/auth/namespaces/tenant/metadata/team", token: tenant, body: ["value": ""])
            #expect(empty.status == .badRequest && empty.text.contains("no value specified"))
            #expect(try await api.send(.get, "/auth/namespaces/system/metadata", token: tenant).status == .notFound)
            #expect(try await api.send(.delete, "/auth/namespaces/tenant/metadata/team", token: tenant).status == .ok)
            #expect(try await api.send(.delete, "/auth/namespaces/tenant/metadata/team", token: tenant).status == .ok)
            #expect(try await api.send(.get, "/auth/namespaces/tenant/metadata", token: tenant).json == .object([:]))

            #expect(try await api.send(.put, "/nodes/hv1/metadata/rack", token: admin, body: ["value": "r12"]).status == .ok)
            #expect(try await api.send(.get, "/nodes/hv1", token: admin)["metadata"] == .object(["rack": "r12"]))
            #expect(try await api.send(.get, "/nodes/hv1/metadata", token: tenant).status == .unauthorized)
            #expect(try await api.send(.get, "/nodes/nowhere/metadata", token: admin).status == .notFound)
            #expect(try await api.send(.get, "/nodes/nowhere/events", token: admin).json == .array([]))
            #expect(try await api.send(.get, "/admin/locks", token: admin).json == .object([:]))
            #expect(try await api.send(.get, "/admin/locks", token: tenant).status == .unauthorized)
        }
    }

    @Test("deleting a node that is gone deletes its made instances with their addresses, fails its jobs, keeps it listed as deleted, and is idempotent")
    func nodeDelete() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let network = try #require(try await api.send(.post, "/networks", token: admin, body: ["netblock": "10.0.0.0/24", "name": "net"])["uuid"]?.stringValue)
            let made = try await api.send(.post, "/instances", token: admin, body: InstanceAPITests.createBody(network: network))
            let instance = try #require(made["uuid"]?.stringValue, "\(made.text)")
            let broken = try #require(try await api.send(.post, "/instances", token: admin, body: InstanceAPITests.createBody(network: network, extra: ["name": "broken"]))["uuid"]?.stringValue)
            let brokenUUID = try #require(UUID(uuidString: broken))
            try await fixture.store.setInstanceState(uuid: brokenUUID, to: .initialError)
            try await fixture.store.setInstanceState(uuid: brokenUUID, to: .error)
            let interfaces = try await api.send(.get, "/instances/\(instance)/interfaces", token: admin).json?.arrayValue
            guard case .object(let interface)? = interfaces?.first, let address = interface["ipv4"]?.stringValue else {
                Issue.record("no interface with an address: \(String(describing: interfaces))")
                return
            }

            // An image on the node, which the instance's disk holds (as its agent would have recorded).
            let image = try #require(try await api.uploadArtifact("img", content: "image bytes", token: admin)["blob_uuid"]?.stringValue.flatMap(UUID.init(uuidString:)))
            #expect(try await fixture.store.blob(uuid: image).locations == ["hv1"])
            try await fixture.store.addReference(
                BlobReference(blobUUID: image, holderType: "instance", holderUUID: try #require(UUID(uuidString: instance)), relationship: .disk))

            #expect(try await api.send(.delete, "/nodes/hv1", token: try await api.tenant("t", admin: admin)).status == .unauthorized)
            #expect(try await api.send(.delete, "/nodes/nowhere", token: admin).status == .notFound)
            let deleted = try await api.send(.delete, "/nodes/hv1", token: admin)
            #expect(deleted.status == .ok && deleted["state"] == "deleted" && deleted["name"] == "hv1", "\(deleted.text)")
            #expect(try await api.send(.get, "/instances/\(instance)", token: admin)["state"] == "deleted")
            #expect(try await api.send(.get, "/instances/\(broken)", token: admin)["state"] == "error")
            #expect(try await fixture.store.blob(uuid: image).locations.isEmpty)
            #expect(try await fixture.store.references(to: image).allSatisfy { $0.holderType != "instance" })
            let addresses = try await fixture.store.allocatedIPv4(networkUUID: try #require(UUID(uuidString: network)))
            #expect(!addresses.keys.map(\.description).contains(address), "\(addresses)")
            // Its create jobs will never run there: failed, saying why; the network node refreshes the network.
            let jobs = try await fixture.store.jobs(states: JobState.allCases, limit: 100)
            #expect(jobs.filter { $0.target == .node("hv1") }.allSatisfy { $0.state == .failed && $0.lastError == "node hv1 was deleted" })
            #expect(jobs.contains { $0.kind == "network.refresh" && $0.target == .networkNode && $0.state == .queued })

            // Checking in again does not bring it back, and nothing is placed on it.
            try await fixture.store.saveNode(
                Node(name: "hv1", roles: [.hypervisor, .networkNode], lastSeen: Date(), capacity: NodeCapacity(cpus: 4, memoryMiB: 8192, diskGiB: 100)))
            let again = try await api.send(.delete, "/nodes/hv1", token: admin)
            #expect(again.status == .ok && again["state"] == "deleted" && again["lastseen"] != deleted["lastseen"])
            let nodes = try await api.send(.get, "/nodes", token: admin).json?.arrayValue
            guard case .object(let listed)? = nodes?.first else { Issue.record("no node listed"); return }
            #expect(listed["state"] == "deleted")
            let refused = try await api.send(.post, "/instances", token: admin, body: InstanceAPITests.createBody(network: network, extra: ["name": "later"]))
            #expect(refused.status.code == 507, "\(refused.text)")
        }
    }

    @Test("a node that stops checking in is missing: its instances show power state unknown, nothing of them changes, its jobs wait; back, all reads as it is")
    func missingNode() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let made = try await api.send(.post, "/instances", token: admin, body: ["name": "vm", "cpus": 1, "memory": 256, "disk": [["size": 8]]])
            let uuid = try #require(made["uuid"]?.stringValue.flatMap(UUID.init(uuidString:)), "\(made.text)")
            for state in [InstanceState.preflight, .creating, .created] { try await fixture.store.setInstanceState(uuid: uuid, to: state) }
            try await fixture.store.setPowerState(uuid: uuid, .on)
            let node = try #require(try await fixture.store.node(named: "hv1"))
            func checkIn(secondsAgo: Double) async throws {
                var seen = node
                seen.lastSeen = Date(timeIntervalSinceNow: -secondsAgo)
                try await fixture.store.saveNode(seen)
                // Past the view's one-second cache of which nodes are missing.
                try await Task.sleep(for: .milliseconds(1100))
            }

            try await checkIn(secondsAgo: 600)
            #expect(try await api.send(.get, "/nodes/hv1", token: admin)["state"] == "missing")
            let shown = try await api.send(.get, "/instances/vm", token: admin)
            #expect(shown["power_state"] == "unknown" && shown["state"] == "created", "\(shown.text)")
            let listed = try await api.send(.get, "/instances", token: admin).json?.arrayValue
            guard case .object(let first)? = listed?.first else { Issue.record("no instance listed"); return }
            #expect(first["power_state"] == "unknown")
            #expect(try await fixture.store.instance(uuid: uuid).powerState == .on, "the store keeps what the node last said")
            let queued = try await fixture.store.jobs(states: [.queued], limit: 100).filter { $0.target == .node("hv1") }
            #expect(!queued.isEmpty, "the create job waits for its node, neither failed nor moved")

            try await checkIn(secondsAgo: 0)
            #expect(try await api.send(.get, "/nodes/hv1", token: admin)["state"] == "created")
            #expect(try await api.send(.get, "/instances/vm", token: admin)["power_state"] == "on")
        }
    }

    @Test("a namespace that trusts another lets it see and boot its images until it stops; deleting a namespace deletes its artifacts")
    func trustsAndNamespaceDelete() async throws {
        var quotas = NamespaceQuotas()
        quotas.trusts = 2
        let fixture = try await APIFixture(quotas: quotas)
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let alpha = try await api.tenant("alpha", admin: admin)
            let beta = try await api.tenant("beta", admin: admin)
            let artifact = try #require(try await api.uploadArtifact("img", content: "an image of alpha's", token: alpha)["uuid"]?.stringValue)
            let instance: JSONValue = [
                "name": "from-alpha", "cpus": 1, "memory": 256, "network": [],
                "disk": [["size": 8, "base": "sf://upload/alpha/img"]],
            ]

            #expect(try await api.send(.get, "/artifacts/\(artifact)", token: beta).status == .notFound)
            #expect(try await api.send(.post, "/instances", token: beta, body: instance).status == .notFound)

            let trusted = try await api.send(.post, "/auth/namespaces/alpha/trust", token: alpha, body: ["external_namespace": "beta"])
            #expect(trusted.status == .ok && trusted["trust"] == .object(["full": ["system", "beta"]]), "\(trusted.text)")
            #expect(try await api.send(.get, "/artifacts/\(artifact)", token: beta).status == .ok)
            let booted = try await api.send(.post, "/instances", token: beta, body: instance)
            #expect(booted.status == .ok, "\(booted.text)")
            // Trust is one way, and only the namespace itself (or the admin) changes it.
            #expect(try await api.send(.post, "/auth/namespaces/alpha/trust", token: beta, body: ["external_namespace": "beta"]).status == .notFound)
            let none = try await api.send(.post, "/auth/namespaces/alpha/trust", token: alpha, body: [:])
            #expect(none.status == .badRequest && none.text.contains("no external namespace specified"))
            _ = try await api.send(.post, "/auth/namespaces/alpha/trust", token: alpha, body: ["external_namespace": "gamma"])
            let past = try await api.send(.post, "/auth/namespaces/alpha/trust", token: alpha, body: ["external_namespace": "delta"])
            #expect(past.status == .forbidden && past.text.contains("SFNODE_QUOTA_TRUSTS"), "\(past.text)")

            let removed = try await api.send(.delete, "/auth/namespaces/alpha/trust/beta", token: alpha)
            #expect(removed["trust"] == .object(["full": ["system", "gamma"]]), "\(removed.text)")
            #expect(try await api.send(.get, "/artifacts/\(artifact)", token: beta).status == .notFound)

            let deleted = try await api.send(.delete, "/auth/namespaces/alpha", token: admin)
            #expect(deleted.status == .ok, "\(deleted.text)")
            #expect(try await api.send(.get, "/artifacts/\(artifact)", token: admin)["state"] == .string("deleted"))
            let withInstances = try await api.send(.delete, "/auth/namespaces/beta", token: admin)
            #expect(withInstances.status == .badRequest && withInstances.text.contains("you cannot delete a namespace with instances"))
        }
    }

    @Test("power operations: 406 while the instance is made, 409 in error and for what a powered-off instance cannot do, 200 when done")
    func powerOperationsAnswerAsShakenFist() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let made = try await api.send(.post, "/instances", token: admin, body: ["name": "p", "cpus": 1, "memory": 256, "disk": [["size": 8]]])
            let uuid = try #require(made["uuid"]?.stringValue.flatMap(UUID.init(uuidString:)))
            let early = try await api.send(.post, "/instances/p/pause", token: admin)
            #expect(early.status == .notAcceptable && early.text.contains("is not ready (initial)"), "\(early.text)")
            for state in [InstanceState.preflight, .creating, .created] { try await fixture.store.setInstanceState(uuid: uuid, to: state) }
            try await fixture.store.setPowerState(uuid: uuid, .off)
            for operation in ["rebootsoft", "reboothard", "pause", "unpause"] {
                let refused = try await api.send(.post, "/instances/p/\(operation)", token: admin)
                #expect(refused.status == .conflict && refused.text.contains("you cannot") && refused.text.contains("a powered off instance"), "\(refused.text)")
            }
            // No agent runs here: the job stays queued, and the answer comes after the wait.
            let on = try await api.send(.post, "/instances/p/poweron", token: admin)
            #expect(on.status == .ok && on.json == .null, "\(on.text)")
            #expect(try await fixture.store.jobs(states: [.queued], limit: 10).contains { $0.kind == "instance.poweron" })
            try await fixture.store.setInstanceState(uuid: uuid, to: .createdError)
            let broken = try await api.send(.post, "/instances/p/poweron", token: admin)
            #expect(broken.status == .conflict && broken.text.contains("is not ready (created-error)"), "\(broken.text)")
        }
    }

    @Test("disk buses and NIC models as the seeds document them; the view's disks once the instance is made; one interface by MAC under its instance")
    func devicesAndDisks() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            func create(_ name: String, disks: JSONValue, model: String = "virtio") async throws -> APIResponse {
                let network = try await api.send(.post, "/networks", token: admin, body: ["netblock": "10.9.0.0/24", "name": .string("n-" + name)])
                let uuid = try #require(network["uuid"]?.stringValue)
                return try await api.send(.post, "/instances", token: admin, body: [
                    "name": .string(name), "cpus": 1, "memory": 256, "disk": disks,
                    "network": [["network_uuid": .string(uuid), "model": .string(model)]],
                ])
            }
            let nvme = try await create("nv", disks: [["size": 8, "bus": "nvme"]])
            #expect(nvme.status == .badRequest && nvme.text.contains("nvme is not supported"), "\(nvme.text)")
            let ide = try await create("ide", disks: [["size": 8, "bus": "ide"]])
            #expect(ide.status == .badRequest && ide.text.contains("IDE disks are no longer supported"))
            let made = try await create(
                "devices", disks: [["size": 8], ["size": 2, "bus": "scsi"], ["size": 1, "bus": "usb"], ["size": 3, "bus": "sata"]], model: "ne2k_pci")
            #expect(made.status == .ok, "\(made.text)")
            #expect(made["disks"] == .array([]), "no disks before the node lays them out")
            let uuid = try #require(made["uuid"]?.stringValue.flatMap(UUID.init(uuidString:)))
            try await fixture.store.setInstanceState(uuid: uuid, to: .preflight)
            try await fixture.store.setInstanceState(uuid: uuid, to: .creating)
            let shown = try await api.send(.get, "/instances/devices", token: admin)
            let devices = shown["disks"]?.arrayValue?.compactMap { value -> [String: JSONValue]? in if case .object(let members) = value { return members } else { return nil } } ?? []
            #expect(devices.map { $0["device"]?.stringValue } == ["vda", "sda", "sdb", "sdc", "vdb"], "\(shown.text)")
            #expect(devices.map { $0["bus"]?.stringValue } == ["virtio", "scsi", "usb", "sata", "virtio"])
            #expect(devices.map { $0["snapshot_ignores"] } == [false, false, false, false, true], "the config drive is left out of snapshots")
            #expect(devices.first?["size"] == 8)
            let first = shown["interfaces"]?.arrayValue?.first
            guard case .object(let interface)? = first else { Issue.record("no interface: \(shown.text)"); return }
            #expect(interface["model"] == "ne2k_pci")
            let mac = try #require(interface["macaddr"]?.stringValue)
            let nested = try await api.send(.get, "/instances/devices/interfaces/\(mac)", token: admin)
            #expect(nested.status == .ok && nested["uuid"] == interface["uuid"], "\(nested.text)")
            #expect(try await api.send(.get, "/instances/devices/interfaces/00:00:00:00:00:01", token: admin).status == .notFound)
        }
    }

    @Test("an artifact version is deleted by its index; the last one deletes the artifact; bad and unknown indexes are refused")
    func artifactVersionDelete() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            var artifact = ""
            for content in ["first image", "second image", "third image"] {
                let made = try await api.uploadArtifact("versioned", content: content, token: admin)
                artifact = try #require(made["uuid"]?.stringValue, "\(made.text)")
            }
            func indexes() async throws -> [Double] {
                let versions = try await api.send(.get, "/artifacts/\(artifact)/versions", token: admin)
                return versions.json?.arrayValue?.compactMap { value -> Double? in
                    if case .object(let members) = value, case .number(let index)? = members["index"] { return index } else { return nil }
                } ?? []
            }
            #expect(try await indexes() == [1, 2, 3])
            let second = try await api.send(.delete, "/artifacts/\(artifact)/versions/2", token: admin)
            #expect(second.status == .ok && second["state"] == "created", "\(second.text)")
            #expect(try await indexes() == [1, 3])
            let bad = try await api.send(.delete, "/artifacts/\(artifact)/versions/two", token: admin)
            #expect(bad.status == .badRequest && bad.text.contains("version index is not an integer"))
            let huge = try await api.send(.delete, "/artifacts/\(artifact)/versions/99999999999999999999999", token: admin)
            #expect(huge.status == .badRequest && huge.text.contains("version index is not an integer"), "\(huge.text)")
            #expect(try await api.send(.delete, "/artifacts/\(artifact)/versions/-1", token: admin).status == .notFound)
            let unknown = try await api.send(.delete, "/artifacts/\(artifact)/versions/7", token: admin)
            #expect(unknown.status == .notFound && unknown.text.contains("artifact index not found"))
            _ = try await api.send(.delete, "/artifacts/\(artifact)/versions/1", token: admin)
            let last = try await api.send(.delete, "/artifacts/\(artifact)/versions/3", token: admin)
            #expect(last.status == .ok && last["state"] == "deleted", "\(last.text)")
            #expect(try await api.send(.delete, "/artifacts/\(artifact)/versions/3", token: admin).status == .conflict)
        }
    }

    @Test("UEFI and secure boot are taken and kept; secure boot or an NVRAM template without UEFI are refused by name")
    func uefiRequests() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            func create(_ name: String, _ extra: [String: JSONValue]) async throws -> APIResponse {
                var body: [String: JSONValue] = ["name": .string(name), "cpus": 1, "memory": 256, "disk": [["size": 8]]]
                for (key, value) in extra { body[key] = value }
                return try await api.send(.post, "/instances", token: admin, body: .object(body))
            }
            let uefi = try await create("u", ["uefi": true, "secure_boot": true])
            #expect(uefi.status == .ok && uefi["uefi"] == true && uefi["secure_boot"] == true, "\(uefi.text)")
            let bare = try await create("b", ["secure_boot": true])
            #expect(bare.status == .badRequest && bare.text.contains("secure boot requires UEFI"))
            let template = try await create("t", ["nvram_template": "label:vars"])
            #expect(template.status == .badRequest && template.text.contains("nvram_template requires UEFI"), "\(template.text)")
        }
    }

    @Test("an NVRAM template is a blob the caller sees, named as Shaken Fist does or as a disk base, kept as the blob's UUID, and bounded")
    func nvramTemplates() async throws {
        let fixture = try await APIFixture()
        defer { fixture.cleanup() }
        try await fixture.run { api in
            let admin = try await api.token()
            let (a, b) = (try await api.tenant("a", admin: admin), try await api.tenant("b", admin: admin))
            func create(_ template: String, token: String) async throws -> APIResponse {
                let body: JSONValue = ["name": "t", "cpus": 1, "memory": 256, "disk": [["size": 8]], "uefi": true, "nvram_template": .string(template)]
                return try await api.send(.post, "/instances", token: token, body: body)
            }
            let vars = try await api.uploadArtifact("vars", content: String(repeating: "v", count: 4096), token: a)
            let blob = try #require(vars["blob_uuid"]?.stringValue, "\(vars.text)")
            for named in [blob, "sf://blob/\(blob)", "sf://upload/a/vars"] {
                let made = try await create(named, token: a)
                #expect(made.status == .ok && made["nvram_template"]?.stringValue == blob, "\(named): \(made.text)")
            }
            // Another tenant's blob is not there for b, by any name; a label that does not exist neither.
            for named in [blob, "sf://upload/a/vars", "label:missing"] {
                let refused = try await create(named, token: b)
                #expect(refused.status == .notFound, "\(named): \(refused.text)")
            }
            #expect(try await create("https://example.com/vars.fd", token: a).status == .badRequest)
            // Past 16 MiB it is no variable store: refused before any node copies it.
            let upload = try #require(try await api.send(.post, "/upload", token: a)["uuid"]?.stringValue)
            let chunk = String(repeating: "x", count: 1 << 20)
            for _ in 0..<17 { _ = try await api.send(.post, "/upload/\(upload)", token: a, raw: ByteBuffer(string: chunk)) }
            let big = try await api.send(.post, "/artifacts/upload/big", token: a, body: ["upload_uuid": .string(upload)])
            let refused = try await create(try #require(big["blob_uuid"]?.stringValue, "\(big.text)"), token: a)
            #expect(refused.status == .badRequest && refused.text.contains("at most 16777216"), "\(refused.text)")
        }
    }

    @Test("a disk based on sf://blob/<uuid> shows that blob in the view's disks; other bases show none")
    func diskBlobs() throws {
        let blob = UUID()
        let instance = Instance(
            name: "b", namespace: "system", cpus: 1, memory: 256,
            diskSpec: [DiskSpec(base: "sf://blob/\(blob.uuidString)", size: 8), DiskSpec(base: "label:golden", size: 8), DiskSpec(size: 2)])
        #expect(InstanceDisk.layout(of: instance).map(\.blobUUID) == [blob, nil, nil, nil])
    }
}
