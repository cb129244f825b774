import Foundation
import SFLibvirt
import SFSystem
import SFTestSupport
import Testing

extension LibvirtIntegration {
    /// The disk buses and NIC models the seeds' instance documentation names, as this node's libvirt
    /// and QEMU take them (issue 14).
    @Suite(.serialized, .enabled(if: libvirtAvailable, "needs root and a running libvirtd"))
    struct DeviceModelTests {
        @Test("a domain with a disk on every bus starts; SCSI disks get a virtio-scsi controller; the names are the instance view's")
        func everyDiskBusStarts() async throws {
            let connection = try LibvirtConnection(logger: testLogger)
            let name = TestNames.unique("bus")
            let directory = TestGuest.runDirectory + "/" + name
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let buses: [DiskBus] = [.virtio, .sata, .scsi, .usb, .scsi]
            var disks: [DomainSpec.Disk] = []
            for (index, bus) in buses.enumerated() {
                let path = "\(directory)/disk\(index).qcow2"
                let made = try ChildProcess.run(["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", path, "64M"])
                #expect(made.status == 0, "\(made.stderr)")
                disks.append(.init(path: path, bus: bus))
            }
            let spec = DomainSpec(
                name: name, uuid: UUID(), type: .qemu, memoryMiB: 64, vcpus: 1, disks: disks, serialLogPath: directory + "/serial",
                video: .init(model: .none))
            let xml = try spec.xml()
            #expect(xml.contains("<controller type=\"scsi\" index=\"0\" model=\"virtio-scsi\"") || xml.contains("<controller type='scsi' index='0' model='virtio-scsi'"), "\(xml)")
            #expect(DiskBus.deviceNames(buses) == ["vda", "sda", "sdb", "sdc", "sdd"])
            let state = try await withDomain(connection, spec) { identity in
                try await connection.start(.uuid(identity.uuid))
                return try await connection.state(of: .uuid(identity.uuid))
            }
            #expect(state == .on)
        }

        @Test("every NIC model is written as the model libvirt and QEMU know")
        func everyNICModelIsDefined() async throws {
            let connection = try LibvirtConnection(logger: testLogger)
            let name = TestNames.unique("nic")
            let interfaces = NICModel.allCases.enumerated().map { index, model in
                DomainSpec.NetworkInterface(tapDevice: "\(name.prefix(8))t\(index)", mac: MACAddress(0x52, 0x54, 0, 0, 0x10, UInt8(index)), model: model)
            }
            let spec = DomainSpec(name: name, uuid: UUID(), type: .qemu, memoryMiB: 64, vcpus: 1, interfaces: interfaces, video: .init(model: .none))
            let xml = try spec.xml()
            for model in ["virtio", "e1000", "rtl8139", "ne2k_pci", "pcnet", "i82551", "i82557b", "i82559er"] {
                #expect(xml.contains("\"\(model)\"") || xml.contains("'\(model)'"), "\(model) missing from \(xml)")
            }
            let state = try await withDomain(connection, spec) { identity in try await connection.state(of: .uuid(identity.uuid)) }
            #expect(state == .off)
        }
    
        @Test("the serial console listens as telnet and the display as SPICE or VNC on the address given, the log still written")
        func consolesListenOnTheirPorts() async throws {
            let connection = try LibvirtConnection(logger: testLogger)
            let loopback = try #require(IPv4Address("127.0.0.1"))
            for kind in DomainSpec.Consoles.Display.allCases {
                let name = TestNames.unique("con")
                let directory = TestGuest.runDirectory + "/" + name
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let ports = (0..<64).map { _ in Int.random(in: 30000...50000) }.filter { TCPPorts.isFree($0, on: loopback) }
                let console = try #require(ports.first)
                let display = try #require(ports.dropFirst().first { $0 != console })
                var spec = DomainSpec(
                    name: name, uuid: UUID(), type: .qemu, memoryMiB: 64, vcpus: 1, serialLogPath: directory + "/console.log",
                    video: .init(model: .cirrus))
                spec.consoles = .init(address: "127.0.0.1", consolePort: console, display: (kind, display))
                let listening = try await withDomain(connection, spec) { identity in
                    try await connection.start(.uuid(identity.uuid))
                    return (TCPPorts.isFree(console, on: loopback), TCPPorts.isFree(display, on: loopback))
                }
                #expect(listening == (false, false), "\(kind): the console and display ports should be taken while the domain runs")
                #expect(FileManager.default.fileExists(atPath: directory + "/console.log"), "virtlogd keeps writing the log")
            }
        }

        @Test(
            "a guest boots with UEFI from Debian's OVMF, its NVRAM made from the template; secure boot runs OVMF's signed build on q35",
            .enabled(if: FileManager.default.fileExists(atPath: TestGuest.baseImage), "needs scripts/build-test-image"))
        func uefiBootsAndSecureBootStarts() async throws {
            let connection = try LibvirtConnection(logger: testLogger)
            let name = TestNames.unique("uefi")
            let files = try GuestFiles(name: name)
            let variables = TestGuest.runDirectory + "/\(name).nvram"
            defer {
                files.remove()
                try? FileManager.default.removeItem(atPath: variables)
            }
            var spec = DomainSpec(
                name: name, uuid: UUID(), type: .qemu, memoryMiB: 256, vcpus: 1, disks: [.init(path: files.overlay)],
                serialLogPath: files.serialLog, video: .init(model: .none))
            spec.firmware = .ovmf(secureBoot: false, variables: variables)
            try await withDomain(connection, spec) { identity in
                try await connection.start(.uuid(identity.uuid))
                try await files.waitForFirstBoot()
            }
            #expect(FileManager.default.fileExists(atPath: variables) == false, "undefining removes the guest's NVRAM")

            let secure = TestNames.unique("sb")
            var secureSpec = DomainSpec(name: secure, uuid: UUID(), type: .qemu, memoryMiB: 256, vcpus: 1, video: .init(model: .none))
            secureSpec.firmware = .ovmf(secureBoot: true, variables: TestGuest.runDirectory + "/\(secure).nvram")
            let xml = try secureSpec.xml()
            #expect(xml.contains("q35") && xml.contains("smm") && xml.contains("OVMF_CODE_4M.ms.fd"), "\(xml)")
            let state = try await withDomain(connection, secureSpec) { identity in
                try await connection.start(.uuid(identity.uuid))
                return try await connection.state(of: .uuid(identity.uuid))
            }
            #expect(state == .on)
        }
    }
}
