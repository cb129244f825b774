import Foundation
import SFAgent
import SFBlobs
import SFControl
import SFStore
import SFSystem
import SFTestSupport
import Testing

/// A UEFI instance whose firmware variables start from a blob (Shaken Fist's `nvram_template`),
/// through the real agent and libvirtd: Debian's OVMF variables with Microsoft's keys enrolled
/// become the store of a guest that does not use secure boot, which its own template lacks.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root, libvirtd, OVMF and the test guest image"))
struct NVRAMTemplateTests {
    static let enrolledVariables = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    static let enrolledKey = Data("Microsoft Corporation KEK CA 2011".utf8)

    @Test func aUEFIGuestStartsFromItsTemplateBlobItsSnapshotCarriesTheNVRAMAndATemplateOfAnotherSizeIsRefused() async throws {
        try #require(FileManager.default.fileExists(atPath: TestGuest.baseImage), "no \(TestGuest.baseImage): run scripts/build-test-image")
        let enrolled = try Data(contentsOf: URL(fileURLWithPath: Self.enrolledVariables))
        #expect(enrolled.range(of: Self.enrolledKey) != nil)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "/usr/share/OVMF/OVMF_VARS_4M.fd")).range(of: Self.enrolledKey) == nil)
        try await withImageLab { lab in
            let resolver = lab.resolver()
            let (agent, runner) = try await lab.agent(images: resolver)
            try await agent.checkIn()
            func blob(_ bytes: Data) async throws -> Blob {
                let ingest = try resolver.blobs.beginIngest()
                try ingest.append(contentsOf: bytes)
                return try await ingest.finish()
            }
            func uefiInstance(_ name: String, template: Blob) async throws -> Instance {
                let instance = Instance(
                    name: name, namespace: "system", cpus: 1, memory: 256, diskSpec: [DiskSpec(base: TestGuest.baseImage)],
                    config: InstanceConfig(uefi: true, nvramTemplate: template.uuid.lowercasedString))
                try await lab.store.createInstance(instance)
                return instance
            }

            let template = try await blob(enrolled)
            let guest = try await uefiInstance("enrolled", template: template)
            let (job, made) = try await lab.runCreate(guest, with: runner)
            #expect(job.state == .succeeded && made.state == .created, "\(job.lastError ?? "")")
            #expect(try await agent.realInstances.libvirt.state(of: .uuid(guest.uuid)) == .on)
            let variables = InstanceFiles(storagePath: lab.storage).firmwareVariables(of: guest.uuid)
            #expect(try Data(contentsOf: URL(fileURLWithPath: variables)).range(of: Self.enrolledKey) != nil)
            // Held by the instance, so the blob is not deleted under it.
            let holders = try await lab.store.references(to: template.uuid)
            #expect(holders.contains { UUID(uuidString: $0.holderUUID) == guest.uuid && $0.relationship == .nvramTemplate }, "\(holders)")

            // Snapshot with every disk: the firmware variables come too (Shaken Fist's `nvram`
            // pseudo-device), and that blob is the template of the next guest.
            let control = Control(store: lab.store, settings: ControlSettings(), logger: lab.logger)
            let queued = try await control.snapshotInstance(guest.uuid.lowercasedString, request: SnapshotRequest(all: true))
            #expect(queued.plan.targets.map(\.device) == ["vda", "nvram"])
            while try await runner.runOne() {}
            #expect(try await lab.store.job(id: try #require(queued.jobID)).state == .succeeded)
            let nvram = try #require(queued.plan.targets.first { $0.isNVRAM })
            let copied = try Data(contentsOf: URL(fileURLWithPath: resolver.blobs.path(of: nvram.blobUUID)))
            #expect(copied.count == enrolled.count && copied.range(of: Self.enrolledKey) != nil)
            let clone = try await uefiInstance("clone", template: try await lab.store.blob(uuid: nvram.blobUUID))
            let (cloned, _) = try await lab.runCreate(clone, with: runner)
            #expect(cloned.state == .succeeded, "\(cloned.lastError ?? "")")

            // A store of another firmware build would not boot: the job says so and makes no domain.
            let odd = try await uefiInstance("odd", template: try await blob(Data(repeating: 0xff, count: 131_072)))
            let (failed, _) = try await lab.runCreate(odd, with: runner)
            #expect(failed.state == .failed && failed.lastError?.contains("131072 bytes") == true, "\(failed.lastError ?? "")")
            #expect(try await agent.realInstances.libvirt.state(of: .uuid(odd.uuid)) == nil)
        }
    }
}
