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
    /// From the namespace thread: a detached task that sleeps, then reports where it ran.
    func detachedAndSleeping() async throws -> UInt {
        try await Task.detached {
            try await Task.sleep(for: .milliseconds(1))
            return try currentNamespaceInode()
        }.value
    }
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

    /// Work that leaves a namespace thread for Swift's global executor (an actor returning to its
    /// caller, a detached task, a sleep) is enqueued from the process's own namespace, so no worker
    /// thread Dispatch creates for it can inherit the other one; no thread but the namespace
    /// threads ends up there.
    @Test func globalExecutorWorkIsEnqueuedFromHome() async throws {
        try await withTestNamespace("gx") { name in
            let root = try currentNamespaceInode()
            let inside = NamespaceProbe(thread: try NamespaceExecutor(namespace: name))
            let before = NetworkNamespace.enqueuesForwardedHome
            for _ in 0..<50 {
                // Fan out from the namespace thread and come back: each return, each detached task
                // and each sleep below is an enqueue onto the global executor made there.
                #expect(try await inside.inode() != root)
                #expect(try await inside.detachedAndSleeping() == root)
            }
            #expect(NetworkNamespace.enqueuesForwardedHome - before >= 100)
            // Every thread of this process is home, except the namespace threads themselves.
            for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") {
                let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
                guard !comm.hasPrefix("ns-"), !comm.hasPrefix("netns-") else { continue }
                var info = stat()
                guard stat("/proc/self/task/\(task)/ns/net", &info) == 0 else { continue }
                #expect(UInt(info.st_ino) == root, "thread \(task) (\(comm.trimmingCharacters(in: .whitespacesAndNewlines))) is in another namespace")
            }
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
