import Foundation
import SFSystem
import Testing

@testable import SFDaemonSupport

/// The fetch and image limit settings: defaults, parsing, and refusals naming the setting.
@Suite struct FetchSettingsTests {
    @Test func defaultsAndOverrides() throws {
        let defaults = NodeConfiguration.defaults(nodeName: "n")
        #expect(defaults.fetchAllow.isEmpty && defaults.fetchDeny.isEmpty)
        #expect(defaults.fetchDeadlineSeconds == 3600 && defaults.fetchMinRateKiB == 16 && defaults.fetchRateWindowSeconds == 60)
        #expect(defaults.imageMaxGiB == 64 && defaults.qemuImgTimeoutSeconds == 1800)
        var configuration = defaults
        try configuration.applyEnvironment([
            "SFNODE_FETCH_ALLOW": "127.0.0.0/8, fd00::/8", "SFNODE_FETCH_DENY": "2001:db8::1 192.0.2.0/24",
            "SFNODE_FETCH_DEADLINE_SECONDS": "90", "SFNODE_FETCH_MIN_RATE_KIB": "0", "SFNODE_FETCH_RATE_WINDOW_SECONDS": "5",
            "SFNODE_IMAGE_MAX_GIB": "2", "SFNODE_QEMU_IMG_TIMEOUT_SECONDS": "30",
        ])
        #expect(configuration.fetchAllow.map(\.description) == ["127.0.0.0/8", "fd00::/8"])
        #expect(configuration.fetchDeny.map(\.description) == ["2001:db8::1/128", "192.0.2.0/24"])
        #expect(configuration.fetchDeadlineSeconds == 90 && configuration.fetchMinRateKiB == 0 && configuration.fetchRateWindowSeconds == 5)
        #expect(configuration.imageMaxGiB == 2 && configuration.qemuImgTimeoutSeconds == 30)
        let decoded = try NodeConfiguration.decode(json: try JSONEncoder().encode(configuration), source: "memory", defaults: defaults)
        #expect(decoded == configuration)
    }

    @Test(
        arguments: [
            ("SFNODE_FETCH_ALLOW", "127.0.0.0/8,fe80::/129", "SFNODE_FETCH_ALLOW: '127.0.0.0/8,fe80::/129' is not a list of IPv4 or IPv6 networks"),
            ("SFNODE_FETCH_DENY", "10.0.0.0/33", "SFNODE_FETCH_DENY: '10.0.0.0/33' is not a list"),
            ("SFNODE_FETCH_DEADLINE_SECONDS", "0", "SFNODE_FETCH_DEADLINE_SECONDS: '0' is not a whole number of seconds"),
            ("SFNODE_FETCH_DEADLINE_SECONDS", "99999999999999999999", "SFNODE_FETCH_DEADLINE_SECONDS: '99999999999999999999' is not"),
            ("SFNODE_FETCH_MIN_RATE_KIB", "-1", "SFNODE_FETCH_MIN_RATE_KIB: '-1' is not a whole number of KiB/s"),
            ("SFNODE_FETCH_RATE_WINDOW_SECONDS", "1.5", "SFNODE_FETCH_RATE_WINDOW_SECONDS: '1.5' is not a whole number"),
            ("SFNODE_IMAGE_MAX_GIB", "0", "SFNODE_IMAGE_MAX_GIB: '0' is not a whole number of GiB"),
            ("SFNODE_QEMU_IMG_TIMEOUT_SECONDS", "+5", "SFNODE_QEMU_IMG_TIMEOUT_SECONDS: '+5' is not a whole number"),
        ])
    func badValuesNameTheSetting(variable: String, value: String, message: String) throws {
        var configuration = NodeConfiguration.defaults(nodeName: "n")
        let error = try #require(throws: ConfigurationError.self) { try configuration.applyEnvironment([variable: value]) }
        #expect(error.description.hasPrefix(message), "\(error)")
    }
}
