/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held. For
/// state the kernel or libvirt reaches asynchronously (an event delivered, a thread named).
public func eventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}
