import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// A DNS A-record lookup over UDP from inside a test namespace: the "guest" asking its network's
/// dnsmasq. Just enough of RFC 1035 for that: one question, recursion desired, the answers' A
/// records read back (names compressed or not).
public enum DNSQuery {
    /// What the server said: its response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED) and
    /// the A records' addresses.
    public struct Answer: Sendable, Equatable, CustomStringConvertible {
        public var responseCode: Int
        public var addresses: [IPv4Address]
        public var description: String { "rcode \(responseCode) \(addresses)" }
    }

    /// Asks `server`:53 for the A records of `name`, from inside `namespace`.
    public static func lookup(_ name: String, server: IPv4Address, from namespace: String, timeoutSeconds: Int = 3) async throws -> Answer {
        let thread = try await NamespaceExecutor.start(namespace: namespace)
        return try await thread.executor.run {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { throw SystemError.fromErrno("socket") }
            defer { close(fd) }
            var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var remote = server.socketAddress(port: 53)
            let identifier = UInt16.random(in: 0...UInt16.max)
            let query = Self.query(name, identifier: identifier)
            let sent = query.withUnsafeBytes { bytes in
                withUnsafePointer(to: &remote) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            guard sent == query.count else { throw SystemError.fromErrno("sending a DNS query to \(server)") }
            var buffer = [UInt8](repeating: 0, count: 1500)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0 { throw SystemError.fromErrno("no DNS answer from \(server) for \(name)") }
                let response = Array(buffer[0..<count])
                guard response.count >= 12, UInt16(response[0]) << 8 | UInt16(response[1]) == identifier else { continue }
                return try parse(response)
            }
        }
    }

    static func query(_ name: String, identifier: UInt16) -> [UInt8] {
        var packet: [UInt8] = [UInt8(identifier >> 8), UInt8(identifier & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") {
            packet.append(UInt8(label.utf8.count))
            packet += Array(label.utf8)
        }
        packet += [0, 0, 1, 0, 1]  // root, type A, class IN
        return packet
    }

    static func parse(_ bytes: [UInt8]) throws -> Answer {
        func word(_ offset: Int) throws -> Int {
            guard offset + 1 < bytes.count else { throw TestSocketError.malformedResponse("DNS response cut short") }
            return Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
        }
        func skipName(_ start: Int) throws -> Int {
            var offset = start
            while true {
                guard offset < bytes.count else { throw TestSocketError.malformedResponse("DNS name runs past the end") }
                let length = Int(bytes[offset])
                if length == 0 { return offset + 1 }
                if length & 0xc0 == 0xc0 { return offset + 2 }
                offset += 1 + length
            }
        }
        let responseCode = Int(bytes[3] & 0x0f)
        let questions = try word(4)
        let answers = try word(6)
        var offset = 12
        for _ in 0..<questions { offset = try skipName(offset) + 4 }
        var addresses: [IPv4Address] = []
        for _ in 0..<answers {
            offset = try skipName(offset)
            let type = try word(offset)
            let length = try word(offset + 8)
            offset += 10
            guard offset + length <= bytes.count else { throw TestSocketError.malformedResponse("DNS record runs past the end") }
            if type == 1, length == 4 {
                addresses.append(IPv4Address(UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])))
            }
            offset += length
        }
        return Answer(responseCode: responseCode, addresses: addresses)
    }
}
