import Crypto
import Foundation
import SFStore

/// What proves a request between nodes comes from a member of the cluster: an HMAC-SHA256, under a
/// secret kept in the cluster's store, of the method, the path, the asking node's name and an expiry.
///
/// Only a process that can read the store holds the secret, and the store is what makes a node a
/// member: no key is handed out or rotated by hand. The signature covers the path, so one request's
/// headers cannot fetch another blob, and the expiry (at most ``maximumLifetime`` ahead) bounds how
/// long captured headers stay good.
public struct PeerCredentials: Sendable {
    /// The store setting holding the secret, made once for the whole cluster.
    public static let secretSetting = "cluster.peer-secret"
    /// How far ahead a signature's expiry may be; further is refused as forged or a clock gone wrong.
    public static let maximumLifetime: TimeInterval = 300
    /// The request headers: the asking node, the expiry (seconds since 1970) and the signature (hex).
    public static let nodeHeader = "X-SFNode-Node"
    public static let expiresHeader = "X-SFNode-Expires"
    public static let signatureHeader = "X-SFNode-Signature"

    let key: SymmetricKey
    /// The name this node signs as.
    public let nodeName: String

    /// Credentials under `secret` (any bytes; the setting holds base64), signing as `nodeName`.
    public init(secret: Data, nodeName: String) {
        self.key = SymmetricKey(data: SHA256.hash(data: secret))
        self.nodeName = nodeName
    }

    /// The cluster's credentials, the secret made (once for the whole cluster) on first use: two
    /// nodes starting at once agree on one secret.
    public static func load(records: any AuthRecords, nodeName: String) async throws -> PeerCredentials {
        let fresh = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
        let secret = try await records.settingCreatingIfAbsent(secretSetting, value: fresh)
        return PeerCredentials(secret: Data(secret.utf8), nodeName: nodeName)
    }

    /// The headers that sign a `method` request for `path` (the URL's path and query) made `now`.
    public func headers(method: String, path: String, now: Date = Date()) -> [(String, String)] {
        let expires = Int64(now.timeIntervalSince1970 + Self.maximumLifetime / 2)
        return [
            (Self.nodeHeader, nodeName), (Self.expiresHeader, String(expires)),
            (Self.signatureHeader, signature(method: method, path: path, node: nodeName, expires: expires)),
        ]
    }

    /// Why a request's signature is refused, or nil when it is good. Every header is text from the
    /// network: an expiry that is not a number, or is out of range, is refused, never trapped on.
    public func refusal(method: String, path: String, node: String?, expires: String?, signature given: String?, now: Date = Date()) -> String? {
        guard let node, !node.isEmpty, node.utf8.count <= 255 else { return "missing or overlong \(Self.nodeHeader)" }
        guard let expires, let seconds = Int64(expires) else { return "missing or malformed \(Self.expiresHeader)" }
        let current = now.timeIntervalSince1970
        guard Double(seconds) >= current else { return "the signature expired" }
        guard Double(seconds) <= current + Self.maximumLifetime else { return "the signature's expiry is more than \(Int(Self.maximumLifetime)) s ahead" }
        guard let given, given.utf8.count == 64 else { return "missing or malformed \(Self.signatureHeader)" }
        let expected = signature(method: method, path: path, node: node, expires: seconds)
        // Compared in constant time: how much of a guess matched must not show in the answer's timing.
        var difference: UInt8 = 0
        for (a, b) in zip(expected.utf8, given.lowercased().utf8) { difference |= a ^ b }
        return difference == 0 ? nil : "the signature does not match (not a member of this cluster?)"
    }

    func signature(method: String, path: String, node: String, expires: Int64) -> String {
        let message = "\(method)\n\(path)\n\(node)\n\(expires)"
        return BlobIngest.hex(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: key))
    }
}
