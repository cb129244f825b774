import Foundation
import SFSystem
import SFTestSupport
import Testing

/// `sfnode events --follow --api` against a server that is not an API: one that answers the
/// stream with bytes and never a line end. The command stops with an error naming the limit,
/// instead of holding everything it is sent.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs the built sfnode"))
struct RemoteEventsTests {
    @Test func aStreamThatNeverEndsALineIsRefusedNotHeld() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let uuid = UUID().uuidString.lowercased()
        server.register("/auth", data: Data(#"{"access_token": "sft-token", "token_type": "Bearer", "expires_in": 900}"#.utf8))
        server.register("/instances/\(uuid)/events", data: Data(), behaviour: .endless)
        let log = TestGuest.runDirectory + "/\(TestNames.unique(""))-follow.log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let follower = try AgentProcess.start(
            executable: try AgentProcess.executable(), arguments: ["events", "instance", uuid, "--follow", "--api"],
            environment: ["SHAKENFIST_API_URL": server.baseURL, "SHAKENFIST_NAMESPACE": "system", "SHAKENFIST_KEY": "sft-key"], log: log)
        let ended = await eventually(timeout: .seconds(60)) { !follower.isRunning }
        await follower.kill()
        #expect(ended, "the follower kept reading a stream with no line end")
        #expect(follower.logTail().contains("a line longer than 1048576 bytes; it is not an events stream"), "\(follower.logTail())")
    }
}
