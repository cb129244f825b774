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
///
/// Logins are hostile input: every bcrypt goes through one ``FairGate`` (namespaces served in
/// turn, bounded queues), failures are throttled per namespace and per client address
/// (``LoginThrottle``), and an unknown namespace costs the same bcrypt and gets the same 401 as a
/// wrong key, so that logins do not tell which namespaces exist.
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
    /// Every bcrypt of this API, logins and new keys, shares it.
    let gate: FairGate
    let throttle: LoginThrottle
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

    private init(records: any AuthRecords, keys: JWTKeyCollection, tokenLifetime: Duration, limits: APILimits, logger: Logger) {
        self.records = records
        self.keys = keys
        self.tokenLifetime = tokenLifetime
        self.logger = logger
        // One check per core: `POST /auth` needs no token, and a flood of guesses must queue
        // rather than take every thread the server has.
        gate = FairGate(limit: ProcessInfo.processInfo.activeProcessorCount, queueLimit: limits.loginQueuePerNamespace)
        throttle = LoginThrottle(
            perNamespace: limits.loginFailuresPerNamespace, perAddress: limits.loginFailuresPerAddress, window: limits.loginWindow)
    }

    /// An authenticator signing with the cluster's secret, made (once, for the whole cluster) on
    /// first use.
    public static func make(
        records: any AuthRecords, tokenLifetime: Duration = .seconds(900), limits: APILimits = APILimits(), logger: Logger
    ) async throws -> Authenticator {
        let fresh = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
        let secret = try await records.settingCreatingIfAbsent(secretSetting, value: fresh)
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return Authenticator(records: records, keys: keys, tokenLifetime: tokenLifetime, limits: limits, logger: logger)
    }

    /// A bcrypt hash of `secret` for storing, computed off the cooperative pool (ungated: the
    /// operator's command line; the API hashes through ``hash(_:namespace:)``).
    public static func hash(_ secret: String) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(secret, cost: bcryptCost) }
    }

    /// A bcrypt hash of `secret` for a key of `namespace`, in that namespace's turn at the gate.
    func hash(_ secret: String, namespace: String) async throws -> String {
        try await gate.run(queue: namespace) { try await Self.hash(secret) }
    }

    /// Whether `secret` matches a stored hash, checked off the cooperative pool (ungated: for the
    /// operator's command line).
    public static func verify(_ secret: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(secret, hash: hash) }
    }

    /// A hash no key matches, checked for an unknown namespace so that it costs what a wrong key
    /// costs. Made on first use (a quarter second, on the thread pool).
    private static let dummyHash: String = Bcrypt.hash(generateDummySecret(), cost: bcryptCost)

    private static func generateDummySecret() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    /// A token for whoever holds a key of `namespace`. A wrong key and an unknown namespace are
    /// both 401 after the same bcrypt; too many failures are 429 (see ``LoginThrottle``).
    public func issueToken(namespace: String, secret: String, clientAddress: String = "unknown") async throws -> IssuedToken {
        try throttle.check(namespace: namespace, address: clientAddress)
        let key: NamespaceKey?
        // bcrypt sees a C string: a NUL would end the key early and match a shorter one.
        if secret.utf8.contains(0) {
            key = nil
        } else if try await records.liveNamespace(namespace) != nil {
            key = try await matchingKey(secret, namespace: namespace)
        } else {
            _ = try await gate.run(queue: namespace) {
                try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(secret, hash: Self.dummyHash) }
            }
            key = nil
        }
        guard let key else {
            throttle.recordFailure(namespace: namespace, address: clientAddress)
            logger.notice("authentication refused", metadata: ["namespace": "\(namespace)", "client.address": "\(clientAddress)"])
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

    /// The key of `namespace` whose stored hash `secret` matches, or nil; each check waits for
    /// the namespace's turn at the gate.
    private func matchingKey(_ secret: String, namespace: String) async throws -> NamespaceKey? {
        for key in try await records.keys(namespace: namespace) {
            let hash = key.hash
            let matches = try await gate.run(queue: namespace) {
                try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(secret, hash: hash) }
            }
            if matches { return key }
        }
        return nil
    }

    /// The key of `namespace` whose stored hash `secret` matches, or nil (ungated: for the
    /// operator's command line and start-up).
    static func key(matching secret: String, namespace: String, in records: any AuthRecords) async throws -> NamespaceKey? {
        guard !secret.utf8.contains(0) else { return nil }
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
        return try await records.keys(namespace: namespace).contains { $0.name.utf8.elementsEqual(key.utf8) && $0.nonce == nonce }
    }

    /// Forgets the confirmations of `namespace`'s tokens (of its key `key` only, when given), so a
    /// deleted or replaced key's tokens stop working at once in this process. Other namespaces'
    /// confirmations stay: no tenant can flush everyone's cache.
    public func forgetConfirmations(namespace: String, key: String? = nil) {
        confirmed.withLock { cache in
            cache = cache.filter { _, confirmation in
                let caller = confirmation.caller
                guard caller.namespace.utf8.elementsEqual(namespace.utf8) else { return true }
                guard let key else { return false }
                return !caller.keyName.utf8.elementsEqual(key.utf8)
            }
        }
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
