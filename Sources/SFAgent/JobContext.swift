import Logging
import SFStore

/// The job a task is running, as log metadata: every line logged while a job runs, by the agent or
/// by the plumbing under it, carries `job.id`, `job.kind` and the UUIDs the job is about
/// (`instance.uuid`, `network.uuid`, `interface.uuid`, and `request.id` when the job has one), so
/// that `journalctl -u sfnode-agent INSTANCE_UUID=<uuid>` tells one instance's story.
public enum JobContext {
    @TaskLocal static var metadata: Logger.Metadata = [:]

    /// The provider to install at logging bootstrap.
    public static let metadataProvider = Logger.MetadataProvider { metadata }

    /// The metadata of `job`: its id and kind, and every `<object>_uuid` and `request_id` of its payload.
    static func metadata(of job: Job) -> Logger.Metadata {
        var result: Logger.Metadata = ["job.id": "\(job.id)", "job.kind": "\(job.kind)"]
        if case .object(let fields) = job.payload {
            for (key, value) in fields {
                guard let text = value.stringValue else { continue }
                if key.hasSuffix("_uuid") {
                    result[key.dropLast(5) + ".uuid"] = "\(text.lowercased())"
                } else if key == "request_id" {
                    result["request.id"] = "\(text)"
                }
            }
        }
        return result
    }

    /// Runs `body` with `job`'s metadata on every log line.
    static func run<T: Sendable>(_ job: Job, _ body: () async throws -> T) async rethrows -> T {
        try await $metadata.withValue(metadata(of: job), operation: body)
    }
}
