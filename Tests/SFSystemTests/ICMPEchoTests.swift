import Foundation
import Testing

@testable import SFSystem

/// The pure parts of the ICMP ping: the packets it builds, and that no packet it reads, however
/// short or strange (anything on the network's namespace can send one), makes it trap.
@Suite struct ICMPEchoTests {
    @Test func anEchoRequestCarriesItsIdentifierSequenceAndAValidChecksum() {
        let packet = ICMPEcho.echoRequest(identifier: 0xBEEF, sequence: 7)
        #expect(packet.count == 8 + ICMPEcho.payloadBytes)
        #expect(Array(packet[0..<2]) == [8, 0] && Array(packet[4..<8]) == [0xBE, 0xEF, 0, 7])
        // A packet with its checksum in place sums to zero (RFC 1071).
        #expect(ICMPEcho.checksum(packet) == 0)
        #expect(ICMPEcho.checksum([0x45, 0x00, 0x00, 0x1c]) == ~UInt16(0x451c))
    }

    @Test func roundTripsArePrintedAsIputilsPrintsThem() {
        #expect(ICMPEcho.formatRoundTrip(0.0456) == "0.046")
        #expect(ICMPEcho.formatRoundTrip(3.14159) == "3.14")
        #expect(ICMPEcho.formatRoundTrip(42.42) == "42.4")
        #expect(ICMPEcho.formatRoundTrip(123.6) == "124")
    }

    @Test func repliesAndUnreachablesAreReadAndAnythingElseIsIgnored() {
        var reply: [UInt8] = [0x45, 0, 0, 84, 0, 0, 0, 0, 63, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
        reply += [0, 0, 0, 0, 0xBE, 0xEF, 0, 3] + [UInt8](repeating: 0, count: 56)
        guard case .echoReply(let ttl, let identifier, let sequence, let bytes) = ICMPEcho.ICMPMessage(packet: reply[...]) else {
            Issue.record("an echo reply was not read as one")
            return
        }
        #expect(ttl == 63 && identifier == 0xBEEF && sequence == 3 && bytes == 64)
        var unreachable: [UInt8] = [0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 1]
        unreachable += [3, 1, 0, 0, 0, 0, 0, 0]
        unreachable += [0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 9] + [8, 0, 0, 0, 0xBE, 0xEF, 0, 5]
        guard case .unreachable(let code, let quotedIdentifier, let quotedSequence) = ICMPEcho.ICMPMessage(packet: unreachable[...]) else {
            Issue.record("a host unreachable was not read as one")
            return
        }
        #expect(code == 1 && quotedIdentifier == 0xBEEF && quotedSequence == 5)
        #expect(ICMPEcho.unreachableText(code) == "Destination Host Unreachable")
        // Every prefix of both, and random bytes: read as something or ignored, never a trap.
        for packet in [reply, unreachable] {
            for length in 0..<packet.count { _ = ICMPEcho.ICMPMessage(packet: packet[0..<length]) }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            var bytes = (0..<Int.random(in: 0...120, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if !bytes.isEmpty { bytes[0] = 0x40 | (bytes[0] & 0x0f) }
            _ = ICMPEcho.ICMPMessage(packet: bytes[...])
        }
    }

    @Test func aPingOutsideItsBoundsIsRefusedBeforeAnythingIsSent() {
        let target = IPv4Address("127.0.0.1")!
        #expect(throws: AddressError.self) { try ICMPEcho.ping(target, count: 0, interval: .seconds(1)) }
        #expect(throws: AddressError.self) { try ICMPEcho.ping(target, count: ICMPEcho.maximumCount + 1, interval: .seconds(1)) }
        #expect(throws: AddressError.self) { try ICMPEcho.ping(target, count: 1, interval: .milliseconds(10)) }
        #expect(throws: AddressError.self) { try ICMPEcho.ping(target, count: 1, interval: .seconds(11)) }
    }
}
