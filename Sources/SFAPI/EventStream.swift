import Foundation
import Hummingbird
import NIOCore
import SFControl
import SFStore
import Synchronization

/// `GET …/events?follow=true`: an object's events as they are recorded, one JSON object per line
/// (`application/x-ndjson`, chunked), starting with its last `limit` events, oldest first.
///
/// JSON lines rather than server-sent events: SSE's one advantage is the browser's `EventSource`,
/// which cannot send the bearer token this API needs; without it, SSE's `data:` framing only adds
/// a parser to every other client. Any HTTP client that reads a body as it arrives (`curl -N`,
/// Python's `iter_lines`, `sfnode events --follow --api`) reads one event per line.
///
/// A blank line is written every ``APILimits/followHeartbeat``, so that
/// proxies and the server's own idle timeout keep the connection, and so that a follower who went
/// away is noticed (its write fails) and its slot freed. A follow ends after
/// ``APILimits/followDuration`` (the client reconnects, as it would after any drop); a namespace
/// follows at most ``APILimits/followsPerNamespace`` objects at once and the server
/// ``APILimits/followsTotal``, past which the answer is 429.
enum EventStream {
    static func response(
        _ api: API, _ object: ObjectKey, backlog: Int, only wanted: EventType?, context: APIContext
    ) async throws -> Response {
        let caller = try context.authenticated()
        let limits = context.limits
        // The slot goes back when the body is done with, whether it ran to its end, failed, or never
        // ran at all (a HEAD, a connection gone before the head was written): its release is tied to
        // the body's closure, not to code inside it.
        let slot = try FollowerSlot(api.followers, namespace: caller.namespace, limits: limits)
        let control = api.control
        let body = ResponseBody { writer in
            _ = slot
            // Started here, not before: a body that never runs must not leave a poller behind.
            let events = control.followEvents(object, backlog: backlog, interval: .milliseconds(500))
            let items = merged(events, heartbeat: limits.followHeartbeat, deadline: limits.followDuration)
            for try await item in items {
                switch item {
                case .event(let event):
                    if let wanted, event.type != wanted { continue }
                    var line = JSONWriter.encode(EventView(event: event))
                    line.append(UInt8(ascii: "\n"))
                    try await writer.write(ByteBuffer(bytes: line))
                case .heartbeat:
                    try await writer.write(ByteBuffer(string: "\n"))
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/x-ndjson", .cacheControl: "no-store"], body: body)
    }

    enum Item: Sendable {
        case event(Event)
        case heartbeat
    }

    /// The events, with a heartbeat every `heartbeat`, ending at `deadline`. The
    /// stream's consumer going away (the response's writer failed) cancels the follow's polling.
    static func merged(
        _ events: AsyncThrowingStream<Event, any Error>, heartbeat: Duration, deadline: Duration
    ) -> AsyncThrowingStream<Item, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            for try await event in events { continuation.yield(.event(event)) }
                            continuation.finish()
                        } catch {
                            continuation.finish(throwing: error)
                        }
                    }
                    group.addTask {
                        while (try? await Task.sleep(for: heartbeat)) != nil { continuation.yield(.heartbeat) }
                    }
                    group.addTask {
                        if (try? await Task.sleep(for: deadline)) != nil { continuation.finish() }
                    }
                    // The first to end (the events, or the deadline) ends the others.
                    await group.next()
                    group.cancelAll()
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// One follow's place among ``EventFollowers``, given back when the last reference goes.
final class FollowerSlot: Sendable {
    private let followers: EventFollowers
    private let namespace: String

    init(_ followers: EventFollowers, namespace: String, limits: APILimits) throws {
        try followers.take(namespace: namespace, limits: limits)
        self.followers = followers
        self.namespace = namespace
    }

    deinit {
        followers.release(namespace: namespace)
    }
}

/// Who follows events now: counted per namespace and in all, so that no tenant can hold every
/// connection or every store poll of the server.
final class EventFollowers: Sendable {
    private let counts = Mutex<(total: Int, byNamespace: [String: Int])>((0, [:]))

    /// Takes a slot for `namespace`, or throws 429 naming the limit that is full.
    func take(namespace: String, limits: APILimits) throws {
        try counts.withLock { counts in
            guard counts.total < limits.followsTotal else {
                throw APIError(.tooManyRequests, "the server follows \(limits.followsTotal) objects' events already; try again later")
            }
            guard counts.byNamespace[namespace, default: 0] < limits.followsPerNamespace else {
                throw APIError(
                    .tooManyRequests,
                    "namespace \(namespace) follows \(limits.followsPerNamespace) objects' events already; end a follow first")
            }
            counts.total += 1
            counts.byNamespace[namespace, default: 0] += 1
        }
    }

    func release(namespace: String) {
        counts.withLock { counts in
            counts.total -= 1
            counts.byNamespace[namespace, default: 1] -= 1
            if counts.byNamespace[namespace] == 0 { counts.byNamespace[namespace] = nil }
        }
    }

    /// Follows running now, for tests.
    var total: Int { counts.withLock { $0.total } }
}
