import Foundation
import SFSystem
import SFTestSupport

/// One namespace's view of a flow's `sfnode serve`, over plain HTTP: what a hostile tenant sends,
/// byte for byte, without a client library smoothing it. Requests go through curl run in the test
/// process's own network namespace (see ``RealClient/command(_:)`` for why not from a test thread).
struct TenantClient: Sendable {
    let apiURL: String
    let namespace: String
    let token: String?

    /// An answer: its status and its body, parsed as JSON when it is JSON.
    struct Answer: CustomStringConvertible {
        let status: Int
        let text: String
        var json: Any? { try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) }
        var object: [String: Any] { json as? [String: Any] ?? [:] }
        var description: String { "\(status) \(text.prefix(600))" }
    }

    /// The admin, authenticated with the key `sfnode serve` wrote into the flow's client configuration.
    static func admin(of flow: CommandLineFlow) async throws -> TenantClient {
        guard let data = FileManager.default.contents(atPath: flow.clientConfig),
            let config = try JSONSerialization.jsonObject(with: data) as? [String: String],
            let namespace = config["namespace"], let key = config["key"]
        else { throw AgentProcessError("sfnode serve wrote no client configuration at \(flow.clientConfig)") }
        return try await login(flow.apiURL, namespace: namespace, key: key)
    }

    /// A token for `namespace` with `key`; throws with the answer when login is refused.
    static func login(_ apiURL: String, namespace: String, key: String) async throws -> TenantClient {
        let anonymous = TenantClient(apiURL: apiURL, namespace: namespace, token: nil)
        let answer = try anonymous.send("POST", "/auth", json: ["namespace": namespace, "key": key])
        guard answer.status == 200, let token = answer.object["access_token"] as? String else {
            throw AgentProcessError("login to \(namespace) refused: \(answer)")
        }
        return TenantClient(apiURL: apiURL, namespace: namespace, token: token)
    }

    /// A new namespace with one key, made by this (admin) client, and logged in.
    func makeTenant(_ name: String) async throws -> TenantClient {
        let key = "k-" + UUID().uuidString
        let made = try send("POST", "/auth/namespaces", json: ["namespace": name, "key_name": "main", "key": key])
        guard made.status == 200 else { throw AgentProcessError("namespace \(name) not made: \(made)") }
        return try await Self.login(apiURL, namespace: name, key: key)
    }

    /// `METHOD PATH` with a JSON body (an object encoded here) and this client's token.
    func send(_ method: String, _ path: String, json body: [String: Any]) throws -> Answer {
        try send(method, path, raw: String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self))
    }

    /// `METHOD PATH` with `raw` as the body exactly as given (a body JSONSerialization cannot write,
    /// such as 1e300), or with the file at `file`, or none.
    func send(_ method: String, _ path: String, raw: String? = nil, file: String? = nil, headers: [String] = []) throws -> Answer {
        var argv = ["/usr/bin/curl", "-sS", "--max-time", "60", "-X", method, "-o", "-", "-w", "\n%{http_code}"]
        if let token { argv += ["-H", "Authorization: Bearer \(token)"] }
        for header in headers { argv += ["-H", header] }
        var bodyFile: String?
        if let raw {
            let path = NSTemporaryDirectory() + "sft-body-" + UUID().uuidString
            try Data(raw.utf8).write(to: URL(fileURLWithPath: path))
            bodyFile = path
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@" + path]
        } else if let file {
            argv += ["-H", "Content-Type: application/octet-stream", "--data-binary", "@" + file]
        }
        defer { if let bodyFile { try? FileManager.default.removeItem(atPath: bodyFile) } }
        let output = try ChildProcess.run(
            ["/usr/bin/nsenter", "--net=/proc/\(getpid())/ns/net", "--"] + argv + [apiURL + path])
        let lines = output.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        guard output.status == 0, let last = lines.last, let status = Int(last) else {
            throw AgentProcessError("curl \(method) \(path) failed (\(output.status)): \(output.stderr)")
        }
        return Answer(status: status, text: lines.dropLast().joined(separator: "\n"))
    }

    /// Whether the server still answers its capability page: the process did not die.
    func isUp() -> Bool {
        ((try? TenantClient(apiURL: apiURL, namespace: namespace, token: nil).send("GET", "/"))?.status) == 200
    }
}
