import ArgumentParser
import Foundation
import SFAPI
import SFControl
import SFStore

/// `sfnode namespace`: namespaces and their keys, for operators on a node with the store.
struct NamespaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "namespace", abstract: "Manage namespaces and the keys that authenticate to them.",
        subcommands: [
            List.self, Create.self, Delete.self, Key.self, AddTrust.self, RemoveTrust.self, GetMetadata.self, SetMetadata.self,
            DeleteMetadata.self,
        ])

    struct AddTrust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-trust", abstract: "Let another namespace see and boot this namespace's images (sf-client's add-trust).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The namespace.") var namespace: String
        @Argument(help: "The namespace to trust.") var trustedNamespace: String

        func run() async throws {
            try printTrusts(namespace, try await options.control().setTrust(of: namespace, in: trustedNamespace, true), options)
        }
    }

    struct RemoveTrust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove-trust", abstract: "Stop trusting a namespace.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The namespace.") var namespace: String
        @Argument(help: "The namespace to stop trusting.") var trustedNamespace: String

        func run() async throws {
            try printTrusts(namespace, try await options.control().setTrust(of: namespace, in: trustedNamespace, false), options)
        }
    }

    struct GetMetadata: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get-metadata", abstract: "Show a namespace's metadata.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The namespace.") var namespace: String

        func run() async throws {
            let metadata = try await options.control().metadata(.namespace(try liveNamespace(namespace, options)))
            let output = Output(json: options.json)
            if options.json { try output.printJSON(JSONValue.object(metadata)) } else {
                output.printTable(["key", "value"], metadata.keys.sorted().map { [$0, (try? metadata[$0]?.jsonText()) ?? ""] })
            }
        }
    }

    struct SetMetadata: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-metadata", abstract: "Set one metadata key of a namespace.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The namespace.") var namespace: String
        @Argument(help: "The key.") var key: String
        @Argument(help: "The value (JSON, or else taken as a string).") var value: String

        func run() async throws {
            let parsed = (try? JSONValue.parse(value)) ?? .string(value)
            try await options.control().setMetadata(.namespace(try liveNamespace(namespace, options)), key: key, value: parsed)
            if !options.json { print("metadata \(key) of namespace \(namespace) set") }
        }
    }

    struct DeleteMetadata: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete-metadata", abstract: "Remove one metadata key of a namespace.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The namespace.") var namespace: String
        @Argument(help: "The key.") var key: String

        func run() async throws {
            try await options.control().deleteMetadata(.namespace(try liveNamespace(namespace, options)), key: key)
            if !options.json { print("metadata \(key) of namespace \(namespace) removed") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List namespaces and their key names.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            let records = try options.authRecords()
            var rows: [[String]] = []
            var listed: [NamespaceListing] = []
            for namespace in try await records.namespaces() {
                let keys = try await records.keys(namespace: namespace.name).map(\.name)
                rows.append([namespace.name, namespace.state.rawValue, keys.joined(separator: ",")])
                listed.append(NamespaceListing(name: namespace.name, state: namespace.state.rawValue, keys: keys))
            }
            let output = Output(json: options.json)
            if options.json { try output.printJSON(listed) } else { output.printTable(["name", "state", "keys"], rows) }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a namespace, optionally with a first key.",
            discussion: "Example: sfnode namespace create ci --key-name deploy (prints the generated key once)")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The namespace's name.") var name: String
        @Option(help: "A first key's name.") var keyName: String?
        @Option(help: "The key itself (default: a generated one, printed once).") var key: String?

        func run() async throws {
            let control = try options.control()
            try await control.createNamespace(name, hasher: Authenticator.hash)
            if let keyName { try await addKey(control, namespace: name, name: keyName, given: key, options: options) }
            if !options.json { print("namespace \(name) created") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a namespace that holds no instances or networks, with its artifacts.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The namespace's name.") var name: String

        func run() async throws {
            let (control, storage) = try options.blobControl()
            try await control.deleteNamespace(name, storage: storage)
            print("namespace \(name) deleted; tokens of its keys no longer work")
        }
    }

    struct Key: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add or delete a namespace's keys.", subcommands: [Add.self, Remove.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "add", abstract: "Add (or replace) a key; replacing revokes the old key's tokens.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "The namespace.") var namespace: String
            @Argument(help: "The key's name.") var name: String
            @Argument(help: "The key itself (default: a generated one, printed once).") var key: String?

            func run() async throws {
                try await addKey(try options.control(), namespace: namespace, name: name, given: key, options: options)
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a key; its tokens stop working.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "The namespace.") var namespace: String
            @Argument(help: "The key's name.") var name: String

            func run() async throws {
                do {
                    try await options.control().deleteKey(namespace: namespace, name: name)
                } catch let error as ControlError where error.code == .notFound {
                    throw CommandFailure("namespace \(namespace) has no key \(name); see sfnode namespace list")
                }
                print("key \(name) of namespace \(namespace) deleted")
            }
        }
    }
}

/// Adds a key, generating it when none is given, and prints it once (it is stored only hashed).
private func addKey(_ control: Control, namespace: String, name: String, given: String?, options: ClientOptions) async throws {
    let secret = given ?? Control.generateSecret()
    try await control.addKey(namespace: namespace, name: name, secret: secret, hasher: Authenticator.hash)
    if options.json {
        try Output(json: true).printJSON(["namespace": namespace, "key_name": name, "key": given == nil ? secret : nil])
    } else if given == nil {
        print("key \(name) of namespace \(namespace): \(secret)")
        print("(stored only as a hash: keep it now; sf-client uses it with --namespace \(namespace) --key ...)")
    } else {
        print("key \(name) of namespace \(namespace) saved")
    }
}

/// A namespace's trusts after a change: Shaken Fist's `trust.full` with --json.
private func printTrusts(_ namespace: String, _ trusts: [String], _ options: ClientOptions) throws {
    if options.json {
        try Output(json: true).printJSON(JSONValue.object(["name": .string(namespace), "trust": .object(["full": .array(trusts.map(JSONValue.string))])]))
    } else {
        print("namespace \(namespace) trusts: \(trusts.joined(separator: ", "))")
    }
}

/// The name of a live namespace, or an error that says where to look.
private func liveNamespace(_ name: String, _ options: ClientOptions) async throws -> String {
    guard try await options.authRecords().liveNamespace(name) != nil else {
        throw CommandFailure("there is no namespace \(name); see sfnode namespace list")
    }
    return name
}

/// Runs an administration step, turning its API-shaped errors into the command line's.
struct NamespaceListing: Encodable {
    let name: String
    let state: String
    let keys: [String]
}

extension ClientOptions {
    /// The store's namespaces and keys.
    func authRecords() throws -> any AuthRecords { try storeAndSettings().0 }
}
