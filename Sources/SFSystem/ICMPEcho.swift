import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// ICMP echo (ping) over a raw socket, reported line for line as iputils' `ping` prints it.
///
/// The socket is opened in the calling thread's network namespace, so run ``ping(_:count:interval:)``
/// on a thread that has entered the namespace to ping from (a ``NamespaceExecutor``'s). Raw ICMP
/// sockets need CAP_NET_RAW; the agent has it. Nothing is spawned: a raw socket instead of
/// `/usr/bin/ping` keeps the run bounded by this code's own deadlines.
public enum ICMPEcho {
    /// The ICMP data bytes of each request, as iputils sends by default (84 bytes with the headers).
    public static let payloadBytes = 56
    /// The most requests one run sends.
    public static let maximumCount = 100
    /// The shortest and longest gaps between two requests.
    public static let intervalRange: ClosedRange<Duration> = .milliseconds(200) ... .seconds(10)

    /// One run's outcome, with the lines iputils would print.
    public struct Report: Sendable, Equatable {
        /// Requests sent (a request whose send failed counts, as in iputils).
        public var transmitted: Int
        /// Distinct requests answered.
        public var received: Int
        /// Requests that failed with an error (host unreachable) instead of being answered.
        public var errors: Int
        /// The output lines: the `PING` header, one per reply or error, a blank line and the
        /// statistics, as `ping -c N` prints them; each line without its newline.
        public var lines: [String]
    }

    /// Sends `count` echo requests to `target`, `interval` apart, and waits up to `interval` (at
    /// least a second) after the last for late replies. Replies are told from other ICMP traffic
    /// the raw socket sees by their identifier, sequence number and source.
    public static func ping(_ target: IPv4Address, count: Int, interval: Duration) throws -> Report {
        guard (1...maximumCount).contains(count) else {
            throw AddressError.invalid("ping count \(count) is outside 1...\(maximumCount)")
        }
        guard intervalRange.contains(interval) else {
            throw AddressError.invalid("ping interval \(interval) is outside \(intervalRange.lowerBound)...\(intervalRange.upperBound)")
        }
        let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_ICMP))
        if fd < 0 { throw SystemError.fromErrno("opening a raw ICMP socket") }
        defer { close(fd) }
        // The netblock's broadcast address is a valid target (Shaken Fist allows it), as `ping -b`.
        var on: Int32 = 1
        if setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw SystemError.fromErrno("allowing broadcast on the ICMP socket")
        }
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_addr = in_addr(s_addr: target.networkOrder)
        let identifier = UInt16.random(in: 1...UInt16.max)
        var lines = ["PING \(target) (\(target)) \(payloadBytes)(\(payloadBytes + 28)) bytes of data."]
        var sentAt: [UInt16: ContinuousClock.Instant] = [:]
        var answered = Set<UInt16>()
        var roundTrips: [Double] = []
        var errors = 0
        let start = ContinuousClock.now
        for index in 0..<count {
            let sequence = UInt16(index + 1)
            let packet = echoRequest(identifier: identifier, sequence: sequence)
            let now = ContinuousClock.now
            sentAt[sequence] = now
            let sent = packet.withUnsafeBytes { bytes in
                withUnsafePointer(to: &remote) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            if sent < 0 {
                // A neighbour that never answered ARP fails later sends; the kernel's own
                // host-unreachable messages for it arrive on the socket and are reported from there.
                guard [EHOSTUNREACH, ENETUNREACH, EHOSTDOWN].contains(errno) else {
                    throw SystemError.fromErrno("sending an ICMP echo request to \(target)")
                }
            }
            let last = index == count - 1
            let wait = last ? max(interval, .seconds(1)) : interval
            try receive(
                fd, until: now + wait, identifier: identifier, from: target, sentAt: sentAt, answered: &answered,
                roundTrips: &roundTrips, errors: &errors, lines: &lines, stopWhenAllAnswered: last ? count : nil)
        }
        let elapsed = ContinuousClock.now - start
        let elapsedMilliseconds = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
        let loss = Double(count - answered.count) * 100 / Double(count)
        lines.append("")
        lines.append("--- \(target) ping statistics ---")
        var summary = "\(count) packets transmitted, \(answered.count) received"
        if errors > 0 { summary += ", +\(errors) errors" }
        summary += ", \(String(format: "%g", loss))% packet loss, time \(elapsedMilliseconds)ms"
        lines.append(summary)
        if !roundTrips.isEmpty {
            let mean = roundTrips.reduce(0, +) / Double(roundTrips.count)
            let meanOfSquares = roundTrips.map { $0 * $0 }.reduce(0, +) / Double(roundTrips.count)
            let deviation = (max(meanOfSquares - mean * mean, 0)).squareRoot()
            let figures = [roundTrips.min() ?? 0, mean, roundTrips.max() ?? 0, deviation].map { String(format: "%.3f", $0) }
            lines.append("rtt min/avg/max/mdev = \(figures.joined(separator: "/")) ms")
        }
        return Report(transmitted: count, received: answered.count, errors: errors, lines: lines)
    }

    /// Reads replies until `deadline`, or until `stopWhenAllAnswered` requests are all answered.
    private static func receive(
        _ fd: Int32, until deadline: ContinuousClock.Instant, identifier: UInt16, from target: IPv4Address,
        sentAt: [UInt16: ContinuousClock.Instant], answered: inout Set<UInt16>, roundTrips: inout [Double], errors: inout Int,
        lines: inout [String], stopWhenAllAnswered: Int?
    ) throws {
        var buffer = [UInt8](repeating: 0, count: 1500)
        while true {
            if let all = stopWhenAllAnswered, answered.count == all { return }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return }
            let milliseconds = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw SystemError.fromErrno("waiting for ICMP echo replies from \(target)")
            }
            if ready == 0 { return }
            var peer = sockaddr_in()
            var peerLength = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = buffer.withUnsafeMutableBytes { bytes in
                withUnsafeMutablePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, bytes.baseAddress, bytes.count, 0, $0, &peerLength) }
                }
            }
            let received = ContinuousClock.now
            if count < 0 {
                // A raw socket also reports an ICMP error it was sent as a failed receive; the
                // error message itself arrives as a packet, read below.
                if [EINTR, EAGAIN, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ECONNREFUSED].contains(errno) { continue }
                throw SystemError.fromErrno("receiving ICMP echo replies from \(target)")
            }
            let source = IPv4Address(networkOrder: peer.sin_addr.s_addr)
            switch ICMPMessage(packet: buffer[0..<count]) {
            case .echoReply(let ttl, let replyIdentifier, let sequence, let icmpBytes)
            where replyIdentifier == identifier && source == target:
                guard let sent = sentAt[sequence] else { continue }
                let trip = received - sent
                let milliseconds = Double(trip.components.seconds) * 1000 + Double(trip.components.attoseconds) / 1e15
                let duplicate = !answered.insert(sequence).inserted
                if !duplicate { roundTrips.append(milliseconds) }
                lines.append(
                    "\(icmpBytes) bytes from \(target): icmp_seq=\(sequence) ttl=\(ttl) time=\(formatRoundTrip(milliseconds)) ms"
                        + (duplicate ? " (DUP!)" : ""))
            case .unreachable(let code, let requestIdentifier, let sequence) where requestIdentifier == identifier:
                guard sentAt[sequence] != nil else { continue }
                errors += 1
                lines.append("From \(source) icmp_seq=\(sequence) \(unreachableText(code))")
            default:
                continue
            }
        }
    }

    /// iputils' words for an ICMP destination-unreachable code.
    static func unreachableText(_ code: UInt8) -> String {
        switch code {
        case 0: return "Destination Net Unreachable"
        case 1: return "Destination Host Unreachable"
        case 2: return "Destination Protocol Unreachable"
        case 3: return "Destination Port Unreachable"
        case 9, 10, 13: return "Packet filtered"
        default: return "Dest Unreachable, Bad Code: \(code)"
        }
    }

    /// A round trip as iputils prints it: three significant decimals below 1 ms, then fewer.
    static func formatRoundTrip(_ milliseconds: Double) -> String {
        switch milliseconds {
        case ..<1: return String(format: "%.3f", milliseconds)
        case ..<10: return String(format: "%.2f", milliseconds)
        case ..<100: return String(format: "%.1f", milliseconds)
        default: return String(format: "%.0f", milliseconds)
        }
    }

    /// An echo request: type 8, code 0, the checksum, identifier and sequence, then the payload.
    static func echoRequest(identifier: UInt16, sequence: UInt16) -> [UInt8] {
        var packet: [UInt8] = [8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff), UInt8(sequence >> 8), UInt8(sequence & 0xff)]
        packet += (0..<payloadBytes).map { UInt8(truncatingIfNeeded: $0) }
        let sum = checksum(packet)
        packet[2] = UInt8(sum >> 8)
        packet[3] = UInt8(sum & 0xff)
        return packet
    }

    /// The Internet checksum (RFC 1071) of `bytes`.
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum &+= UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum &+= UInt32(bytes[index]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) &+ (sum >> 16) }
        return ~UInt16(truncatingIfNeeded: sum)
    }

    /// The ICMP messages a ping reads, as a raw socket delivers them (the IPv4 header first).
    enum ICMPMessage {
        /// Type 0; `icmpBytes` is the ICMP message's length, what iputils prints as "bytes from".
        case echoReply(ttl: UInt8, identifier: UInt16, sequence: UInt16, icmpBytes: Int)
        /// Type 3 about one of our echo requests (whose header it quotes).
        case unreachable(code: UInt8, identifier: UInt16, sequence: UInt16)
        case other

        init(packet: ArraySlice<UInt8>) {
            let bytes = Array(packet)
            guard let header = Self.ipv4HeaderLength(bytes, at: 0), bytes.count >= header + 8 else {
                self = .other
                return
            }
            switch (bytes[header], bytes[header + 1]) {
            case (0, 0):
                self = .echoReply(
                    ttl: bytes[8], identifier: Self.word(bytes, header + 4), sequence: Self.word(bytes, header + 6),
                    icmpBytes: bytes.count - header)
            case (3, let code):
                // The quoted request: its IPv4 header, then at least the ICMP header's 8 bytes.
                let quoted = header + 8
                guard let inner = Self.ipv4HeaderLength(bytes, at: quoted), bytes.count >= quoted + inner + 8,
                    bytes[quoted + inner] == 8
                else {
                    self = .other
                    return
                }
                self = .unreachable(
                    code: code, identifier: Self.word(bytes, quoted + inner + 4), sequence: Self.word(bytes, quoted + inner + 6))
            default:
                self = .other
            }
        }

        private static func ipv4HeaderLength(_ bytes: [UInt8], at offset: Int) -> Int? {
            guard bytes.count >= offset + 20, bytes[offset] >> 4 == 4 else { return nil }
            let length = Int(bytes[offset] & 0x0f) * 4
            return length >= 20 ? length : nil
        }

        private static func word(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
            UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
        }
    }
}
