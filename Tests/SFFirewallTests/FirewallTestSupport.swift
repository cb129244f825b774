import Foundation
import Logging
import SFFirewall
import SFSystem
import SFTestSupport
import Testing

/// Runs `ip netns exec namespace ARGS` to completion. Only used for iptables-legacy inside a test's
/// own namespace: read-only cross-checks, and foreign rules planted there.
@discardableResult
func runInNamespace(_ namespace: String, _ arguments: [String], input: String? = nil) throws -> CommandOutput {
    precondition(namespace.hasPrefix(TestNames.prefix), "tests only touch their own namespaces")
    return try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", namespace] + arguments, input: input)
}

/// Runs `iptables-legacy -w ARGS` inside the test namespace `namespace` and requires success.
func iptables(_ namespace: String, _ arguments: [String]) throws {
    let result = try runInNamespace(namespace, ["iptables-legacy", "-w"] + arguments)
    guard result.status == 0 else {
        throw TestFailure("iptables-legacy \(arguments.joined(separator: " ")) in \(namespace): \(result.stderr)")
    }
}

/// `iptables-legacy-save -t table` inside `namespace`, without the lines that change between two
/// identical saves: the `#` timestamp lines, and the counters of built-in chain policies.
func save(_ namespace: String, table: String) throws -> [String] {
    let result = try runInNamespace(namespace, ["iptables-legacy-save", "-t", table])
    guard result.status == 0 else {
        throw TestFailure("iptables-legacy-save -t \(table) in \(namespace): \(result.stderr)")
    }
    return result.stdout.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }.map { line in
        // ":PREROUTING ACCEPT [12:345]" -> ":PREROUTING ACCEPT"
        if line.hasPrefix(":"), let bracket = line.range(of: " [") { return String(line[..<bracket.lowerBound]) }
        return line
    }
}

/// Loads `text` with `iptables-legacy-restore -w` (which replaces the tables it names) inside `namespace`.
func restore(_ namespace: String, _ text: String) throws {
    let result = try runInNamespace(namespace, ["iptables-legacy-restore", "-w"], input: text)
    guard result.status == 0 else { throw TestFailure("iptables-legacy-restore in \(namespace): \(result.stderr)") }
}

/// Both tables sfnode writes, nat first.
func saveAll(_ namespace: String) throws -> [String] {
    try save(namespace, table: "nat") + save(namespace, table: "filter")
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func testLogger() -> Logger {
    var logger = Logger(label: "sfnode.test.firewall")
    logger.logLevel = .warning
    return logger
}

/// Addresses from the documentation ranges (RFC 5737) and a private network: they appear only in
/// rules inside test namespaces, and no traffic is sent.
enum Sample {
    static func address(_ text: String) -> IPv4Address {
        guard let address = IPv4Address(text) else { fatalError("bad sample address \(text)") }
        return address
    }

    static func prefix(_ text: String) -> IPv4Prefix {
        guard let prefix = IPv4Prefix(text) else { fatalError("bad sample prefix \(text)") }
        return prefix
    }

    static let dnat = FirewallRule.dnat(floating: address("192.0.2.10"), to: address("10.0.0.5"))
    static let dnat2 = FirewallRule.dnat(floating: address("192.0.2.11"), to: address("10.0.0.6"))
    static let snat = FirewallRule.snat(source: address("10.0.0.5"), to: address("192.0.2.10"))
    static let masquerade = FirewallRule.masquerade(source: prefix("10.0.0.0/24"), outInterface: "eth0")
    static let forwardIn = FirewallRule.forwardAccept(
        inInterface: "eth0", outInterface: "br0", destination: prefix("10.0.0.0/24"))
    static let forwardOut = FirewallRule.forwardAccept(inInterface: "br0", outInterface: nil)

    /// One of every kind.
    static let all = FirewallState(rules: [dnat, snat, masquerade, forwardIn, forwardOut])
}
