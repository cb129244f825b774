import Foundation
import FoundationXML
import SFLibvirt
import SFSystem
import SFTestSupport
import Testing

extension LibvirtIntegration {
    /// Every operation on real domains under qemu:///system (type qemu, TCG), cross-checked with virsh,
    /// and the lifecycle events each one raises. One guest boots in the whole suite.
    @Suite(.serialized, .enabled(if: libvirtAvailable, "needs root and a running libvirtd"))
    struct DomainLifecycleTests {
        let connection: LibvirtConnection

        init() throws { connection = try LibvirtConnection(logger: testLogger) }

        private func kinds(_ events: [DomainLifecycleEvent]) -> [DomainLifecycleEvent.Kind] { events.map(\.kind) }

        @Test(.enabled(if: FileManager.default.fileExists(atPath: TestGuest.baseImage), "needs scripts/build-test-image"))
        func everyOperationOnABootingGuest() async throws {
            let name = TestNames.unique("life")
            let files = try GuestFiles(name: name)
            defer { files.remove() }
            let log = EventLog(try await connection.lifecycleEvents())
            // The UUID is chosen here so that the define's events can be collected before libvirt
            // returns the identity.
            let uuid = UUID()
            let spec = DomainSpec(
                name: name, uuid: uuid, type: .qemu, memoryMiB: 128, vcpus: 1, disks: [.init(path: files.overlay)],
                serialLogPath: files.serialLog, video: .init(model: .none))

            var defined: DomainIdentity?
            let definedEvents = try await log.collect(for: uuid, count: 1) {
                defined = try await connection.define(spec)
            }
            let identity = try #require(defined)
            let byUUID = DomainReference.uuid(identity.uuid)
            let byName = DomainReference.name(name)
            do {
                #expect(identity == DomainIdentity(name: name, uuid: uuid))
                #expect(kinds(definedEvents) == [.defined])
                #expect(definedEvents.first?.detail == 0, "VIR_DOMAIN_EVENT_DEFINED_ADDED")
                #expect(try await connection.state(of: byName) == .off)
                #expect(try virshState(name) == "shut off")

                // libvirt's QEMU driver reports the vCPUs starting, then the domain.
                var events = try await log.collect(for: identity.uuid, count: 2) { try await connection.start(byName) }
                #expect(kinds(events) == [.resumed, .started])
                #expect(events.last?.detail == 0, "VIR_DOMAIN_EVENT_STARTED_BOOTED")
                #expect(try await connection.state(of: byUUID) == .on)
                #expect(try virshState(name) == "running")
                try await files.waitForFirstBoot()

                // The bulk read, against `virsh domstats` of the same domain.
                let stats = try #require(try await connection.allDomainStats().first { $0.identity == identity })
                let virsh = try virshDomainStats(name)
                #expect(stats.state == 1, "VIR_DOMAIN_RUNNING")
                #expect(virsh["state.state"] == "1")
                #expect(try #require(stats.cpuTimeNanoseconds) > 0)
                #expect(stats.vcpus == 1 && stats.vcpuTimeNanoseconds.keys.sorted() == [0])
                #expect(stats.maximumMemoryKiB == 128 * 1024 && virsh["balloon.maximum"] == "\(128 * 1024)")
                let disk = try #require(stats.disks.first)
                #expect(disk.device == virsh["block.0.name"] && disk.path == files.overlay)
                // The guest booted from it: its reads are counted, and only grow.
                #expect(try #require(disk.readBytes) > 0)
                #expect(try #require(disk.readBytes) <= UInt64(virsh["block.0.rd.bytes"] ?? "") ?? 0)

                // Starting a running domain is not an error, and changes nothing.
                events = try await log.collect(for: identity.uuid, count: 0) { try await connection.start(byUUID) }
                #expect(events.isEmpty)

                events = try await log.collect(for: identity.uuid, count: 1) { try await connection.suspend(byUUID) }
                #expect(kinds(events) == [.suspended])
                #expect(try await connection.state(of: byUUID) == .paused)
                #expect(try virshState(name) == "paused")
                let listed = try await connection.domains().first { $0.identity == identity }
                #expect(listed?.powerState == .paused)

                events = try await log.collect(for: identity.uuid, count: 1) { try await connection.resume(byName) }
                #expect(kinds(events) == [.resumed])
                #expect(try await connection.state(of: byUUID) == .on)
                #expect(try virshState(name) == "running")

                // Reset raises no lifecycle event (the domain never stops); the guest boots again.
                events = try await log.collect(for: identity.uuid, count: 0) { try await connection.reset(byUUID) }
                #expect(events.isEmpty)
                #expect(await files.waitForBoots(2), "the guest boots again after reset")
                #expect(try await connection.state(of: byUUID) == .on)

                // ACPI reboot: the guest powers off on the button and libvirt restarts it in place, which
                // (like reset) raises no lifecycle event: the domain never stops.
                events = try await log.collect(for: identity.uuid, count: 0) {
                    try await connection.reboot(byUUID)
                    #expect(await files.waitForBoots(3), "the guest boots again after the ACPI reboot")
                }
                #expect(events.isEmpty)
                #expect(try await connection.state(of: byUUID) == .on)
                #expect(try virshState(name) == "running")

                // QEMU reports the kill as a host-initiated shutdown, then libvirt the stop.
                events = try await log.collect(for: identity.uuid, count: 2) { try await connection.destroy(byName) }
                #expect(kinds(events) == [.shutdown, .stopped])
                #expect(events.first?.detail == 2, "VIR_DOMAIN_EVENT_SHUTDOWN_HOST")
                #expect(events.last?.detail == 1, "VIR_DOMAIN_EVENT_STOPPED_DESTROYED")
                #expect(try await connection.state(of: byUUID) == .off)
                #expect(try virshState(name) == "shut off")

                // Destroying a domain that is not running is not an error, and raises nothing.
                events = try await log.collect(for: identity.uuid, count: 0) { try await connection.destroy(byName) }
                #expect(events.isEmpty)

                // Boot once more for the guest-driven ACPI shutdown.
                events = try await log.collect(for: identity.uuid, count: 2) { try await connection.start(byUUID) }
                #expect(kinds(events) == [.resumed, .started])
                #expect(await files.waitForBoots(4))
                events = try await log.collect(for: identity.uuid, count: 2, timeout: .seconds(60)) {
                    try await connection.shutdown(byName)
                }
                #expect(kinds(events) == [.shutdown, .stopped])
                #expect(events.last?.detail == 0, "VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN")
                #expect(try await connection.state(of: byUUID) == .off)
                #expect(try virshState(name) == "shut off")
                // Shutting down a domain that is off is not an error.
                try await connection.shutdown(byName)

                events = try await log.collect(for: identity.uuid, count: 1) { try await connection.undefine(byName) }
                #expect(kinds(events) == [.undefined])
                #expect(try await connection.lookup(name: name) == nil)
                #expect(try await connection.lookup(uuid: identity.uuid) == nil)
                #expect(try await connection.state(of: byUUID) == nil)
                #expect(try !virshNames().contains(name))

                // Undefining what is gone is not an error, and raises nothing.
                events = try await log.collect(for: identity.uuid, count: 0) { try await connection.undefine(byName) }
                #expect(events.isEmpty)
                try await connection.destroy(byUUID)
            } catch {
                try? await connection.destroy(byUUID)
                try? await connection.undefine(byUUID)
                throw error
            }
            try? await connection.destroy(byUUID)
            try? await connection.undefine(byUUID)
        }

        @Test func defineLookupAndListIncludingInactive() async throws {
            let name = TestNames.unique("list")
            let uuid = UUID()
            let instance = UUID()
            let spec = DomainSpec(name: name, uuid: uuid, type: .qemu, memoryMiB: 64, vcpus: 1, instanceUUID: instance)
            let log = EventLog(try await connection.lifecycleEvents())
            try await withDomain(connection, spec) { identity in
                #expect(identity == DomainIdentity(name: name, uuid: uuid))
                #expect(try await connection.lookup(name: name) == identity)
                #expect(try await connection.lookup(uuid: uuid) == identity)
                let listed = try await connection.domains().first { $0.identity == identity }
                #expect(listed?.powerState == .off, "inactive domains are listed, as off")
                // An inactive domain's bulk statistics: its state, and no devices' counters.
                let stats = try #require(try await connection.allDomainStats().first { $0.identity == identity })
                #expect(stats.state == 5, "VIR_DOMAIN_SHUTOFF")
                #expect(stats.interfaces.isEmpty && stats.vcpuTimeNanoseconds.isEmpty, "\(stats)")
                #expect(try virshNames().contains(name))
                #expect(try await connection.instanceUUID(of: .name(name)) == instance)
                let xml = try #require(try await connection.xmlDescription(of: .uuid(uuid)))
                #expect(xml.contains(DomainSpec.metadataNamespace))

                // Redefining the same domain is an update, not an error.
                #expect(try await connection.define(spec) == identity)
                #expect(await eventually(timeout: .seconds(10)) { log.events(for: uuid).map(\.kind) == [.defined, .defined] })
                #expect(log.events(for: uuid).map(\.detail) == [0, 1], "added, then updated")
            }
            #expect(try await connection.lookup(name: name) == nil)
            #expect(try await connection.domains().contains { $0.identity.uuid == uuid } == false)
            #expect(try await connection.instanceUUID(of: .uuid(uuid)) == nil)
            #expect(try await connection.xmlDescription(of: .uuid(uuid)) == nil)
            #expect(try !virshNames().contains(name))
        }

        @Test func domainsWithoutSfnodeMetadataHaveNoInstance() async throws {
            let spec = DomainSpec(name: TestNames.unique("nometa"), type: .qemu, memoryMiB: 64, vcpus: 1)
            let instance = try await withDomain(connection, spec) { identity in
                try await connection.instanceUUID(of: .uuid(identity.uuid))
            }
            #expect(instance == nil)
        }

        @Test func absentDomainsAreNilForReadsAndNoErrorForRemoval() async throws {
            let name = TestNames.unique("absent")
            #expect(try await connection.lookup(name: name) == nil)
            #expect(try await connection.lookup(uuid: UUID()) == nil)
            #expect(try await connection.state(of: .name(name)) == nil)
            try await connection.destroy(.name(name))
            try await connection.destroy(.uuid(UUID()))
            try await connection.undefine(.name(name))
            try await connection.undefine(.uuid(UUID()))
        }

        @Test func errorsCarryLibvirtsMessageAndTheDomain() async throws {
            let name = TestNames.unique("err")
            let missing = await #expect(throws: LibvirtError.self) { try await connection.start(.name(name)) }
            #expect(missing?.isNoDomain == true)
            #expect(missing?.operation == "start")
            #expect(missing?.object == "domain '\(name)'")
            #expect(missing?.message.contains(name) == true, "libvirt's own message names the domain")

            let spec = DomainSpec(name: name, type: .qemu, memoryMiB: 64, vcpus: 1)
            try await withDomain(connection, spec) { _ in
                let notRunning = await #expect(throws: LibvirtError.self) { try await connection.suspend(.name(name)) }
                #expect(notRunning?.code == LibvirtError.operationInvalidCode)
                #expect(notRunning?.message.contains("not running") == true)
                #expect(notRunning?.description.hasPrefix("suspend domain '\(name)': ") == true)
            }

            let badXML = await #expect(throws: LibvirtError.self) { try await connection.define(xml: "<domain type='qemu'><name>") }
            #expect(badXML?.code == LibvirtError.xmlDetailCode, "libxml2's parse error: \(badXML?.message ?? "")")
            #expect(badXML?.operation == "define")
        }

        @Test func hostileNameRoundTripsAsData() async throws {
            // Everything libvirt allows in a name that means something in XML ('/' it refuses; see below).
            let name = TestNames.unique("inj") + #"a'><devices><x y="&amp;" "#
            let spec = DomainSpec(name: name, type: .qemu, memoryMiB: 64, vcpus: 1)
            try await withDomain(connection, spec) { identity in
                #expect(identity.name == name)
                #expect(try await connection.lookup(name: name) == identity)
                let xml = try #require(try await connection.xmlDescription(of: .name(name)))
                let root = try #require(try XMLDocument(xmlString: xml, options: []).rootElement())
                #expect(root.elements(forName: "name").first?.stringValue == name)
                #expect(root.elements(forName: "devices").count == 1)
                #expect(root.elements(forName: "x").isEmpty)
                let devices = root.elements(forName: "devices").first?.children?.compactMap { ($0 as? XMLElement)?.name } ?? []
                #expect(!devices.contains("x"), "no injected element among \(devices)")
                #expect(try virshNames().contains(name))
            }
            #expect(try await connection.lookup(name: name) == nil)
        }

        @Test func slashNameReachesLibvirtAsDataAndIsRefused() async throws {
            // The brief's own injection string. DomainSpec refuses it up front; written raw through the
            // escaping writer it reaches libvirt intact, which refuses '/' in names.
            let name = TestNames.unique("inj") + "a'/><devices>"
            var writer = XMLWriter()
            writer.element("domain", ["type": "qemu"]) { w in
                w.element("name", text: name)
                w.element("memory", ["unit": "MiB"], text: "64")
                w.element("vcpu", text: "1")
                w.element("os") { w in w.element("type", ["arch": "x86_64", "machine": "pc"], text: "hvm") }
            }
            let refused = await #expect(throws: LibvirtError.self) { try await connection.define(xml: writer.text) }
            #expect(refused?.message.contains(name) == true, "libvirt saw the whole name as one value: \(refused?.message ?? "")")
            #expect(try await connection.lookup(name: name) == nil)
            #expect(try !virshNames().contains { $0.hasPrefix(String(name.prefix(12))) })
        }
    }
}
