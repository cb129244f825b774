import Foundation
import SFSystem
import SFTestSupport
import Testing

/// The real client (sf-client and its Python API) and sfnode's own CLI against `sfnode serve`:
/// a network with DNS is made with `--dns`, bad netblocks are refused with Shaken Fist's messages,
/// and `network ping` answers from inside the network's namespace, for the router (10 received)
/// and for an address nobody has (0 received, still an answer).
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root and libvirtd"))
struct NetworkFlowTests {
    @Test func theRealClientMakesADNSNetworkAndPingsOnIt() async throws {
        // No upstream resolver: nothing a test's dnsmasq is asked may leave the namespaces.
        let flow = try await CommandLineFlow.start(serving: true, settings: ["SFNODE_DNS_SERVER": "none"])
        try await flow.finishing {
            let client = try RealClient(flow: flow)
            let network = try #require(try client.sfClient(["network", "create", "net", "10.97.0.0/24", "--dns"]) as? [String: Any])
            #expect(network["provide_dns"] as? Bool == true, "\(network)")
            let uuid = try #require(network["uuid"] as? String)
            let ready = await eventually(timeout: .seconds(60)) {
                ((try? client.python(["show-network", uuid])) as? [String: Any])?["state"] as? String == "created"
            }
            #expect(ready, "the network was not created")

            // sfnode's own command follows the network's events through the API, as a remote
            // operator would: the API and key from the client's configuration, nothing from the store.
            let config = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: flow.clientConfig))) as? [String: String])
            let followLog = flow.directory + "/follow.log"
            let follower = try AgentProcess.start(
                executable: flow.executable, arguments: ["events", "network", uuid, "--follow", "--api", "--json", "--limit", "5"],
                environment: [
                    "SHAKENFIST_API_URL": config["apiurl"] ?? "", "SHAKENFIST_NAMESPACE": config["namespace"] ?? "",
                    "SHAKENFIST_KEY": config["key"] ?? "", "SFNODE_STORE_PATH": "/nonexistent/store.sqlite",
                ], log: followLog)
            let followed = await eventually(timeout: .seconds(30)) {
                ((try? String(contentsOfFile: followLog, encoding: .utf8)) ?? "").contains(#""message":"db record created""#)
            }
            #expect(followed && follower.isRunning, "sfnode events --follow --api: \(follower.logTail())")
            await follower.kill()
            let dnsmasq = dnsmasqProcesses(mentioning: uuid)
            #expect(dnsmasq.count == 1, "dnsmasq processes: \(dnsmasq)")

            for (netblock, message) in [
                ("10.97.1.1/24", "cannot parse netblock: 10.97.1.1/24 has host bits set"),
                ("10.97.1.0/30", "network is below minimum size of /29"),
                ("fd00::/64", "sfnode networks are IPv4 only"),
            ] {
                var refusal = ""
                do { _ = try client.sfClient(["network", "create", "bad", netblock]) } catch { refusal = "\(error)" }
                #expect(refusal.contains(message), "sf-client network create \(netblock): \(refusal)")
                let own = try flow.run(["network", "create", "bad", netblock], allowFailure: true)
                #expect(own.status != 0 && (own.stderr + own.stdout).contains(message), "sfnode network create \(netblock): \(own.stderr)")
            }

            // Extra records through the Python API reach the network's dnsmasq hosts file.
            #expect(try client.python(["set-dns-entry", "net", "db", "10.97.0.50"]) is NSNull)
            let dnsHosts = flow.storage + "/dhcp/\(uuid)/dnshosts"
            let written = await eventually(timeout: .seconds(30)) {
                ((try? String(contentsOfFile: dnsHosts, encoding: .utf8)) ?? "").contains("10.97.0.50 db.system.shakenfist db")
            }
            #expect(written, "dnshosts: \((try? String(contentsOfFile: dnsHosts, encoding: .utf8)) ?? "missing")")
            #expect(try client.python(["delete-dns-entry", "net", "db"]) is NSNull)

            // The Python API's ping(): Shaken Fist's shape, lists of lines.
            let router = try #require(try client.python(["ping", "net", "10.97.0.1"]) as? [String: Any])
            let routerLines = try #require(router["stdout"] as? [String])
            #expect(routerLines.first == "PING 10.97.0.1 (10.97.0.1) 56(84) bytes of data." && routerLines.last == "", "\(routerLines)")
            #expect(routerLines.contains { $0.hasPrefix("10 packets transmitted, 10 received, 0% packet loss") }, "\(routerLines)")
            #expect(router["stderr"] as? [String] == [""])

            // sf-client network ping --json prints the answer as Python prints a dict.
            let unanswered = try ChildProcess.run(
                client.command([client.venv + "/bin/sf-client", "--json", "network", "ping", "net", "10.97.0.200"]))
            #expect(unanswered.status == 0, "\(unanswered.stderr)")
            #expect(unanswered.stdout.contains("10 packets transmitted, 0 received"), "\(unanswered.stdout)")
            #expect(!unanswered.stdout.contains("bytes from 10.97.0.200"), "\(unanswered.stdout)")

            // sfnode's own CLI prints the lines.
            let own = try flow.run(["network", "ping", "net", "10.97.0.1"])
            #expect(own.stdout.contains("10 packets transmitted, 10 received, 0% packet loss"), "\(own.stdout)")
            let outside = try flow.run(["network", "ping", "net", "10.98.0.1"], allowFailure: true)
            #expect(outside.status != 0 && (outside.stderr + outside.stdout).contains("ping request for address outside network block"), "\(outside.stderr)")

            _ = try client.sfClient(["network", "delete", "net"])
            #expect(await eventually(timeout: .seconds(60)) { flow.networksLeft() == 0 }, "the network was not deleted")
        }
    }
}
