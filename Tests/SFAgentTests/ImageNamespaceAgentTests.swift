import Foundation
import SFAgent
import SFBlobs
import SFControl
import SFStore
import Testing

/// The agent checks a base against the instance's namespace again, whatever the API checked: an
/// instance row naming another namespace's private upload (forged in the store, or written before
/// the API checked) fails its create with a clear error, and nothing is booted from it.
@Suite(.serialized) struct ImageNamespaceAgentTests {
    @Test func anInstanceNamingAForeignUploadFailsAndNothingIsBooted() async throws {
        try await withImageLab { lab in
            let resolver = lab.resolver()
            // The victim's private upload, made as the use cases make one.
            let uploads = UploadSessions(blobs: resolver.blobs, records: lab.store, directory: lab.storage + "/uploads")
            let upload = try await uploads.create(namespace: "victim")
            try await uploads.append(uuid: upload.uuid, bytes: try Data(contentsOf: URL(fileURLWithPath: try lab.rawImage("db.raw", megabytes: 1))))
            let blob = try await uploads.finish(uuid: upload.uuid)
            let artifact = Artifact(type: .image, name: "db-image", sourceURL: "sf://upload/victim/db-image", namespace: "victim")
            try await lab.store.createArtifact(artifact)
            try await lab.store.addArtifactVersion(artifactUUID: artifact.uuid, blobUUID: blob.uuid, lastModified: nil, contentLength: nil)

            let (_, runner) = try await lab.agent(images: resolver)
            let forged = Instance(name: "thief", namespace: "tenant", cpus: 1, memory: 256, diskSpec: [DiskSpec(base: "sf://upload/victim/db-image")])
            try await lab.store.createInstance(forged)
            let (job, instance) = try await lab.runCreate(forged, with: runner)
            #expect(job.state == .failed && job.attempts == 1, "not found is not retried: \(job)")
            #expect(instance.state == .creatingError)
            let message = try #require(instance.errorMessage)
            #expect(message.contains("sf://upload/victim/db-image") && message.contains("namespace tenant") && message.contains("artifact not found"), "\(message)")
            #expect(try await lab.store.references(holderType: "instance", holderUUID: forged.uuid.uuidString).isEmpty)
            #expect(lab.cachedImages(resolver).isEmpty, "nothing was prepared to boot: \(lab.cachedImages(resolver))")

            // The owner's instance resolves the same base: the refusal above is the namespace's.
            let own = try await resolver.base(
                "sf://upload/victim/db-image", cdrom: false, instance: UUID(), namespace: "victim", mode: .cachedOnly) { _ in }
            #expect(own.blobUUID == blob.uuid)
        }
    }
}
