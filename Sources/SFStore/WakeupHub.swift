import Foundation
import Logging
import SFSystem
import Synchronization

/// Wake-ups: how a claimer learns, without polling, that a job may have become claimable.
///
/// In this process, a commit that enqueues or finishes jobs fires every live ``NodeStore/wakeups()``
/// stream at once. The other processes learn of it by the backend's own means: with SQLite the same
/// commit rings a doorbell file beside the database (`<store>.wakeup`, see ``FileDoorbell`` for why
/// a file and inotify) that each listening process watches; with PostgreSQL the transaction sends
/// one NOTIFY that every node's listening connection receives (PostgresListener.swift). One signal
/// per transaction, never per row, and signals in a burst coalesce. Delivery is best effort: a
/// claimer still polls the queue now and then, which also catches delayed jobs coming due and
/// leases that lapse.
/// Fans a "something changed" signal out to every live `wakeups()` stream of one store. Each stream
/// buffers at most one signal: a waiter only needs to know "look again", not how many times.
final class WakeupHub: Sendable {
    private struct State {
        var continuations: [UUID: AsyncStream<Void>.Continuation] = [:]
        /// The doorbell's watch, held while anyone subscribes.
        var watch: FileWatcher.Watch?
    }

    private let state = Mutex(State())
    /// Nil when the doorbell file could not be opened: other processes then see this one's jobs at
    /// their next poll.
    private let doorbell: FileDoorbell?
    private let logger: Logger

    /// A hub whose doorbell is `<storePath>.wakeup`; without a path, a hub of this process only
    /// (its backend tells the other processes itself, and calls ``fire()`` when they tell it).
    init(storePath: String?, logger: Logger) {
        self.logger = logger
        guard let storePath else {
            doorbell = nil
            return
        }
        do {
            doorbell = try FileDoorbell(path: storePath + ".wakeup")
        } catch {
            logger.warning(
                "the store's wake-up doorbell cannot be opened; other processes see new jobs only when they poll",
                metadata: ["error": "\(error)"])
            doorbell = nil
        }
    }

    func subscribe() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        let needsWatch = state.withLock { state in
            state.continuations[id] = continuation
            return state.watch == nil
        }
        if needsWatch { startWatching() }
        continuation.onTermination = { [weak self] _ in
            // The last subscriber gone, the doorbell's watch goes too.
            let watch = self?.state.withLock { state -> FileWatcher.Watch? in
                state.continuations.removeValue(forKey: id)
                guard state.continuations.isEmpty else { return nil }
                defer { state.watch = nil }
                return state.watch
            }
            watch?.cancel()
        }
        return stream
    }

    private func startWatching() {
        guard let doorbell else { return }
        let watch: FileWatcher.Watch
        do {
            watch = try FileWatcher.shared.get().watch(path: doorbell.path) { [weak self] in self?.fire() }
        } catch {
            logger.warning(
                "cannot watch the store's wake-up doorbell; jobs from other processes are seen only when polling",
                metadata: ["error": "\(error)"])
            return
        }
        // Two first subscribers racing both made a watch: keep one.
        let extra = state.withLock { state -> FileWatcher.Watch? in
            if state.watch == nil && !state.continuations.isEmpty {
                state.watch = watch
                return nil
            }
            return watch
        }
        extra?.cancel()
    }

    /// Wakes this process's streams only.
    func fire() {
        let all = state.withLock { Array($0.continuations.values) }
        for continuation in all { continuation.yield() }
    }

    /// Wakes this process's streams and rings the doorbell for every other process.
    func signal() {
        fire()
        doorbell?.ring()
    }
}
