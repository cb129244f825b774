import Foundation
import Hummingbird
import NIOCore
import SFStore

/// A request's JSON body, read as Shaken Fist's server reads it: every method may carry one (the
/// client sends bodies with GET and DELETE), no body and `null` members mean "not supplied", and a
/// member the endpoint does not take is refused by name, as upstream's TypeError is.
///
/// The typed accessors name the member and what it should be, so a wrong type is a 400 that says
/// which field is wrong. Numbers also come as numeric strings (sf-client sends `-V memory=…` and
/// `--limit` that way).
struct RequestBody {
    private let members: [String: JSONValue]

    /// Reads and checks the body. `allowed` lists the members the endpoint takes; `limit` is the
    /// largest body in bytes (the server's JSON limit when nil), past which the answer is 413.
    static func read(_ request: Request, context: APIContext, allowed: Set<String>, limit: Int? = nil) async throws -> RequestBody {
        let limit = limit ?? context.limits.jsonBodyBytes
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "the request body is larger than \(limit) bytes, the limit of this endpoint")
        }
        return try RequestBody(buffer, allowed: allowed, maxDepth: context.limits.jsonDepth)
    }

    init(_ buffer: ByteBuffer, allowed: Set<String>, maxDepth: Int = APILimits().jsonDepth) throws {
        let text = buffer.getString(at: buffer.readerIndex, length: buffer.readableBytes) ?? ""
        if text.allSatisfy(\.isWhitespace) {
            members = [:]
            return
        }
        // Checked before decoding: the decoder recurses once per level, and its tree of a deeply
        // nested body costs far more memory than the body.
        if let depth = Self.nesting(exceeds: maxDepth, in: buffer.readableBytesView) {
            throw APIError(.badRequest, "the request body nests JSON deeper than \(maxDepth) levels (at byte \(depth))")
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        } catch {
            throw APIError(.badRequest, "the request body is not valid JSON: \(Self.describe(error))")
        }
        switch value {
        case .null: members = [:]
        case .object(let object):
            let unknown = Set(object.keys).subtracting(allowed)
            if let first = unknown.sorted().first {
                let takes = allowed.isEmpty ? "takes no body members" : "takes \(allowed.sorted().joined(separator: ", "))"
                throw APIError(.badRequest, "unexpected field '\(first)': this endpoint \(takes)")
            }
            members = object.filter { $0.value != .null }
        default:
            throw APIError(.badRequest, "the request body must be a JSON object")
        }
    }

    /// A nested object (a disk or network specification) read by the same rules; `what` names it
    /// in the errors.
    init(members object: [String: JSONValue], allowed: Set<String>, what: String) throws {
        if let first = Set(object.keys).subtracting(allowed).sorted().first {
            throw APIError(.badRequest, "unexpected field '\(first)' in \(what): it takes \(allowed.sorted().joined(separator: ", "))")
        }
        members = object.filter { $0.value != .null }
    }

    /// The offset at which `bytes` opens its (`limit` + 1)th nested array or object, or nil when it
    /// never nests deeper than `limit`. Brackets inside strings do not count.
    static func nesting(exceeds limit: Int, in bytes: some Collection<UInt8>) -> Int? {
        var depth = 0
        var inString = false
        var escaped = false
        for (offset, byte) in bytes.enumerated() {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return offset }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return nil
    }

    private static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            return (context.underlyingError.map { "\($0)" } ?? context.debugDescription)
        }
        return "\(error)"
    }

    /// Whether the member was given (and not null).
    func has(_ key: String) -> Bool { members[key] != nil }

    /// The raw value of a member, nil when absent or null.
    func value(_ key: String) -> JSONValue? { members[key] }

    func string(_ key: String) throws -> String? {
        switch members[key] {
        case nil: return nil
        case .string(let value)?: return value
        default: throw APIError(.badRequest, "\(key) must be a string")
        }
    }

    func bool(_ key: String) throws -> Bool? {
        switch members[key] {
        case nil: return nil
        case .bool(let value)?: return value
        case .string(let text)? where ["true", "false"].contains(text.lowercased()): return text.lowercased() == "true"
        default: throw APIError(.badRequest, "\(key) must be true or false")
        }
    }

    func int(_ key: String) throws -> Int? {
        guard let value = members[key] else { return nil }
        guard let number = Self.integer(value) else { throw APIError(.badRequest, "\(key) must be an integer") }
        return number
    }

    func object(_ key: String) throws -> [String: JSONValue]? {
        switch members[key] {
        case nil: return nil
        case .object(let value)?: return value
        default: throw APIError(.badRequest, "\(key) must be a JSON object")
        }
    }

    func array(_ key: String) throws -> [JSONValue]? {
        switch members[key] {
        case nil: return nil
        case .array(let value)?: return value
        default: throw APIError(.badRequest, "\(key) must be a JSON list")
        }
    }

    /// An integer from a JSON number without a fraction, or a string of decimal digits.
    static func integer(_ value: JSONValue) -> Int? {
        switch value {
        case .number(let number):
            guard number.rounded() == number, abs(number) < 9.0e15 else { return nil }
            return Int(number)
        case .string(let text): return Int(text.trimmingCharacters(in: .whitespaces))
        default: return nil
        }
    }
}
