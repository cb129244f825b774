import Foundation
import FoundationXML
import SFSystem
import Testing

@testable import SFLibvirt

private func parse(_ xml: String) throws -> XMLElement {
    let document = try XMLDocument(xmlString: xml, options: [])
    return try #require(document.rootElement())
}

private func mac(_ text: String) throws -> MACAddress {
    try #require(MACAddress(text))
}

private func fullSpec(name: String = "sft-web") throws -> DomainSpec {
    DomainSpec(
        name: name, uuid: UUID(uuidString: "6f1c2c4e-43a6-4a36-9b3e-54a0a3b6a001"), type: .qemu, memoryMiB: 128, vcpus: 2,
        disks: [
            .init(path: "/var/lib/sfnode/a.qcow2"),
            .init(path: "/var/lib/sfnode/b.raw", format: .raw, bus: .virtio, readonly: true),
            .init(path: "/var/lib/sfnode/c.iso", format: .raw, device: .cdrom, bus: .sata),
        ],
        interfaces: [
            .init(tapDevice: "sfttap0", mac: try mac("52:54:00:12:34:56")),
            .init(tapDevice: "sfttap1", mac: try mac("52:54:00:12:34:57"), model: .e1000),
        ],
        serialLogPath: "/var/lib/sfnode/console.log", video: .init(model: .cirrus, memoryKiB: 8192),
        instanceUUID: UUID(uuidString: "11111111-2222-3333-4444-555555555555"))
}

@Suite struct XMLWriterTests {
    @Test func escapesAllFiveSpecialCharacters() {
        #expect(XMLWriter.escape(#"a&b<c>d"e'f"#) == "a&amp;b&lt;c&gt;d&quot;e&apos;f")
        #expect(XMLWriter.escape("plain") == "plain")
        #expect(XMLWriter.escape("&amp;") == "&amp;amp;")
    }

    @Test func attributeAndTextValuesStayData() throws {
        let hostile = #"a'/><devices><disk type="file"/></devices><x y='&"#
        var writer = XMLWriter()
        writer.element("root", ["value": hostile]) { w in
            w.element("name", text: hostile)
        }
        let root = try parse(writer.text)
        #expect(root.attribute(forName: "value")?.stringValue == hostile)
        let children = root.children?.compactMap { $0 as? XMLElement } ?? []
        #expect(children.map(\.name) == ["name"])
        #expect(children.first?.stringValue == hostile)
        #expect(root.elements(forName: "devices").isEmpty)
    }

    @Test func controlCharactersAreNotRepresentable() {
        #expect(XMLWriter.isRepresentable("tab\tnewline\ncr\r"))
        #expect(!XMLWriter.isRepresentable("nul\u{0}"))
        #expect(!XMLWriter.isRepresentable("bell\u{7}"))
    }
}

@Suite struct DomainSpecTests {
    @Test func writesTheExpectedDomain() throws {
        let root = try parse(try fullSpec().xml())
        #expect(root.name == "domain")
        #expect(root.attribute(forName: "type")?.stringValue == "qemu")
        #expect(root.elements(forName: "name").first?.stringValue == "sft-web")
        #expect(root.elements(forName: "uuid").first?.stringValue == "6f1c2c4e-43a6-4a36-9b3e-54a0a3b6a001")
        let memory = try #require(root.elements(forName: "memory").first)
        #expect(memory.stringValue == "128")
        #expect(memory.attribute(forName: "unit")?.stringValue == "MiB")
        #expect(root.elements(forName: "vcpu").first?.stringValue == "2")
        #expect(root.elements(forName: "cpu").isEmpty, "no host CPU mode under TCG")
        let osType = try #require(root.elements(forName: "os").first?.elements(forName: "type").first)
        #expect(osType.attribute(forName: "machine")?.stringValue == "pc")
        #expect(root.elements(forName: "os").first?.elements(forName: "boot").first?.attribute(forName: "dev")?.stringValue == "hd")
        #expect(root.elements(forName: "on_poweroff").first?.stringValue == "destroy")
        #expect(root.elements(forName: "on_reboot").first?.stringValue == "restart")
        #expect(root.elements(forName: "on_crash").first?.stringValue == "destroy")
        #expect(root.elements(forName: "features").first?.elements(forName: "acpi").count == 1)

        let devices = try #require(root.elements(forName: "devices").first)
        let disks = devices.elements(forName: "disk")
        #expect(disks.map { $0.elements(forName: "target").first?.attribute(forName: "dev")?.stringValue } == ["vda", "vdb", "sda"])
        #expect(disks.map { $0.attribute(forName: "device")?.stringValue } == ["disk", "disk", "cdrom"])
        #expect(disks.map { $0.elements(forName: "driver").first?.attribute(forName: "type")?.stringValue } == ["qcow2", "raw", "raw"])
        #expect(disks.map { $0.elements(forName: "readonly").count } == [0, 1, 1])

        let nics = devices.elements(forName: "interface")
        #expect(nics.map { $0.attribute(forName: "type")?.stringValue } == ["ethernet", "ethernet"])
        #expect(nics.map { $0.elements(forName: "mac").first?.attribute(forName: "address")?.stringValue } == ["52:54:00:12:34:56", "52:54:00:12:34:57"])
        #expect(nics.map { $0.elements(forName: "target").first?.attribute(forName: "dev")?.stringValue } == ["sfttap0", "sfttap1"])
        #expect(nics.map { $0.elements(forName: "target").first?.attribute(forName: "managed")?.stringValue } == ["no", "no"])
        #expect(nics.map { $0.elements(forName: "model").first?.attribute(forName: "type")?.stringValue } == ["virtio", "e1000"])

        // A pty whose output virtlogd appends to the log file, and the console on that serial port.
        let serial = try #require(devices.elements(forName: "serial").first)
        #expect(serial.attribute(forName: "type")?.stringValue == "pty")
        let log = try #require(serial.elements(forName: "log").first)
        #expect(log.attribute(forName: "file")?.stringValue == "/var/lib/sfnode/console.log")
        #expect(log.attribute(forName: "append")?.stringValue == "on")
        let console = try #require(devices.elements(forName: "console").first)
        #expect(console.attribute(forName: "type")?.stringValue == "pty")
        #expect(console.elements(forName: "target").first?.attribute(forName: "type")?.stringValue == "serial")
        let video = try #require(devices.elements(forName: "video").first?.elements(forName: "model").first)
        #expect(video.attribute(forName: "type")?.stringValue == "cirrus")
        #expect(video.attribute(forName: "vram")?.stringValue == "8192")

        let instance = try #require(root.elements(forName: "metadata").first?.children?.first as? XMLElement)
        #expect(instance.localName == "instance")
        #expect(instance.uri == DomainSpec.metadataNamespace)
        #expect(instance.attribute(forName: "uuid")?.stringValue == "11111111-2222-3333-4444-555555555555")
    }

    @Test func hostileNameIsDataNotMarkup() throws {
        // libvirt refuses '/' in names, so the spec does too; this one has every other special character.
        let hostile = #"sft a'><devices><disk type="file"><x y="&amp;"#
        let root = try parse(try DomainSpec(name: hostile, type: .qemu, memoryMiB: 64, vcpus: 1).xml())
        #expect(root.elements(forName: "name").first?.stringValue == hostile)
        #expect(root.elements(forName: "devices").count == 1)
        #expect(root.elements(forName: "devices").first?.elements(forName: "disk").isEmpty == true)
        #expect(root.elements(forName: "x").isEmpty)
    }

    @Test func slashInNameIsRefusedClearly() {
        let spec = DomainSpec(name: "a'/><devices>", type: .qemu, memoryMiB: 64, vcpus: 1)
        #expect(throws: DomainSpecError.invalidName("a'/><devices>", reason: "it contains '/', a newline or a control character")) {
            try spec.xml()
        }
    }

    @Test func invalidValuesAreRefused() throws {
        let base = DomainSpec(name: "sft-ok", type: .qemu, memoryMiB: 64, vcpus: 1)
        var spec = base
        spec.name = ""
        #expect(throws: DomainSpecError.invalidName("", reason: "it is empty")) { try spec.validate() }
        spec = base
        spec.memoryMiB = 0
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec = base
        spec.vcpus = -1
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec = base
        spec.type = .auto
        #expect(throws: DomainSpecError.unresolvedVirtualizationType) { try spec.validate() }
        spec = base
        spec.cpuMode = .hostPassthrough
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec.type = .kvm
        #expect(throws: Never.self) { try spec.validate() }
        spec = base
        spec.disks = [.init(path: "relative.qcow2")]
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec.disks = [.init(path: "/x.iso", device: .cdrom, bus: .virtio)]
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec.disks = Array(repeating: .init(path: "/x.qcow2", bus: .ide), count: 5)
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec = base
        spec.interfaces = [.init(tapDevice: "sft tap", mac: try mac("52:54:00:00:00:01"))]
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec.interfaces = [.init(tapDevice: "sfttap-name-too-long", mac: try mac("52:54:00:00:00:01"))]
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec.interfaces = [.init(tapDevice: "sfttap", mac: try mac("01:00:5e:00:00:01"))]
        #expect(throws: DomainSpecError.self, "multicast MAC") { try spec.validate() }
        spec.interfaces = [
            .init(tapDevice: "sfttap0", mac: try mac("52:54:00:00:00:01")), .init(tapDevice: "sfttap1", mac: try mac("52:54:00:00:00:01")),
        ]
        #expect(throws: DomainSpecError.self, "duplicate MAC") { try spec.validate() }
        spec = base
        spec.serialLogPath = "/tmp/con\u{1}sole"
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec = base
        spec.video = .init(model: .vga, memoryKiB: 0)
        #expect(throws: DomainSpecError.self) { try spec.validate() }
        spec.video = .init(model: .none, memoryKiB: 0)
        #expect(throws: Never.self) { try spec.validate() }
    }

    @Test func modelsComeFromAllowLists() throws {
        #expect(DomainSpec.NICModel.allCases.map(\.rawValue) == ["virtio", "e1000", "rtl8139", "ne2k_pci", "pcnet", "i82551", "i82557b", "i82559er"])
        #expect(DomainSpec.VideoModel.allCases.map(\.rawValue) == ["cirrus", "vga", "virtio", "qxl", "none"])
        #expect(try DomainSpec.NICModel.parse("e1000") == .e1000)
        #expect(try DomainSpec.VideoModel.parse("qxl") == .qxl)
        #expect(try DomainSpec.NICModel.parse("ne2k_pci") == .ne2kPCI)
        #expect(throws: DomainSpecError.unsupportedModel(kind: "network interface", model: "ne2000", allowed: DomainSpec.NICModel.allCases.map(\.rawValue))) {
            try DomainSpec.NICModel.parse("ne2000")
        }
        #expect(throws: DomainSpecError.self) { try DomainSpec.NICModel.parse("virtio'/><x") }
        #expect(throws: DomainSpecError.self) { try DomainSpec.VideoModel.parse("bochs") }
        #expect(throws: DomainSpecError.self) { try DomainSpec.VideoModel.parse("VGA") }
    }

    @Test func videoNoneHasNoMemory() throws {
        var spec = DomainSpec(name: "sft-v", type: .qemu, memoryMiB: 64, vcpus: 1)
        spec.video = .init(model: .none)
        let model = try #require(try parse(try spec.xml()).elements(forName: "devices").first?.elements(forName: "video").first?.elements(forName: "model").first)
        #expect(model.attribute(forName: "type")?.stringValue == "none")
        #expect(model.attribute(forName: "vram") == nil)
    }

    @Test func metadataUUIDAttributeIsRead() {
        let uuid = UUID(uuidString: "11111111-2222-3333-4444-555555555555")
        #expect(LibvirtConnection.uuidAttribute(in: #"<instance xmlns="https://sfnode.dev/xmlns/instance/1" uuid="11111111-2222-3333-4444-555555555555"/>"#) == uuid)
        #expect(LibvirtConnection.uuidAttribute(in: "<sfnode:instance uuid='11111111-2222-3333-4444-555555555555'/>") == uuid)
        #expect(LibvirtConnection.uuidAttribute(in: "<instance/>") == nil)
    }
}
