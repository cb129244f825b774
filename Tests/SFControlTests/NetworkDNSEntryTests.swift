import Foundation
import SFControl
import SFStore
import SFSystem
import Testing

/// Extra DNS records (Shaken Fist's `hosteddns`): stored with a refresh for the network node,
/// refused by name when the network cannot take them, and limited per network.
@Suite struct NetworkDNSEntryTests {
    @Test func recordsAreStoredWithARefreshAndLimited() async throws {
        var settings = ControlSettings()
        settings.networkDNSEntries = 2
        let fixture = try await ControlFixture(settings: settings)
        defer { fixture.cleanup() }
        let network = try await fixture.control.createNetwork(name: "net", netblock: "10.0.0.0/24", provideDNS: true)
        let initial = await controlError { try await fixture.control.setNetworkDNSEntry(network: "net", name: "db", value: "10.0.0.5") }
        #expect(initial == ControlError(.notReady, "network \(network.uuid.lowercasedString) is not ready (initial)"))
        _ = try await fixture.store.setNetworkState(uuid: network.uuid, to: .created)

        try await fixture.control.setNetworkDNSEntry(network: "net", name: "DB", value: "10.0.0.5")
        try await fixture.control.setNetworkDNSEntry(network: "net", name: "www.example.test", value: "10.0.0.6")
        try await fixture.control.setNetworkDNSEntry(network: "net", name: "db", value: "10.0.0.7")
        #expect(try await fixture.store.networkDNSEntries(uuid: network.uuid) == ["db": IPv4Address("10.0.0.7")!, "www.example.test": IPv4Address("10.0.0.6")!])
        let refreshes = try await fixture.store.jobs(states: [.queued], limit: 10).filter { $0.kind == "network.refresh" }
        #expect(refreshes.count == 3 && refreshes.allSatisfy { $0.target == .networkNode })

        let third = await controlError { try await fixture.control.setNetworkDNSEntry(network: "net", name: "third", value: "10.0.0.8") }
        #expect(third?.code == .invalidArgument && third?.message.contains("SFNODE_NETWORK_DNS_ENTRIES") == true, "\(String(describing: third))")
        try await fixture.control.deleteNetworkDNSEntry(network: "net", name: "db")
        try await fixture.control.deleteNetworkDNSEntry(network: "net", name: "db")
        try await fixture.control.setNetworkDNSEntry(network: "net", name: "third", value: "10.0.0.8")
        #expect(try await fixture.store.networkDNSEntries(uuid: network.uuid).keys.sorted() == ["third", "www.example.test"])

        for (name, value, message) in [
            ("", "10.0.0.1", "invalid DNS name"), ("a b", "10.0.0.1", "invalid DNS name"), ("-a", "10.0.0.1", "invalid DNS name"),
            ("a\n10.0.0.9 evil", "10.0.0.1", "invalid DNS name"), (String(repeating: "a", count: 64), "10.0.0.1", "invalid DNS name"),
            ("ok", "10.0.0.1 evil", "invalid DNS value: '10.0.0.1 evil' is not an IPv4 address"),
            ("ok", "fd00::1", "invalid DNS value: 'fd00::1' is not an IPv4 address"),
        ] {
            let error = await controlError { try await fixture.control.setNetworkDNSEntry(network: "net", name: name, value: value) }
            #expect(error == ControlError(.invalidArgument, message), "\(name) \(value)")
        }
        _ = try await fixture.control.createNetwork(name: "plain", netblock: "10.1.0.0/24")
        let plain = try await fixture.control.network("plain")
        _ = try await fixture.store.setNetworkState(uuid: plain.uuid, to: .created)
        #expect(await controlError { try await fixture.control.setNetworkDNSEntry(network: "plain", name: "db", value: "10.1.0.5") }
            == ControlError(.invalidArgument, "network does not provide DNS"))
    }
}
