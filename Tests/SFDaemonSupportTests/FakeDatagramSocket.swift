#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SFSystem
import Testing

@testable import SFDaemonSupport

/// A bound `AF_UNIX` datagram socket standing in for journald or systemd's notify socket.
///
/// Non-blocking: reads poll with short sleeps, so a test waiting for a datagram never ties up one of
/// the few cooperative threads that the code under test also needs.
final class FakeDatagramSocket: Sendable {
    /// The address, as `NOTIFY_SOCKET` would spell it (a path, or `@name`).
    let address: String
    let descriptor: Int32
    private let directory: String?

    /// A socket bound to a fresh path in a temporary directory.
    static func path() throws -> FakeDatagramSocket {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("sfd-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try FakeDatagramSocket(address: directory + "/socket", directory: directory)
    }

    /// A socket bound to a fresh abstract name.
    static func abstract() throws -> FakeDatagramSocket {
        try FakeDatagramSocket(address: "@sfd-test/\(getpid())/\(UInt64.random(in: 0...UInt64.max))", directory: nil)
    }

    private init(address: String, directory: String?) throws {
        self.address = address
        self.directory = directory
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        if fd < 0 { throw SystemError.fromErrno("socket") }
        descriptor = fd
        // Room for the largest datagram a test sends without a descriptor.
        var size: Int32 = 4 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        let parsed = try UnixSocketAddress(address)
        let rc = parsed.withSockaddr { bind(fd, $0, $1) }
        if rc != 0 {
            let error = SystemError.fromErrno("bind \(address)")
            close(fd)
            throw error
        }
    }

    deinit {
        close(descriptor)
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// One received datagram: its bytes, or the contents of the descriptor it carried.
    struct Datagram {
        var bytes: [UInt8]
        var passedDescriptor: Bool
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    /// The next datagram, or nil when none arrives within `timeout`.
    func receive(timeout: Duration = .seconds(5)) async throws -> Datagram? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let datagram = try receiveNow() { return datagram }
            try await Task.sleep(for: .milliseconds(5))
        }
        return nil
    }

    /// Every datagram until `count` have arrived or `timeout` passes.
    func receive(count: Int, timeout: Duration = .seconds(5)) async throws -> [Datagram] {
        var received: [Datagram] = []
        let deadline = ContinuousClock.now + timeout
        while received.count < count, ContinuousClock.now < deadline {
            if let datagram = try receiveNow() {
                received.append(datagram)
            } else {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        return received
    }

    /// A datagram if one is queued, reading a passed descriptor's contents from its start.
    func receiveNow() throws -> Datagram? {
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        let controlSpace = ControlMessage.rightsSpace
        let control = UnsafeMutableRawPointer.allocate(byteCount: controlSpace, alignment: MemoryLayout<cmsghdr>.alignment)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0, count: controlSpace)
        let (count, controlLength) = buffer.withUnsafeMutableBytes { bytes -> (Int, Int) in
            var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
            return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                var message = msghdr()
                message.msg_iov = vectorPointer
                message.msg_iovlen = 1
                message.msg_control = control
                message.msg_controllen = controlSpace
                let received = recvmsg(descriptor, &message, Int32(MSG_CMSG_CLOEXEC))
                return (received, message.msg_controllen)
            }
        }
        if count < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw SystemError.fromErrno("recvmsg")
        }
        if controlLength >= MemoryLayout<cmsghdr>.size {
            let header = control.load(as: cmsghdr.self)
            if header.cmsg_level == SOL_SOCKET && header.cmsg_type == Int32(SCM_RIGHTS) {
                let fd = control.load(fromByteOffset: ControlMessage.align(MemoryLayout<cmsghdr>.size), as: Int32.self)
                defer { close(fd) }
                return Datagram(bytes: try readFromStart(fd), passedDescriptor: true)
            }
        }
        return Datagram(bytes: Array(buffer[0..<count]), passedDescriptor: false)
    }

    private func readFromStart(_ fd: Int32) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var offset: off_t = 0
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if count < 0 { throw SystemError.fromErrno("pread") }
            if count == 0 { return result }
            result.append(contentsOf: chunk[0..<count])
            offset += off_t(count)
        }
    }
}
