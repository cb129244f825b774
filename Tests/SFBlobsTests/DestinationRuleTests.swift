import Foundation
import Logging
import SFBlobs
import SFSystem
import SFTestSupport
import Testing

/// Where a fetch may go. Refusals happen before any socket is opened, so the addresses below are
/// never contacted: only the loopback server of these tests is, and only when allowed.
@Suite struct DestinationRuleTests {
    let logger = Logger(label: "sfnode.test.rules")

    func refusal(_ rules: DestinationRules, _ text: String) -> String? {
        guard let address = IPAddress(text) else { return "not an address" }
        do {
            try rules.check(address, host: "h", url: "u")
            return nil
        } catch let error as FetchError {
            guard case .refused(_, _, _, let rule) = error else { return "\(error)" }
            return rule
        } catch {
            return "\(error)"
        }
    }

    @Test func defaultsRefuseEveryInsideRangeAndAllowThePublicInternet() {
        let refused = [
            "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.0.0.1", "172.16.0.1", "172.31.255.255",
            "192.168.1.1", "100.64.0.1", "100.100.100.200", "169.254.169.254", "192.0.0.192", "192.0.2.1",
            "198.51.100.7", "203.0.113.9", "198.18.0.1", "198.19.255.255", "224.0.0.1", "239.255.255.250",
            "240.0.0.1", "255.255.255.255",
            // IPv6 and the forms that stand for IPv4 addresses.
            "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1", "2001:db8::1",
            "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.1.2.3", "::127.0.0.1",
            "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::", "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",  // Teredo, client 127.0.0.1 (bits inverted)
        ]
        for address in refused {
            #expect(refusal(.default, address) != nil, "\(address) must be refused by default")
        }
        for address in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            #expect(refusal(.default, address) == nil, "\(address) must be allowed by default")
        }
        // The rule says what the range is and how to open it.
        #expect(refusal(.default, "127.0.0.1") == "127.0.0.0/8 (loopback), refused unless SFNODE_FETCH_ALLOW opens it")
        #expect(refusal(.default, "::ffff:127.0.0.1")?.hasPrefix("IPv4-mapped ::ffff:0:0/96 of 127.0.0.1: 127.0.0.0/8") == true)
    }

    @Test func allowOpensDefaultRangesButNeverTheMetadataServiceAndDenyWins() throws {
        let rules = try DestinationRules.parse(allow: "127.0.0.0/8, 169.254.0.0/16 fd00::/8", deny: "127.0.0.2 2606:4700::/32")
        #expect(refusal(rules, "127.0.0.1") == nil)
        #expect(refusal(rules, "::ffff:127.0.0.1") == nil)  // the same address, the same answer
        #expect(refusal(rules, "fd00::5") == nil)
        #expect(refusal(rules, "127.0.0.2") == "127.0.0.2/32 in SFNODE_FETCH_DENY")
        #expect(refusal(rules, "::ffff:127.0.0.2")?.hasSuffix("127.0.0.2/32 in SFNODE_FETCH_DENY") == true)
        #expect(refusal(rules, "2606:4700:4700::1111") == "2606:4700::/32 in SFNODE_FETCH_DENY")
        #expect(refusal(rules, "169.254.169.254")?.contains("never fetched from") == true)
        #expect(refusal(rules, "10.0.0.1") != nil)
        #expect(rules.description == "allow=127.0.0.0/8,169.254.0.0/16,fd00::/8 deny=127.0.0.2/32,2606:4700::/32")
    }

    @Test func theLongestMatchingRangeDecides() throws {
        // Opening must be meant: the whole address space opens nothing the built-in ranges refuse.
        let everything = try DestinationRules.parse(allow: "0.0.0.0/0 ::/0", deny: nil)
        #expect(refusal(everything, "127.0.0.1") != nil && refusal(everything, "10.0.0.1") != nil && refusal(everything, "::1") != nil)
        // Part of 10/8 opened, part of that closed again.
        let nested = try DestinationRules.parse(allow: "10.1.0.0/16", deny: "10.1.2.0/24")
        #expect(refusal(nested, "10.1.9.9") == nil)
        #expect(refusal(nested, "10.1.2.3") == "10.1.2.0/24 in SFNODE_FETCH_DENY")
        #expect(refusal(nested, "10.2.0.1")?.hasPrefix("10.0.0.0/8 (private") == true)
        // The tests' agents: loopback and nothing else.
        let onlyLoopback = try DestinationRules.parse(allow: "127.0.0.0/8", deny: "0.0.0.0/0,::/0")
        #expect(refusal(onlyLoopback, "127.0.0.1") == nil)
        #expect(refusal(onlyLoopback, "8.8.8.8") == "0.0.0.0/0 in SFNODE_FETCH_DENY")
        #expect(refusal(onlyLoopback, "2606:4700:4700::1111") == "::/0 in SFNODE_FETCH_DENY")
        // At equal length, deny closes allow.
        #expect(refusal(try DestinationRules.parse(allow: "127.0.0.0/8", deny: "127.0.0.0/8"), "127.0.0.1") == "127.0.0.0/8 in SFNODE_FETCH_DENY")
    }

    @Test func badRuleEntriesAreNamed() {
        #expect(throws: FetchError.invalidRule(setting: "SFNODE_FETCH_DENY", entry: "10.0.0.0/33")) {
            try DestinationRules.parse(allow: nil, deny: "10.0.0.0/8,10.0.0.0/33")
        }
        #expect(throws: FetchError.invalidRule(setting: "SFNODE_FETCH_ALLOW", entry: "fe80::/129")) {
            try DestinationRules.parse(allow: "fe80::/129", deny: "")
        }
        #expect(throws: FetchError.invalidRule(setting: "SFNODE_FETCH_ALLOW", entry: "010.0.0.0/8")) {
            try DestinationRules.parse(allow: "010.0.0.0/8", deny: "")
        }
        #expect(FetchError.invalidRule(setting: "SFNODE_FETCH_ALLOW", entry: "x").description.contains("IPv6"))
        #expect((try? DestinationRules.parse(allow: " ", deny: nil)) == .default)
    }

    @Test func aLoopbackURLIsRefusedByDefaultAndFetchedWhenAllowed() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/s.json", data: Data("{\"secret\": 1}".utf8))
        let url = server.url("/s.json")
        let refusing = HTTPFetcher(configuration: .init(rules: .default, retries: 0), logger: logger)
        await #expect {
            _ = try await refusing.fetch(url, restart: {}, into: { _ in })
        } throws: { error in
            guard let error = error as? FetchError, case .refused(url, "127.0.0.1", "127.0.0.1", let rule) = error else { return false }
            // Names the host, the address and the rule, and says which setting opens it.
            let message = error.description
            return rule.contains("127.0.0.0/8 (loopback)") && message.contains("host 127.0.0.1")
                && message.contains("SFNODE_FETCH_ALLOW") && !message.contains("secret")
        }
        await #expect(throws: FetchError.self) { _ = try await refusing.head(url) }
        #expect(server.requestCount("/s.json") == 0)

        let allowing = HTTPFetcher(
            configuration: .init(rules: try DestinationRules.parse(allow: "127.0.0.0/8", deny: nil), retries: 0), logger: logger)
        var body = Data()
        _ = try await allowing.fetch(url, restart: {}, into: { body.append(contentsOf: $0) })
        #expect(body == Data("{\"secret\": 1}".utf8))
    }

    @Test func ipv6AndMappedLiteralsAreRefusedBeforeConnecting() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/x", data: Data("x".utf8))
        let fetcher = HTTPFetcher(configuration: .init(rules: .default, retries: 0), logger: logger)
        for host in ["[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "[fe80::1]", "[fd00::1]"] {
            let url = "http://\(host):\(server.port)/x"
            await #expect {
                _ = try await fetcher.head(url)
            } throws: { error in
                guard case .refused(url, _, _, _) = error as? FetchError else { return false }
                return true
            }
        }
        // Even when loopback is open, the IPv6 loopback is not IPv4 loopback.
        let loopback = HTTPFetcher(configuration: .init(rules: try DestinationRules.parse(allow: "127.0.0.0/8", deny: nil), retries: 0), logger: logger)
        await #expect(throws: FetchError.self) { _ = try await loopback.head("http://[::1]:\(server.port)/x") }
        #expect(server.requestCount("/x") == 0)
    }

    @Test func aRedirectToARefusedAddressIsRefused() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        server.register("/hop", data: Data(), behaviour: .redirect(to: "http://169.254.169.254/latest/meta-data/"))
        server.register("/hop6", data: Data(), behaviour: .redirect(to: "http://[::ffff:a9fe:a9fe]/latest"))
        server.register("/hop10", data: Data(), behaviour: .redirect(to: "http://10.255.255.1/x"))
        let fetcher = HTTPFetcher(configuration: .init(rules: try DestinationRules.parse(allow: "127.0.0.0/8", deny: nil), retries: 0), logger: logger)
        for (path, address) in [("/hop", "169.254.169.254"), ("/hop6", "::ffff:169.254.169.254"), ("/hop10", "10.255.255.1")] {
            await #expect {
                _ = try await fetcher.fetch(server.url(path), restart: {}, into: { _ in })
            } throws: { error in
                guard case .refused(_, _, address, _) = error as? FetchError else { return false }
                return true
            }
            #expect(server.requestCount(path) == 1)
        }
    }

    @Test func hostsTheTwoURLParsersCouldReadDifferentlyAreRefused() async throws {
        let fetcher = HTTPFetcher(configuration: .init(rules: try DestinationRules.parse(allow: "127.0.0.0/8", deny: nil), retries: 0), logger: logger)
        // Numbers that are addresses in disguise, percent-encoding, characters outside LDH, zones.
        for url in [
            "http://127.1/x", "http://2130706433/x", "http://0x7f000001/x", "http://0x7f.0.0.1/x", "http://%31%32%37.0.0.1/x",
            "http://exa_mple.com/x", "http://-bad.example/x", "http://[::1%25lo]/x", "http://[127.0.0.1]/x",
        ] {
            await #expect {
                _ = try await fetcher.head(url)
            } throws: { error in
                guard case .invalidURL = error as? FetchError else { return false }
                return true
            }
        }
        await #expect(throws: FetchError.unsupportedScheme(url: "file:///etc/passwd", scheme: "file")) {
            _ = try await fetcher.head("file:///etc/passwd")
        }
    }

    @Test func credentialsAndQueriesStayOutOfMessages() {
        #expect(redactedURL("https://user:s3cret@images.example/a.qcow2?X-Amz-Signature=abc#frag") == "https://***@images.example/a.qcow2?***")
        #expect(redactedURL("http://images.example/a.qcow2") == "http://images.example/a.qcow2")
        #expect(redactedURL("http://images.example/a.qcow2#part") == "http://images.example/a.qcow2")
        let error = FetchError.refused(
            url: "http://admin:hunter2@10.0.0.1/x?token=t0ps3cret", host: "10.0.0.1", address: "10.0.0.1", rule: "r")
        #expect(!error.description.contains("hunter2") && !error.description.contains("t0ps3cret"))
        #expect(error.description.contains("http://***@10.0.0.1/x?***"))
    }
}
