import Foundation
import SFBlobs
import SFStore
import SFSystem

#if canImport(Glibc)
import Glibc
#endif

extension Control {
    /// How much of the console `consoleData` returns when no length is given (Shaken Fist's default).
    public static let defaultConsoleLength = 10240

    /// The end of an instance's serial console log, as Shaken Fist's `GET /instances/<ref>/consoledata`
    /// returns it: the last `length` bytes; nil or 0 means the last 10240, -1 the whole log, and any
    /// other negative length nothing. A log that does not exist (yet) reads as empty, as does an
    /// instance not placed on any node.
    ///
    /// The log is a file on the instance's node, written by virtlogd. An instance placed on another
    /// node has its log asked of that node over the mesh (the last
    /// ``PeerServer/maximumConsoleLength`` bytes at most); without a mesh it is refused with
    /// ``ControlError/Code/conflict``. Only the tail is read (the log can grow to megabytes), never
    /// the whole file.
    public func consoleData(_ reference: String, namespace: String? = nil, length: Int? = nil) async throws -> Data {
        let instance = try await self.instance(reference, namespace: namespace)
        let wanted: Int?
        switch length {
        case nil, 0?: wanted = Self.defaultConsoleLength
        case .some(-1): wanted = nil
        case let given? where given < 0: return Data()
        case let given?: wanted = given
        }
        if let node = instance.node, node != settings.nodeName, let peers {
            return try await controlled {
                try await peers.consoleTail(
                    of: instance.uuid, length: min(wanted ?? PeerServer.maximumConsoleLength, PeerServer.maximumConsoleLength),
                    on: try await peer(node, for: instance))
            }
        }
        guard let path = try consoleLogPath(of: instance) else { return Data() }
        return try await controlled { try await runBlocking { try Self.readTail(of: path, length: wanted) } }
    }

    /// Empties an instance's console log (Shaken Fist's `DELETE /instances/<ref>/consoledata`). The
    /// log is truncated in place rather than removed: virtlogd holds it open for appending and goes on
    /// writing to the same file. A log that does not exist is left so.
    public func clearConsoleData(_ reference: String, namespace: String? = nil) async throws {
        let instance = try await self.instance(reference, namespace: namespace)
        if let node = instance.node, node != settings.nodeName, let peers {
            try await controlled { try await peers.clearConsole(of: instance.uuid, on: try await peer(node, for: instance)) }
            logger.info("console log cleared", metadata: ["instance.uuid": "\(instance.uuid.lowercasedString)", "node.holder": "\(node)"])
            return
        }
        guard let path = try consoleLogPath(of: instance) else { return }
        try await controlled {
            try await runBlocking {
                if truncate(path, 0) != 0 && errno != ENOENT { throw SystemError.fromErrno("truncate \(path)") }
            }
        }
        logger.info("console log cleared", metadata: ["instance.uuid": "\(instance.uuid.lowercasedString)"])
    }

    /// Node `node`, which holds `instance`, as reached over the mesh.
    private func peer(_ node: String, for instance: Instance) async throws -> Peer {
        guard let address = try await store.node(named: node)?.meshAddress else {
            throw ControlError.conflict("instance \(instance.uuid.lowercasedString) is on node \(node), which has no mesh address to ask for its console")
        }
        return Peer(name: node, address: address)
    }

    /// The instance's console log on this node; nil for an instance that is placed nowhere (it has no
    /// log anywhere). An instance placed on another node is refused.
    private func consoleLogPath(of instance: Instance) throws(ControlError) -> String? {
        guard let node = instance.node else { return nil }
        guard !settings.nodeName.isEmpty else {
            throw ControlError(.internal, "this process has no node name; set nodeName (SFNODE_NODE_NAME) to read console logs")
        }
        guard node == settings.nodeName else {
            throw ControlError.conflict(
                "instance \(instance.uuid.lowercasedString) is on node \(node); its console is read on that node, not on \(settings.nodeName)")
        }
        guard settings.storagePath.hasPrefix("/") else {
            throw ControlError(.internal, "storage path '\(settings.storagePath)' is not absolute; set storagePath (SFNODE_STORAGE_PATH)")
        }
        return InstanceFiles(storagePath: settings.storagePath).consoleLog(of: instance.uuid)
    }

    /// The last `length` bytes of the file at `path` (all of it when nil), found by seeking from the
    /// end; empty when the file does not exist.
    static func readTail(of path: String, length: Int?) throws -> Data {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        if descriptor < 0 {
            if errno == ENOENT { return Data() }
            throw SystemError.fromErrno("open \(path)")
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw SystemError.fromErrno("stat \(path)") }
        let size = Int(info.st_size)
        let start = length.map { max(0, size - $0) } ?? 0
        guard lseek(descriptor, off_t(start), SEEK_SET) >= 0 else { throw SystemError.fromErrno("seek \(path)") }
        // At most `length` bytes from where the tail began when the file was measured: virtlogd may
        // append meanwhile, and the answer must still not be longer than asked for.
        let limit = length ?? Int.max
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while data.count < limit {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, min($0.count, limit - data.count)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemError.fromErrno("read \(path)")
            }
            if count == 0 { break }
            data.append(contentsOf: buffer[0..<count])
        }
        return data
    }
}
