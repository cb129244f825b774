import Crypto
import Foundation
import HummingbirdBcrypt
import JWTKit
import Logging
import NIOPosix
import SFStore
import Synchronization

/// Issues and checks bearer tokens, as Shaken Fist's `POST /auth` does.
///
/// A namespace's keys are stored only as bcrypt hashes (salted, cost 12: about a quarter second of
/// one core per check, which bounds guessing). `POST /auth` with a namespace and a key that matches
/// one of them gets a JWT signed with HS256 under the cluster's secret, naming the namespace, the
/// key and the key's nonce, and expiring after ``tokenLifetime``. Every request then verifies the
/// signature and expiry, and that the namespace still exists and the key still has that nonce:
/// deleting or replacing a key revokes its tokens. That last check is cached for a few seconds so
/// that a busy client does not cost a store read per request.
public final class Authenticator: Sendable {
    /// How long a token lasts (Shaken Fist: 15 minutes).
    public let tokenLifetime: Duration
    /// The issuer claim (Shaken Fist's ZONE).
    public static let issuer = "sfnode"
    /// bcrypt's cost factor for new keys.
    public static let bcryptCost: UInt8 = 12
    /// The store setting holding the signing secret, shared by every API server of the cluster.
    static let secretSetting = "api.jwt-secret"
    /// How long a confirmed (namespace, key, nonce) is trusted before the store is asked again.
    static let confirmationLifetime: Duration = .seconds(5)

    private let records: any AuthRecords
    private let keys: JWTKeyCollection
    /// Tokens already verified, with who they stand for, until when they are valid and until when
    /// the verification is trusted: a busy client's requests then cost a dictionary lookup, not an
    /// HMAC, a JSON decode and a store read each.
    private let confirmed = Mutex<[String: Confirmation]>([:])

    struct Confirmation: Sendable {
        let caller: Caller
        let expires: Date
        let trustedUntil: ContinuousClock.Instant
    }
    private let logger: Logger

    private init(records: any AuthRecords, keys: JWTKeyCollection, tokenLifetime: Duration, logger: Logger) {
        self.records = records
        self.keys = keys
        self.tokenLifetime = tokenLifetime
        self.logger = logger
    }

    /// An authenticator signing with the cluster's secret, made (once, for the whole cluster) on
    /// first use.
    public static func make(records: any AuthRecords, tokenLifetime: Duration = .seconds(900), logger: Logger) async throws -> Authenticator {
        let fresh = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
        let secret = try await records.settingCreatingIfAbsent(secretSetting, value: fresh)
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return Authenticator(records: records, keys: keys, tokenLifetime: tokenLifetime, logger: logger)
    }

    /// A bcrypt hash of `secret` for storing, computed off the cooperative pool.
    public static func hash(_ secret: String) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(secret, cost: bcryptCost) }
    }

    /// Whether `secret` matches a stored hash, checked off the cooperative pool. At most one check
    /// per core runs at once: `POST /auth` needs no token, and a flood of guesses must queue rather
    /// than take every thread the server has.
    public static func verify(_ secret: String, hash: String) async throws -> Bool {
        await verifications.acquire()
        do {
            let matches = try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(secret, hash: hash) }
            await verifications.release()
            return matches
        } catch {
            await verifications.release()
            throw error
        }
    }

    private static let verifications = AsyncGate(limit: max(1, ProcessInfo.processInfo.activeProcessorCount))

    /// A token for whoever holds a key of `namespace`, or a 401/404 as Shaken Fist answers.
    public func issueToken(namespace: String, secret: String) async throws -> IssuedToken {
        guard try await records.liveNamespace(namespace) != nil else { throw APIError(.notFound, "namespace not found") }
        guard let key = try await Self.key(matching: secret, namespace: namespace, in: records) else {
            logger.notice("authentication refused", metadata: ["namespace": "\(namespace)"])
            throw APIError(.unauthorized, "unauthorized")
        }
        let now = Date()
        let claims = TokenClaims(
            sub: SubjectClaim(value: namespace), key: key.name, nonce: key.nonce, iss: IssuerClaim(value: Self.issuer),
            iat: IssuedAtClaim(value: now), exp: ExpirationClaim(value: now.addingTimeInterval(Double(tokenLifetime.components.seconds))))
        let token = try await keys.sign(claims)
        logger.info("token issued", metadata: ["namespace": "\(namespace)", "key.name": "\(key.name)"])
        return IssuedToken(accessToken: token, tokenType: "Bearer", expiresIn: Int(tokenLifetime.components.seconds))
    }

    /// The key of `namespace` whose stored hash `secret` matches, or nil.
    static func key(matching secret: String, namespace: String, in records: any AuthRecords) async throws -> NamespaceKey? {
        for key in try await records.keys(namespace: namespace) where try await verify(secret, hash: key.hash) { return key }
        return nil
    }

    /// The caller a bearer token stands for, or 401 (which makes the client authenticate again).
    public func caller(bearer token: String) async throws -> Caller {
        let now = ContinuousClock.now
        if let known = confirmed.withLock({ $0[token] }), known.trustedUntil > now, known.expires > Date() { return known.caller }
        let claims: TokenClaims
        do {
            claims = try await keys.verify(token, as: TokenClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw APIError(.unauthorized, "token has expired")
        } catch {
            throw APIError(.unauthorized, "invalid JWT in Authorization header")
        }
        let caller = Caller(namespace: claims.sub.value, keyName: claims.key)
        guard try await isLive(namespace: caller.namespace, key: caller.keyName, nonce: claims.nonce) else {
            throw APIError(.unauthorized, "token revoked: its namespace or key no longer exists")
        }
        confirmed.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[token] = Confirmation(caller: caller, expires: claims.exp.value, trustedUntil: now + Self.confirmationLifetime)
        }
        return caller
    }

    private func isLive(namespace: String, key: String, nonce: String) async throws -> Bool {
        guard try await records.liveNamespace(namespace) != nil else { return false }
        return try await records.keys(namespace: namespace).contains { $0.name == key && $0.nonce == nonce }
    }

    /// Forgets confirmations, so a deleted key's tokens stop working at once in this process.
    public func forgetConfirmations() {
        confirmed.withLock { $0.removeAll() }
    }
}

/// `POST /auth`'s answer.
public struct IssuedToken: Sendable {
    /// The bearer token.
    public let accessToken: String
    /// Always `Bearer`.
    public let tokenType: String
    /// Seconds until it expires.
    public let expiresIn: Int
}

extension IssuedToken: WireValue {
    func write(to json: inout JSONWriter) {
        json.object { json in
            json.put("access_token", accessToken)
            json.put("token_type", tokenType)
            json.put("expires_in", expiresIn)
        }
    }
}

/// What a token says: who (namespace and key), which incarnation of the key (nonce), and until when.
struct TokenClaims: JWTPayload {
    var sub: SubjectClaim
    var key: String
    var nonce: String
    var iss: IssuerClaim
    var iat: IssuedAtClaim
    var exp: ExpirationClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        guard iss.value == Authenticator.issuer else { throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "not issued by sfnode") }
    }
}

/// A counting semaphore for async code: at most `limit` holders at once, the others wait in order.
actor AsyncGate {
    private let limit: Int
    private var holders = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        self.limit = limit
    }

    func acquire() async {
        if holders < limit {
            holders += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            holders -= 1
        } else {
            // The slot passes straight to the next waiter.
            waiting.removeFirst().resume()
        }
    }
}
