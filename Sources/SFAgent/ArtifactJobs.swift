import Foundation
import SFStore

/// The artifact jobs: artifact.fetch. A fetch changes nothing on the host but the blob store, so it
/// holds no host lock, only the image lock shared (see ``HostLocks``): however slow its server, it
/// holds up no other job and no reconciliation pass.
public struct ArtifactJobs: JobHandlers {
    let context: AgentContext

    public func register(with runner: JobRunner) async {
        await runner.register(.artifactFetch) { order, _ in try await fetch(try order.uuid()) }
    }

    /// Fetches an image artifact's URL into a blob here (again only when the server's copy
    /// changed), recording progress and the outcome as events on the artifact.
    public func fetch(_ uuid: UUID) async throws {
        guard let images = context.images else { throw JobError.refusal("this agent was built without the image store") }
        let started = ContinuousClock.now
        let events = context.events
        let blob = try await context.locks.resolvingImages {
            try await images.fetchArtifact(uuid) { line in try? await events.record("artifact", uuid, .status, line) }
        }
        try await context.event("artifact", uuid, .status, "artifact fetch complete: blob \(blob.uuid.lowercasedString)", since: started)
    }
}
