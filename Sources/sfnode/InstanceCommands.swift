import ArgumentParser
import Foundation
import SFAPI
import SFControl
import SFStore

/// `sfnode instance …`: sf-client's instance verbs, with its argument syntax.
struct InstanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instance", abstract: "Create, list, show, delete and power instances.",
        subcommands: [
            Create.self, List.self, Show.self, Delete.self, PowerOn.self, PowerOff.self, Reboot.self, Pause.self,
            Unpause.self, Events.self, ConsoleData.self, ConsoleDelete.self, Snapshot.self,
        ])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an instance and wait until it runs.",
            discussion: "Example: sfnode instance create web 1 1024 -d 8@debian:12 -f mynet")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's name (a DNS label).") var name: String
        @Argument(help: "vCPUs.") var cpus: Int
        @Argument(help: "Memory in MiB.") var memory: Int
        @Option(name: .short, help: "A disk: SIZE (GiB, blank) or SIZE@BASE (a URL, label:NAME, sf://blob/UUID, debian:12 …).")
        var disk: [String] = []
        @Option(name: .short, help: "An interface on a network: NET or NET@ADDRESS.") var network: [String] = []
        @Option(name: .short, help: "An interface on a network with a floating address: NET or NET@ADDRESS.") var floated: [String] = []
        @Option(name: [.customShort("i"), .long], help: "A file holding the ssh public key the config drive gives the guest.")
        var sshkey: String?
        @Option(name: [.customShort("I"), .long], help: "The ssh public key the config drive gives the guest, as text.")
        var sshkeydata: String?
        @Option(name: [.customShort("u"), .long], help: "A file of user data the config drive gives the guest.")
        var userdata: String?
        @Option(name: [.customShort("U"), .long], help: "The user data, base64 encoded.")
        var encodeduserdata: String?
        @Option(help: "The config drive: openstack-disk (a config-2 disk) or none.")
        var configdrive = InstanceConfig.ConfigDrive.openstackDisk.rawValue
        @Option(help: "Place the instance on this node.") var forcePlacement: String?
        @Flag(help: "Return once the instance is queued instead of waiting until it runs.") var noWait = false
        @Option(help: "How long to wait, in seconds.") var timeout = 900

        func run() async throws {
            let control = try options.control()
            let request = InstanceRequest(
                name: name, cpus: cpus, memoryMiB: memory, disks: try disk.map(DiskSpec.parse(commandLine:)),
                networks: try network.map { try NetworkRequest.parse(commandLine: $0) }
                    + floated.map { try NetworkRequest.parse(commandLine: $0, float: true) },
                namespace: options.namespace, forcePlacement: forcePlacement, config: try config())
            var (instance, _) = try await control.createInstance(request)
            if !noWait { instance = try await InstanceCommand.waitUntilSettled(instance, control, options, timeout: timeout) }
            try await InstanceCommand.show(instance, control, options)
            if instance.state.isError { throw ExitCode(1) }
        }

        /// The guest's configuration from sf-client's options: the data options win over the file
        /// ones, as in sf-client; checking the key and the user data is the use case's job.
        func config() throws -> InstanceConfig {
            guard let drive = InstanceConfig.ConfigDrive(rawValue: configdrive.lowercased()) else {
                throw ValidationError("--configdrive '\(configdrive)' is not one of openstack-disk, none")
            }
            var config = InstanceConfig(configDrive: drive)
            if let sshkey {
                // A key file ends with a newline; the key itself is the one line.
                config.sshKey = String(decoding: try Self.read(sshkey, "--sshkey"), as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            if let sshkeydata { config.sshKey = sshkeydata }
            if let userdata { config.userData = try Self.read(userdata, "--userdata").base64EncodedString() }
            if let encodeduserdata { config.userData = encodeduserdata }
            return config
        }

        static func read(_ path: String, _ option: String) throws -> Data {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("\(option) \(path): no such readable file")
            }
            return data
        }
    }

    struct Snapshot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Snapshot an instance's disk 0 (or one device, or all disks) and wait until the copies are blobs.",
            discussion: "Each disk's copy becomes the newest version of its snapshot artifact, which boots as sf://snapshot/ARTIFACT_UUID.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's UUID or name.") var instance: String
        @Flag(name: [.customShort("a"), .long], help: "Snapshot all disks, not just disk 0.") var all = false
        @Option(name: [.customShort("d"), .long], help: "Snapshot this device (such as vdb) instead of disk 0.") var device: String?
        @Option(name: [.customShort("l"), .customLong("label_name"), .customLong("label-name")], help: "Point this label at the snapshot.")
        var labelName: String?
        @Flag(help: "With a label, delete the snapshot artifact once the label holds the copy (or keep it, the default).")
        var afterLabel = AfterLabel.retainSnapshotAfterLabel
        @Flag(help: "Keep the copy on its base image (qemu-img -B), or flatten the chain (the default).") var copy = Copy.flatten

        /// sf-client's `--delete-snapshot-after-label/--retain-snapshot-after-label`.
        enum AfterLabel: String, EnumerableFlag { case deleteSnapshotAfterLabel, retainSnapshotAfterLabel }
        /// sf-client's `--thin/--flatten`.
        enum Copy: String, EnumerableFlag { case thin, flatten }

        var deleteSnapshotAfterLabel: Bool { afterLabel == .deleteSnapshotAfterLabel }
        var thin: Bool { copy == .thin }
        @Option(help: "How long to wait, in seconds.") var timeout = 3600

        func run() async throws {
            let control = try options.control()
            let request = SnapshotRequest(
                all: all, device: device, thin: thin, labelName: labelName, deleteSnapshotAfterLabel: deleteSnapshotAfterLabel)
            let snapshot = try await control.snapshotInstance(instance, namespace: options.namespace, request: request)
            try await control.waitForSnapshot(snapshot, timeout: .seconds(timeout))
            var label: Artifact?
            if let labelName, !snapshot.plan.targets.isEmpty {
                let (blobControl, storage) = try options.blobControl()
                label = try await blobControl.labelSnapshot(
                    snapshot, name: labelName, device: device, deleteSnapshot: deleteSnapshotAfterLabel, storage: storage)
            }
            if options.json {
                var out: [String: JSONValue] = [:]
                for target in snapshot.plan.targets {
                    out[target.device] = .object([
                        "source_url": .string(target.sourceURL), "artifact_uuid": .string(target.artifactUUID.lowercasedString),
                        "blob_uuid": .string(target.blobUUID.lowercasedString),
                    ])
                }
                if let label { out["label"] = .string(label.uuid.lowercasedString) }
                return try Output(json: true).printJSON(out)
            }
            if snapshot.plan.targets.isEmpty { print("no disk of instance \(snapshot.instance.uuid.lowercasedString) to snapshot") }
            for target in snapshot.plan.targets {
                print("\(target.device): blob \(target.blobUUID.lowercasedString), artifact \(target.artifactUUID.lowercasedString) (sf://snapshot/\(target.artifactUUID.lowercasedString))")
            }
            if let label { print("label \(labelName ?? "") (\(label.uuid.lowercasedString)) points at the snapshot") }
        }
    }

    struct ConsoleData: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "consoledata", abstract: "Print the end of an instance's serial console log.",
            discussion: "Read on the instance's node. LENGTH bytes from the end (default 10240); -1 prints the whole log (write it as `-- -1` or `--length -1`).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's UUID or name.") var instance: String
        @Argument(help: "How many bytes from the end (sf-client's LENGTH).") var length: Int?
        // Unconditional, so that `--length -1` takes -1 as its value rather than as an option.
        @Option(name: .customLong("length"), parsing: .unconditional, help: "The same as LENGTH (-1: the whole log).")
        var lengthOption: Int?

        func run() async throws {
            let control = try options.control()
            let found = try await control.instance(instance, namespace: options.namespace)
            let data = try await control.consoleData(found.uuid.lowercasedString, length: lengthOption ?? length)
            if options.json {
                return try Output(json: true).printJSON(["instance_uuid": found.uuid.lowercasedString, "data": String(decoding: data, as: UTF8.self)])
            }
            // On a terminal, as sf-client does: a guest's escape sequences must not drive the user's terminal.
            if isatty(STDOUT_FILENO) == 1 {
                FileHandle.standardOutput.write(Data(Output.safe(String(decoding: data, as: UTF8.self), keepingLines: true).utf8))
            } else {
                FileHandle.standardOutput.write(data)
            }
        }
    }

    struct ConsoleDelete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "consoledelete", abstract: "Clear an instance's serial console log (on its node).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's UUID or name.") var instance: String

        func run() async throws {
            let control = try options.control()
            let found = try await control.instance(instance, namespace: options.namespace)
            try await control.clearConsoleData(found.uuid.lowercasedString)
            if options.json { return try Output(json: true).printJSON(["instance_uuid": found.uuid.lowercasedString, "console": "cleared"]) }
            print("console log of instance \(found.uuid.lowercasedString) (\(found.name)) cleared")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List instances.")
        @OptionGroup var options: ClientOptions
        @Flag(help: "Include deleted instances.") var all = false

        func run() async throws {
            let control = try options.control()
            let instances = try await control.instances(namespace: options.namespace, includeDeleted: all)
            let missing = try await control.missingNodes()
            let output = Output(json: options.json)
            if options.json { return try output.printJSON(instances) }
            output.printTable(
                ["uuid", "name", "namespace", "cpus", "memory", "node", "state", "power"],
                instances.map {
                    [$0.uuid.lowercasedString, $0.name, $0.namespace, "\($0.cpus)", "\($0.memory)", $0.node ?? "-", $0.state.rawValue, Control.shownPowerState(of: $0, missingNodes: missing)]
                })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an instance and its interfaces.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's UUID or name.") var instance: String
        @Flag(help: "Show its snapshots too (sf-client's --snapshots).") var snapshots = false

        func run() async throws {
            let control = try options.control()
            let found = try await control.instance(instance, namespace: options.namespace)
            guard snapshots else { return try await InstanceCommand.show(found, control, options) }
            let versions = try await control.instanceSnapshots(found.uuid.lowercasedString, namespace: options.namespace)
            if options.json {
                // As sf-client prints it: the instance with its snapshots under "snapshots".
                var withMetadata: [(SnapshotVersion, metadata: [String: JSONValue])] = []
                for version in versions { withMetadata.append((version, try await control.metadata(.blob, version.blob.blob.uuid))) }
                let record = try await control.instanceRecord(found.uuid.lowercasedString)
                guard case .object(var members) = try JSONValue.parse(WireJSON.instance(record, missingNodes: try await control.missingNodes())) else { return }
                members["snapshots"] = try JSONValue.parse(WireJSON.snapshots(withMetadata))
                return try Output(json: true).printJSON(JSONValue.object(members))
            }
            try await InstanceCommand.show(found, control, options)
            Output(json: false).printTable(
                ["snapshot", "device", "version", "blob", "state"],
                versions.map { [$0.artifact.uuid.lowercasedString, $0.device, "\($0.version.index)", $0.blob.blob.uuid.lowercasedString, $0.blob.blob.state.rawValue] })
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an instance and wait until it is gone.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's UUID or name.") var instance: String
        @Flag(help: "Return once the deletion is queued.") var noWait = false
        @Option(help: "How long to wait, in seconds.") var timeout = 300

        func run() async throws {
            let control = try options.control()
            var deleted = try await control.deleteInstance(instance, namespace: options.namespace)
            if !noWait { deleted = try await InstanceCommand.waitUntilSettled(deleted, control, options, timeout: timeout, deleting: true) }
            if options.json { return try Output(json: true).printJSON(deleted) }
            print("instance \(deleted.uuid.lowercasedString) (\(deleted.name)) is \(deleted.state.rawValue)")
        }
    }

    struct Reboot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reboot an instance (soft unless --hard).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's UUID or name.") var instance: String
        @Flag(help: "Reset the instance instead of asking its OS to reboot.") var hard = false

        func run() async throws { try await InstanceCommand.power(hard ? .reboothard : .rebootsoft, instance, options) }
    }

    struct Events: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an instance's events, newest first.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The instance's UUID or name.") var instance: String
        @Option(help: "How many events to show (at most 1000).") var limit = 100
        @Flag(help: "Keep printing new events as they are recorded (Ctrl-C to stop).") var follow = false

        func run() async throws {
            let control = try options.control()
            let found = try await control.instance(instance, namespace: options.namespace)
            try await EventsCommand.printEvents(.instance, found.uuid, control: control, limit: limit, follow: follow, json: options.json)
        }
    }

    static func power(_ operation: PowerOperation, _ reference: String, _ options: ClientOptions) async throws {
        // Answers when the job is done, as the API does; the result is the instance's power state.
        let instance = try await options.control().power(operation, reference, namespace: options.namespace)
        let uuid = instance.uuid.lowercasedString
        if options.json {
            return try Output(json: true).printJSON(["instance_uuid": uuid, "operation": operation.rawValue, "power_state": instance.powerState.rawValue])
        }
        print("\(operation.verb) of instance \(uuid) (\(instance.name)): power state \(instance.powerState.rawValue)")
    }

    /// Waits until the instance leaves its transitional states (or is deleted, when `deleting`),
    /// showing the progress its events report ("fetching …, 30 %").
    static func waitUntilSettled(
        _ instance: Instance, _ control: Control, _ options: ClientOptions, timeout: Int, deleting: Bool = false
    ) async throws -> Instance {
        let progress = options.json ? nil : ProgressDisplay()
        defer { progress?.finish() }
        let deadline = ContinuousClock.now + .seconds(timeout)
        var current = instance
        while ContinuousClock.now < deadline {
            current = try await control.instance(current.uuid.lowercasedString)
            let settled = deleting ? (current.state == .deleted || current.state.isError) : (current.state == .created || current.state.isError || current.state == .deleted)
            if settled { return current }
            let latest = try await control.events(.instance, current.uuid, limit: 1).first
            let message = latest.map { "\(current.state.rawValue): \($0.message)" } ?? current.state.rawValue
            progress?.update(message, fraction: latest.flatMap { percent(in: $0.message) })
            try await Task.sleep(for: .milliseconds(250))
        }
        throw ValidationError(
            "instance \(current.uuid.lowercasedString) is still \(current.state.rawValue) after \(timeout) s; follow it with sfnode instance events --follow \(current.uuid.lowercasedString)")
    }

    /// The percentage an event message reports, such as "fetching blob …, 30 %", as a fraction.
    static func percent(in message: String) -> Double? {
        guard let range = message.range(of: #"(\d{1,3}(\.\d+)?) ?%"#, options: .regularExpression) else { return nil }
        return Double(message[range].filter { $0.isNumber || $0 == "." }).map { $0 / 100 }
    }

    static func show(_ instance: Instance, _ control: Control, _ options: ClientOptions) async throws {
        let interfaces = try await control.interfaces(ofInstance: instance)
        let metadata = try await control.metadata(.instance, instance.uuid)
        let output = Output(json: options.json)
        // The API's own view, byte for byte.
        if options.json { return print(WireJSON.instance(try await control.instanceRecord(instance.uuid.lowercasedString), missingNodes: try await control.missingNodes())) }
        output.printFields([
            ("uuid", instance.uuid.lowercasedString), ("name", instance.name), ("namespace", instance.namespace), ("cpus", "\(instance.cpus)"),
            ("memory", "\(instance.memory)"), ("node", instance.node ?? "none"), ("state", instance.state.rawValue),
            ("power state", Control.shownPowerState(of: instance, missingNodes: try await control.missingNodes())), ("error message", instance.errorMessage ?? "none"),
        ] + instance.diskSpec.enumerated().map { index, disk in
            ("disk \(index)", "\(disk.type.rawValue) \(disk.size.map { "\($0) GiB" } ?? "base size") \(disk.base.map { "from \($0)" } ?? "blank")")
        } + interfaces.map { interface in
            ("interface \(interface.order)", "\(interface.uuid.lowercasedString) \(interface.macaddr) \(interface.ipv4.orNone) floating \(interface.floating.orNone) \(interface.state.rawValue)")
        } + metadata.keys.sorted().map { ("metadata \($0)", (try? metadata[$0]?.jsonText()) .flatMap { $0 } ?? "") })
    }
}

/// sf-client's one-word power verbs: `sfnode instance poweron INSTANCE` and so on.
struct PowerOn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "poweron", abstract: "Power an instance on.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The instance's UUID or name.") var instance: String
    func run() async throws { try await InstanceCommand.power(.poweron, instance, options) }
}

struct PowerOff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "poweroff", abstract: "Power an instance off.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The instance's UUID or name.") var instance: String
    func run() async throws { try await InstanceCommand.power(.poweroff, instance, options) }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Pause an instance.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The instance's UUID or name.") var instance: String
    func run() async throws { try await InstanceCommand.power(.pause, instance, options) }
}

struct Unpause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unpause", abstract: "Unpause an instance.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The instance's UUID or name.") var instance: String
    func run() async throws { try await InstanceCommand.power(.unpause, instance, options) }
}
