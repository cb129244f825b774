import Foundation
import SFSystem
import SFTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Reads the inode of the network namespace the calling thread is in.
private func currentNamespaceInode() throws -> UInt {
    var info = stat()
    guard stat("/proc/thread-self/ns/net", &info) == 0 else { throw SystemError.fromErrno("stat") }
    return UInt(info.st_ino)
}

private actor NamespaceProbe {
    let thread: NamespaceExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { thread.executor.asUnownedSerialExecutor() }
    init(thread: NamespaceExecutor) { self.thread = thread }
    func inode() throws -> UInt { try currentNamespaceInode() }
}

@Suite(.enabled(if: runningAsRoot, "namespaces need root"))
struct NetworkNamespaceTests {
    @Test func createIsIdempotentAndVisibleToIproute2() async throws {
        try await withTestNamespace("ns") { name in
            try NetworkNamespace.create(named: name)
            #expect(NetworkNamespace.exists(named: name))
            #expect(NetworkNamespace.list().contains(name))
            // iproute2 reads the same directory.
            let listed = try ChildProcess.run(["/usr/sbin/ip", "netns", "list"])
            #expect(listed.status == 0)
            #expect(listed.stdout.contains(name))
        }
    }

    @Test func deleteIsIdempotent() throws {
        let name = TestNames.unique("del")
        try NetworkNamespace.create(named: name)
        try NetworkNamespace.delete(named: name)
        try NetworkNamespace.delete(named: name)
        #expect(!NetworkNamespace.exists(named: name))
        #expect(!FileManager.default.fileExists(atPath: NetworkNamespace.path(of: name)))
    }

    @Test func executorRunsInsideTheNamespace() async throws {
        try await withTestNamespace("ex") { name in
            let root = try currentNamespaceInode()
            let inside = NamespaceProbe(thread: try NamespaceExecutor(namespace: name))
            let host = NamespaceProbe(thread: try NamespaceExecutor(namespace: nil))
            let insideInode = try await inside.inode()
            #expect(insideInode != root)
            #expect(try await inside.inode() == insideInode)
            #expect(try await host.inode() == root)
        }
    }

    @Test func badNamesAreRefusedByName() {
        for bad in ["", "a/b", ".hidden", "sp ace", String(repeating: "x", count: 65)] {
            #expect(throws: NamespaceError.invalidName(bad)) { try NetworkNamespace.create(named: bad) }
        }
    }

    @Test func enteringAMissingNamespaceNamesIt() {
        let name = TestNames.unique("gone")
        #expect(throws: NamespaceError.notFound(name)) { _ = try NamespaceExecutor(namespace: name) }
    }
}

@Suite(.enabled(if: runningAsRoot, "namespaces need root"))
struct NamespaceProcessTests {
    /// A process spawned from a namespace thread starts inside that namespace: the way sfnode
    /// starts dnsmasq inside a network's namespace without `ip netns exec`.
    @Test func processSpawnedOnTheThreadStartsInTheNamespace() async throws {
        try await withTestNamespace("sp") { name in
            let thread = try NamespaceExecutor(namespace: name)
            let expected = try await thread.executor.run { try currentNamespaceInode() }
            let child = try await thread.executor.run { try ChildProcess.spawn(["/bin/sleep", "5"], outputPath: nil) }
            var info = stat()
            #expect(stat("/proc/\(child.processIdentifier)/ns/net", &info) == 0)
            #expect(UInt(info.st_ino) == expected)
            #expect(expected != (try currentNamespaceInode()))
        }
    }
}
