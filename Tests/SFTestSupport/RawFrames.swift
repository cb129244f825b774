import Foundation
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

/// Ethernet frames built byte by byte, as a hostile guest would send them, and AF_PACKET sockets
/// that send and receive them inside a test namespace.
public enum RawFrame {
    public static let broadcast = MACAddress(0xff, 0xff, 0xff, 0xff, 0xff, 0xff)

    /// An Ethernet frame carrying an IPv4/UDP datagram whose payload is `marker`.
    public static func udp(
        from mac: MACAddress, source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
        to destinationMAC: MACAddress = broadcast, marker: String
    ) -> [UInt8] {
        let payload = Array(marker.utf8)
        let udpLength = 8 + payload.count
        var ip: [UInt8] = [0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0] + source.octets + destination.octets
        ip[2...3] = big16(20 + udpLength)[...]
        let checksum = internetChecksum(ip)
        ip[10...11] = big16(Int(checksum))[...]
        let udp = big16(Int(sourcePort)) + big16(Int(destinationPort)) + big16(udpLength) + [0, 0] + payload
        return ethernet(from: mac, to: destinationMAC, type: 0x0800) + ip + udp
    }

    /// An ARP frame (`operation` 1 request, 2 reply) from `mac` whose sender fields are
    /// `senderMAC`/`senderAddress`, padded with `marker`.
    public static func arp(
        from mac: MACAddress, operation: UInt16, senderMAC: MACAddress, senderAddress: IPv4Address,
        targetAddress: IPv4Address, to destinationMAC: MACAddress = broadcast, marker: String
    ) -> [UInt8] {
        let body: [UInt8] = [0, 1, 0x08, 0x00, 6, 4] + big16(Int(operation)) + senderMAC.octets + senderAddress.octets
            + [0, 0, 0, 0, 0, 0] + targetAddress.octets
        return ethernet(from: mac, to: destinationMAC, type: 0x0806) + body + Array(marker.utf8)
    }

    /// An IPv6 frame (link-local source, all-nodes destination, no next header) carrying `marker`.
    public static func ipv6(from mac: MACAddress, marker: String) -> [UInt8] {
        let payload = Array(marker.utf8)
        var header: [UInt8] = [0x60, 0, 0, 0] + big16(payload.count) + [59, 255]
        header += [0xfe, 0x80, 0, 0, 0, 0, 0, 0] + mac.octets[0..<3] + [0xff, 0xfe] + mac.octets[3..<6]
        header += [0xff, 0x02] + [UInt8](repeating: 0, count: 13) + [1]
        return ethernet(from: mac, to: MACAddress(0x33, 0x33, 0, 0, 0, 1), type: 0x86dd) + header + payload
    }

    static func ethernet(from source: MACAddress, to destination: MACAddress, type: UInt16) -> [UInt8] {
        destination.octets + source.octets + big16(Int(type))
    }

    static func big16(_ value: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)] }

    static func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        for index in stride(from: 0, to: bytes.count, by: 2) {
            sum += UInt32(bytes[index]) << 8 | UInt32(index + 1 < bytes.count ? bytes[index + 1] : 0)
        }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}

/// An AF_PACKET socket on one device of a test namespace: sends raw frames out of it, or receives
/// every frame that arrives on it.
public final class PacketSocket: Sendable {
    private let descriptor: Int32
    private let index: Int32

    private init(descriptor: Int32, index: Int32) {
        self.descriptor = descriptor
        self.index = index
    }

    deinit { close(descriptor) }

    /// Opens the socket on `device` inside `namespace`. With `receiving`, it sees every frame the
    /// device receives (ETH_P_ALL); without, it only sends.
    public static func open(in namespace: String, device: String, receiving: Bool) async throws -> PacketSocket {
        let thread = try await NamespaceExecutor.start(namespace: namespace)
        return try await thread.executor.run {
            let index = Int32(bitPattern: if_nametoindex(device))
            if index == 0 { throw SystemError.fromErrno("if_nametoindex \(device) in \(namespace)") }
            // ETH_P_ALL (every protocol) for a receiver; 0 for a socket that only sends.
            let protocolNumber = receiving ? UInt16(0x0003).bigEndian : 0
            let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(protocolNumber))
            if fd < 0 { throw SystemError.fromErrno("AF_PACKET socket in \(namespace)") }
            // A struct sockaddr_ll (family, protocol, ifindex, then fields bind ignores), written by
            // offset: Swift's Glibc module does not import <netpacket/packet.h>.
            var address = sockaddr_storage()
            withUnsafeMutableBytes(of: &address) { raw in
                raw.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)
                raw.storeBytes(of: protocolNumber, toByteOffset: 2, as: UInt16.self)
                raw.storeBytes(of: index, toByteOffset: 4, as: Int32.self)
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, 20) }
            }
            if bound != 0 {
                let error = SystemError.fromErrno("bind AF_PACKET socket to \(device) in \(namespace)")
                close(fd)
                throw error
            }
            return PacketSocket(descriptor: fd, index: index)
        }
    }

    /// Sends one frame out of the device, as it is (the kernel adds nothing).
    public func send(_ frame: [UInt8]) throws {
        let sent = frame.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, 0) }
        guard sent == frame.count else { throw SystemError.fromErrno("send a \(frame.count)-byte frame") }
    }

    /// Collects the frames that arrive until none has come for `quietMilliseconds`.
    public func receiveUntilQuiet(quietMilliseconds: Int32 = 500) async throws -> [[UInt8]] {
        let fd = descriptor
        let thread = try await ThreadExecutor.start(name: "test-packets")
        return try await thread.run {
            var frames: [[UInt8]] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, quietMilliseconds)
                if ready < 0 { throw SystemError.fromErrno("poll AF_PACKET socket") }
                if ready == 0 { return frames }
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0 { throw SystemError.fromErrno("recv from AF_PACKET socket") }
                frames.append(Array(buffer[0..<count]))
            }
        }
    }
}

extension Array where Element == UInt8 {
    /// Whether the bytes contain `marker`'s UTF-8 bytes.
    public func contains(marker: String) -> Bool {
        let needle = Array(marker.utf8)
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { start in self[start..<(start + needle.count)].elementsEqual(needle) }
    }
}
