import ArgumentParser
import Foundation
import Logging
import SFAgent
import SFControl
import SFDaemonSupport
import SFLibvirt
import SFNetlink
import SFStore
import SFSystem

/// `sfnode job …` and `sfnode events …`: the operator's view of the store the agent works from.
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job", abstract: "Submit and list jobs.", subcommands: [Submit.self, List.self])

    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Submit a job from JSON: {\"kind\": …, \"target\": \"node:NAME\" | \"role:network-node\", \"payload\": {…}}; jobs about one object run in order.")

        @Option(help: "The configuration file.") var config: String?
        @Argument(help: "The job as JSON, or - to read it from standard input.") var json: String

        func run() async throws {
            let store = try OperatorStore.open(config)
            let text = json == "-" ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) : json
            let request = try JobRequest.parse(text)
            // Checked here, by name: an unknown kind or a payload that does not decode is never queued.
            let control = Control(store: store, logger: Logger(label: "sfnode.job"))
            let job = try await control.submit(kind: request.kind, payload: request.payload, target: request.target)
            print("queued job \(job.id) (\(job.kind) for \(job.target))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")

        @Option(help: "The configuration file.") var config: String?
        @Option(help: "How many jobs to show.") var limit = 50

        func run() async throws {
            let store = try OperatorStore.open(config)
            for job in try await store.jobs(states: [], limit: limit) {
                let error = job.lastError.map { " error: \($0)" } ?? ""
                print("\(job.id)\t\(job.state.rawValue)\t\(job.kind)\t\(job.target)\tattempts \(job.attempts)/\(job.maxAttempts)\(error)")
            }
        }
    }
}

/// `sfnode events TYPE UUID`: an object's events, newest first, or followed live.
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Show an object's events, newest first.")

    @OptionGroup var options: ClientOptions
    @Option(help: "How many events to show (at most 1000).") var limit = 100
    @Flag(help: "Keep printing new events as they are recorded, oldest first (Ctrl-C to stop).") var follow = false
    @Flag(
        help: """
            Follow through a REST API instead of the store, from any machine: the API and its key as the real client \
            finds them (SHAKENFIST_API_URL, SHAKENFIST_NAMESPACE, SHAKENFIST_KEY, ~/.shakenfist, /etc/sf/shakenfist.json).
            """)
    var api = false
    @Argument(help: "The object type: instance, network, interface, node, blob, artifact.") var type: String
    @Argument(help: "The object's UUID (a node's name).") var uuid: String

    func run() async throws {
        guard let objectType = ObjectType(rawValue: type) else {
            throw ValidationError("'\(type)' is not an object type (\(ObjectType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        if api {
            guard follow else { throw ValidationError("--api follows events: add --follow") }
            guard let path = RemoteEvents.path(objectType, uuid) else {
                throw ValidationError("the REST API has no events of \(type)s: follow an instance, network, artifact or node")
            }
            let json = options.json
            try await RemoteEvents(configuration: try RemoteEvents.clientConfiguration()).follow(path: path, backlog: limit) { event in
                if json {
                    Swift.print(String(decoding: try Output.encoder(pretty: false).encode(event), as: UTF8.self))
                } else {
                    Swift.print(Self.line(Date(timeIntervalSince1970: event.timestamp), event.type, event.fqdn, event.message, event.duration))
                }
                fflush(nil)
            }
            return
        }
        try await Self.printEvents(objectType, try parseUUID(uuid, "object UUID"), control: try options.control(), limit: limit, follow: follow, json: options.json)
    }

    static func printEvents(_ type: ObjectType, _ uuid: UUID, control: Control, limit: Int, follow: Bool, json: Bool) async throws {
        func line(_ event: Event) throws {
            if json {
                print(String(decoding: try Output.encoder(pretty: false).encode(event), as: UTF8.self))
            } else {
                print(Self.line(event.timestamp, event.type.rawValue, event.fqdn, event.message, event.duration))
            }
        }
        if follow {
            for try await event in control.followEvents(type, uuid, backlog: limit) {
                try line(event)
                fflush(nil)
            }
        } else {
            for event in try await control.events(type, uuid, limit: limit) { try line(event) }
        }
    }
}

extension EventsCommand {
    /// An event as a line of text: time, type, node, message, and how long it took.
    static func line(_ timestamp: Date, _ type: String, _ fqdn: String, _ message: String, _ duration: Double?) -> String {
        let took = duration.map { String(format: " (%.3f s)", $0) } ?? ""
        return "\(UTCTime.iso8601(timestamp))\t\(Output.terminalSafe(type))\t\(Output.terminalSafe(fqdn))\t\(Output.terminalSafe(message))\(took)"
    }
}

/// The store named by the agent's configuration.
enum OperatorStore {
    static func open(_ config: String?) throws -> SQLStore {
        let settings = try NodeConfiguration.load(commandLinePath: config)
        return try openStore(settings: settings, logger: Logger(label: "sfnode.operator"))
    }
}

/// A job as an operator writes it.
struct JobRequest {
    var kind: String
    var target: JobTarget
    var payload: JSONValue

    /// Parses the JSON, naming the field that is missing or wrong.
    static func parse(_ text: String) throws -> JobRequest {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        } catch {
            throw ValidationError("the job is not valid JSON: \(error)")
        }
        guard case .object(let fields) = value else { throw ValidationError("the job must be a JSON object") }
        guard let kind = fields["kind"]?.stringValue, !kind.isEmpty else { throw ValidationError("the job has no \"kind\" string") }
        guard let targetText = fields["target"]?.stringValue else {
            throw ValidationError("the job has no \"target\" string (node:NAME or role:network-node)")
        }
        let target = try JobTarget.parse(targetText)
        return JobRequest(
            kind: kind, target: target, payload: fields["payload"] ?? .object([:]))
    }
}

/// `sfnode state`: the node as the reconciler sees it, desired (the store) beside actual (the
/// host), read-only. A line marked `drift` is what the next reconciliation pass will repair.
struct StateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state", abstract: "Show desired (store) against actual (host) state for this node, read-only.")

    @Option(help: "The configuration file.") var config: String?

    func run() async throws {
        let settings = try NodeConfiguration.load(commandLinePath: config)
        var logger = Logger(label: "sfnode.state")
        logger.logLevel = .warning
        let store = try openStore(settings: settings, logger: logger)
        let layout = hostLayout(settings: settings)
        let host = try NetlinkSession(namespace: settings.hostNamespace, logger: logger)
        let links = Set(try await host.links().map(\.name))
        for node in try await store.nodes() {
            let roles = node.roles.map(\.rawValue).sorted().joined(separator: ",")
            let seen = node.lastSeen.map { "\($0)" } ?? "never"
            print("node \(node.name) roles=\(roles) mesh=\(node.meshAddress.map(\.description) ?? "none") last-seen=\(seen)")
        }
        // What this node should have: the agent's own rule (HostPlanner).
        let planner = HostPlanner(
            store: store, nodeName: settings.nodeName, isNetworkNode: settings.isNetworkNode, floatingRange: settings.floatingRange,
            logger: logger)
        let kept = try await planner.kept()
        for network in kept.networks {
            let vxid = UInt32(truncatingIfNeeded: network.vxid)
            let bridge = links.contains(layout.bridge(vxid))
            let vxlan = links.contains(layout.vxlan(vxid))
            let flood = vxlan ? ((try? await host.floodEntries(device: layout.vxlan(vxid)))?.map(\.description).sorted().joined(separator: ",") ?? "?") : ""
            var line = "network \(network.uuid.lowercasedString) \(network.state.rawValue) bridge=\(bridge) vxlan=\(vxlan) flood=[\(flood)]"
            var ok = network.state != .created || (bridge && vxlan)
            if settings.isNetworkNode {
                let namespace = NetworkNamespace.exists(named: layout.namespace(of: network.uuid))
                line += " namespace=\(namespace)"
                ok = ok && (network.state != .created || namespace)
            }
            print(line + (ok ? "" : " drift"))
        }
        // Unknown is not gone: when libvirt cannot be read, no domain is reported absent.
        var domains: [UUID: String]?
        do {
            let libvirt = try LibvirtConnection(uri: settings.libvirtURI, logger: logger)
            domains = Dictionary(
                try await libvirt.domains().map { ($0.identity.uuid, $0.powerState.rawValue) }, uniquingKeysWith: { first, _ in first })
        } catch {
            print("libvirt \(settings.libvirtURI): unreadable: \(error)")
        }
        let instances = kept.instances
        let stuck = Set(HostPlanner.stuckInstances(instances, liveJobs: try await store.jobs(states: [.queued, .running], limit: 10_000)).map(\.uuid))
        for instance in instances where instance.state != .deleted {
            var line = "instance \(instance.uuid.lowercasedString) \(instance.state.rawValue) power=\(instance.powerState.rawValue)"
            if let domains {
                let actual = domains[instance.uuid] ?? "absent"
                line += " domain=\(actual)"
                if instance.state == .created && actual != instance.powerState.rawValue { line += " drift" }
            } else {
                line += " domain=unknown"
            }
            if stuck.contains(instance.uuid) { line += " stuck (no job will finish it) drift" }
            print(line)
        }
        if domains == nil {
            print("state is incomplete: libvirt could not be read; start libvirtd (scripts/setup-host) and run sfnode state again")
            throw ExitCode(2)
        }
    }
}
