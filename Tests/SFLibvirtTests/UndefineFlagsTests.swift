import CLibvirt
import Foundation
import SFLibvirt
import SFTestSupport
import Testing

extension LibvirtIntegration {
    /// Undefine removes what would otherwise block it: here, snapshot metadata. libvirt refuses a plain
    /// undefine of an inactive domain that has snapshots; sfnode's undefine passes the flags that let it
    /// through. The snapshot is made with the C API directly, as nothing in sfnode makes snapshots.
    @Suite(.serialized, .enabled(if: libvirtAvailable && FileManager.default.fileExists(atPath: TestGuest.baseImage), "needs root, libvirtd and the test image"))
    struct UndefineFlagsTests {
        @Test func undefineRemovesSnapshotMetadata() async throws {
            let name = TestNames.unique("snap")
            let files = try GuestFiles(name: name)
            defer { files.remove() }
            let connection = try LibvirtConnection(logger: testLogger)
            let spec = DomainSpec(name: name, type: .qemu, memoryMiB: 64, vcpus: 1, disks: [.init(path: files.overlay)])
            try await withDomain(connection, spec) { identity in
                let raw = try #require(virConnectOpen("qemu:///system"))
                defer { virConnectClose(raw) }
                let domain = try #require(virDomainLookupByName(raw, name))
                defer { virDomainFree(domain) }
                let snapshot = virDomainSnapshotCreateXML(domain, "<domainsnapshot><name>sftsnap</name></domainsnapshot>", 0)
                try #require(snapshot != nil, "snapshot: \(String(cString: virGetLastErrorMessage()))")
                virDomainSnapshotFree(snapshot)
                #expect(virDomainSnapshotNum(domain, 0) == 1)
                // Without the flags libvirt refuses, which is what makes this test able to fail.
                #expect(virDomainUndefine(domain) < 0)
                #expect(try await connection.lookup(uuid: identity.uuid) != nil)

                try await connection.undefine(.uuid(identity.uuid))
                #expect(try await connection.lookup(uuid: identity.uuid) == nil)
                #expect(try !virshNames().contains(name))
            }
        }
    }
}
