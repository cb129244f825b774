import Foundation
import SFSystem
import SFTestSupport

/// The real, unmodified Shaken Fist client (`shakenfist-client==0.8.3` from PyPI, in the virtualenv
/// `scripts/client-venv` makes) pointed at a flow's `sfnode serve`: its `sf-client` command line and
/// its Python API through `Tests/Acceptance/client_api.py`.
struct RealClient {
    let flow: CommandLineFlow
    let venv: String
    private(set) var environment: [String: String]

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// The client configured from the file `sfnode serve` wrote, as a local user's client is.
    init(flow: CommandLineFlow) throws {
        self.flow = flow
        let made = try ChildProcess.run(["/bin/bash", Self.repository + "/scripts/client-venv"])
        guard made.status == 0 else { throw AgentProcessError("scripts/client-venv failed: \(made.stderr)") }
        venv = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let data = FileManager.default.contents(atPath: flow.clientConfig),
            let config = try JSONSerialization.jsonObject(with: data) as? [String: String]
        else { throw AgentProcessError("sfnode serve wrote no client configuration at \(flow.clientConfig)") }
        environment = [
            "HOME": flow.directory, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
            "SHAKENFIST_API_URL": config["apiurl"] ?? "", "SHAKENFIST_NAMESPACE": config["namespace"] ?? "",
            "SHAKENFIST_KEY": config["key"] ?? "",
        ]
    }

    /// The same client authenticating as another namespace's key.
    func acting(as namespace: String, key: String) -> RealClient {
        var other = self
        other.environment["SHAKENFIST_NAMESPACE"] = namespace
        other.environment["SHAKENFIST_KEY"] = key
        return other
    }

    /// `sf-client ARGS` for a command that prints no JSON (sf-client's `namespace create`, say): its
    /// output; a failure throws with what the client printed.
    @discardableResult func sfClientText(_ arguments: [String]) throws -> String {
        let output = try run([venv + "/bin/sf-client"] + arguments)
        guard output.status == 0 else { throw AgentProcessError("sf-client \(arguments.joined(separator: " ")) exited \(output.status): \(output.stdout)\(output.stderr)") }
        return output.stdout
    }

    /// `sf-client --json ARGS`, parsed; a failure throws with what the client printed.
    func sfClient(_ arguments: [String]) throws -> Any {
        try parse(run([venv + "/bin/sf-client", "--json"] + arguments), "sf-client \(arguments.joined(separator: " "))")
    }

    /// One step over the client's Python API (`client_api.py SUBCOMMAND ARGS`), parsed.
    func python(_ arguments: [String]) throws -> Any {
        try parse(
            run([venv + "/bin/python", Self.repository + "/Tests/Acceptance/client_api.py", "--timeout", "300"] + arguments),
            "client_api.py \(arguments.joined(separator: " "))")
    }

    private func run(_ argv: [String]) throws -> CommandOutput {
        try ChildProcess.run(command(argv))
    }

    /// `argv` with exactly the client's environment, in the test process's own network namespace
    /// (its main thread's), where the API listens on loopback. A child inherits the namespace of
    /// the thread that spawns it, and a test's threads also enter its namespaces: a client spawned
    /// from one of those found 127.0.0.1 unreachable.
    func command(_ argv: [String]) -> [String] {
        ["/usr/bin/nsenter", "--net=/proc/\(getpid())/ns/net", "--", "/usr/bin/env", "-i"]
            + environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" } + argv
    }

    private func parse(_ output: CommandOutput, _ what: String) throws -> Any {
        guard output.status == 0 else {
            let log = (try? String(contentsOfFile: flow.directory + "/agent.log", encoding: .utf8)).map { String($0.suffix(4000)) } ?? ""
            throw AgentProcessError("\(what) exited \(output.status): \(output.stdout)\(output.stderr)\n--- sfnode serve ---\n\(log)")
        }
        let text = output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) else {
            throw AgentProcessError("\(what) printed no JSON: \(output.stdout)\(output.stderr)")
        }
        return parsed
    }

    /// `sf-client instance show REF` until `condition` holds of it, or throws with the last one.
    func waitForInstance(_ reference: String, timeout: Duration = .seconds(240), _ condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        let met = await eventually(timeout: timeout) {
            last = ((try? python(["show-instance", reference])) as? [String: Any]) ?? last
            return condition(last)
        }
        guard met else { throw AgentProcessError("instance \(reference) did not settle: \(last)") }
        return last
    }
}

/// The first interface of an instance object.
func firstInterface(_ instance: [String: Any]) -> [String: Any]? {
    (instance["interfaces"] as? [[String: Any]])?.first
}
