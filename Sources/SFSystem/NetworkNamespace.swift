import CLinux
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Named network namespaces, kept where iproute2 keeps them, so `ip netns list` and
/// `ip netns exec` see the ones sfnode makes, and sfnode sees the ones they make.
public enum NetworkNamespace {
    /// The directory of namespace mount points: iproute2's `/run/netns`.
    public static let directory = "/run/netns"

    /// The longest name accepted. It becomes a file name, and tests prefix it onto device names.
    public static let maximumNameLength = 64

    /// Checks that `name` can name a namespace file: no slash, no leading dot, not empty.
    public static func validate(name: String) throws {
        guard !name.isEmpty, name.utf8.count <= maximumNameLength, !name.contains("/"), !name.hasPrefix("."),
            name.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7f })
        else {
            throw NamespaceError.invalidName(name)
        }
    }

    /// The path of the namespace's mount point.
    public static func path(of name: String) -> String { "\(directory)/\(name)" }

    /// Whether `name` is a mounted network namespace (not merely a leftover file).
    public static func exists(named name: String) -> Bool {
        guard (try? validate(name: name)) != nil else { return false }
        return isMountedNamespace(path(of: name))
    }

    /// The names of all namespaces in the directory that are mounted network namespaces.
    /// The namespace's identity (its nsfs inode number), or nil when no namespace has that name. A
    /// namespace deleted and created again under the same name has a new identity.
    public static func identity(named name: String) -> UInt64? {
        identity(atPath: path(of: name))
    }

    /// The identity of the network namespace a process is in, or nil when it cannot be read (the
    /// process is gone).
    public static func identity(ofProcess pid: Int32) -> UInt64? {
        identity(atPath: "/proc/\(pid)/ns/net")
    }

    public static func identity(atPath path: String) -> UInt64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return UInt64(info.st_ino)
    }

    public static func list() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { isMountedNamespace(path(of: $0)) }.sorted()
    }

    /// Creates the namespace `name`. Creating one that exists is not an error; a file left behind
    /// without a namespace mounted on it (a crash between the two steps) is completed.
    public static func create(named name: String) throws {
        try validate(name: name)
        if isMountedNamespace(path(of: name)) { return }
        // unshare(CLONE_NEWNET) moves the calling thread; do it on a thread that ends right after.
        let outcome = Mutex<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
        try OSThread.spawn(name: "netns-create") {
            defer { done.signal() }
            do { try createAndEnter(named: name) } catch { outcome.withLock { $0 = error } }
        }
        done.wait()
        if let error = outcome.withLock({ $0 }) { throw error }
    }

    /// Creates the namespace `name` and leaves the calling thread inside it; if it already exists,
    /// enters it. Only for threads that sfnode dedicates to that namespace.
    static func createAndEnter(named name: String) throws {
        try validate(name: name)
        let target = path(of: name)
        if isMountedNamespace(target) {
            try enter(named: name)
            return
        }
        try prepareDirectory()
        // Two creators of one name (two threads, or sfnode and `ip netns add`) would both mount, the
        // second on top of the first, leaving the first one's devices in a namespace nobody can name.
        // The check is repeated under a lock on the directory; the loser enters the winner's namespace.
        let lock = try FileLock.acquire(directory: directory)
        defer { lock.release() }
        if isMountedNamespace(target) {
            try enter(named: name)
            return
        }
        let fd = open(target, O_RDONLY | O_CREAT | O_CLOEXEC, 0)
        if fd < 0 { throw SystemError.fromErrno("create \(target)") }
        close(fd)
        try GlobalExecutorHome.prepareToLeave()
        let rc = csys_unshare_network()
        if rc != 0 {
            unlink(target)
            throw SystemError("unshare(CLONE_NEWNET)", code: -rc)
        }
        GlobalExecutorHome.arrived(away: true)
        // The bind mount keeps the namespace alive after this thread ends, and names it for iproute2.
        if mount("/proc/thread-self/ns/net", target, "none", UInt(MS_BIND), nil) != 0 {
            let error = SystemError.fromErrno("mount --bind /proc/thread-self/ns/net \(target)")
            unlink(target)
            throw error
        }
    }

    /// Deletes the namespace `name`. Deleting one that does not exist is not an error. Devices
    /// inside it go with it once nothing else holds the namespace.
    public static func delete(named name: String) throws {
        try validate(name: name)
        let target = path(of: name)
        if umount2(target, Int32(MNT_DETACH)) != 0 && errno != EINVAL && errno != ENOENT {
            throw SystemError.fromErrno("umount \(target)")
        }
        if unlink(target) != 0 && errno != ENOENT {
            throw SystemError.fromErrno("unlink \(target)")
        }
    }

    /// How many times work for Swift's global executor was enqueued from a thread inside another
    /// namespace and made from the process's own namespace instead (see `GlobalExecutorHome`).
    public static var enqueuesForwardedHome: Int { Int(csys_forwarded_enqueues()) }

    /// Moves the calling thread into the process's own network namespace (its main thread's), which
    /// a thread need not be in when it was created by a thread that had entered another one.
    static func enterProcessNamespace() throws {
        let fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open /proc/self/ns/net") }
        defer { close(fd) }
        try enter(fd, path: "/proc/self/ns/net", away: false)
    }

    /// Enters the namespace `name` on the calling thread. Only for threads that sfnode owns and
    /// dedicates to that namespace (see ``NamespaceExecutor``), such as an event loop's.
    public static func enter(named name: String) throws {
        let target = path(of: name)
        let fd = open(target, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { throw NamespaceError.notFound(name) }
            throw SystemError.fromErrno("open \(target)")
        }
        defer { close(fd) }
        try enter(fd, path: target, away: true)
    }

    /// `setns` into the namespace file open as `fd`, keeping the thread's away-from-home flag
    /// (see `GlobalExecutorHome`) true to where it now is.
    private static func enter(_ fd: Int32, path: String, away: Bool) throws {
        if away { try GlobalExecutorHome.prepareToLeave() }
        let rc = csys_enter_network(fd)
        if rc != 0 { throw SystemError("setns(\(path))", code: -rc) }
        GlobalExecutorHome.arrived(away: away)
    }

    /// Whether this process has already made the directory a shared mount point.
    private static let directoryPrepared = Mutex<Bool>(false)

    /// Makes the directory a shared mount point, as iproute2 does, so that namespaces mounted in it
    /// propagate to other mount namespaces (libvirtd's, for one). Once per process: the mount calls
    /// cost more than the rest of creating a namespace.
    private static func prepareDirectory() throws {
        try directoryPrepared.withLock { prepared in
            if prepared { return }
            if mkdir(directory, 0o755) != 0 && errno != EEXIST {
                throw SystemError.fromErrno("mkdir \(directory)")
            }
            if mount("", directory, "none", UInt(MS_SHARED | MS_REC), nil) != 0 {
                guard errno == EINVAL else { throw SystemError.fromErrno("mount --make-rshared \(directory)") }
                if mount(directory, directory, "none", UInt(MS_BIND | MS_REC), nil) != 0 {
                    throw SystemError.fromErrno("mount --bind \(directory)")
                }
                if mount("", directory, "none", UInt(MS_SHARED | MS_REC), nil) != 0 {
                    throw SystemError.fromErrno("mount --make-rshared \(directory)")
                }
            }
            prepared = true
        }
    }

    private static func isMountedNamespace(_ path: String) -> Bool {
        csys_is_namespace_file(path) == 1
    }
}

/// Why a namespace operation was refused.
public enum NamespaceError: Error, CustomStringConvertible, Equatable, Sendable {
    case invalidName(String)
    case notFound(String)

    public var description: String {
        switch self {
        case .invalidName(let name):
            return "invalid network namespace name '\(name)': use 1 to \(NetworkNamespace.maximumNameLength) printable ASCII characters, no '/', not starting with '.'"
        case .notFound(let name):
            return "network namespace '\(name)' does not exist in \(NetworkNamespace.directory)"
        }
    }
}

/// A dedicated thread that lives inside one network namespace.
///
/// Everything that must happen "inside namespace N" (netlink sockets, `/proc/sys/net` writes,
/// libiptc) runs on such a thread: `setns` changes only the calling thread, and sockets stay in the
/// namespace they were opened in. Actors adopt it as their executor.
public final class NamespaceExecutor: Sendable {
    /// The namespace name, or nil for the namespace the process started in.
    public let namespace: String?
    /// The thread every job runs on.
    public let executor: ThreadExecutor

    /// Starts a thread in `namespace`, or in the process's own namespace when it is nil. With
    /// `creating`, a missing namespace is created by the thread itself (one thread start instead of
    /// two, which matters when realizing hundreds of networks); otherwise a missing one is an error.
    public init(namespace: String?, creating: Bool = false) throws {
        self.namespace = namespace
        guard let namespace else {
            // Explicitly, not by inheritance: the creating thread may have entered another namespace.
            executor = try ThreadExecutor(name: "ns-host", prepare: NetworkNamespace.enterProcessNamespace)
            identity = nil
            return
        }
        try NetworkNamespace.validate(name: namespace)
        let entered = EnteredNamespace()
        executor = try ThreadExecutor(name: Self.threadName(namespace), prepare: Self.enter(namespace, creating: creating, recording: entered))
        identity = entered.identity
    }

    /// Starts a thread in `namespace` (creating the namespace when `creating`) without blocking the
    /// caller's thread while it comes up: for async code that starts many.
    public static func start(namespace: String?, creating: Bool = false) async throws -> NamespaceExecutor {
        guard let namespace else {
            return NamespaceExecutor(
                namespace: nil, executor: try await ThreadExecutor.start(name: "ns-host", prepare: NetworkNamespace.enterProcessNamespace),
                identity: nil)
        }
        try NetworkNamespace.validate(name: namespace)
        let entered = EnteredNamespace()
        let executor = try await ThreadExecutor.start(
            name: threadName(namespace), prepare: enter(namespace, creating: creating, recording: entered))
        return NamespaceExecutor(namespace: namespace, executor: executor, identity: entered.identity)
    }

    private static func threadName(_ namespace: String) -> String { "ns-\(namespace.prefix(12))" }

    /// The new thread's first step: into the namespace (made first, when `creating`), noting which one.
    private static func enter(_ namespace: String, creating: Bool, recording entered: EnteredNamespace) -> @Sendable () throws -> Void {
        {
            try creating ? NetworkNamespace.createAndEnter(named: namespace) : NetworkNamespace.enter(named: namespace)
            entered.identity = NetworkNamespace.identity(atPath: "/proc/thread-self/ns/net")
        }
    }

    /// Whether the thread is still in the namespace its name now stands for: false once the
    /// namespace was deleted (and perhaps created again) underneath it.
    public var isCurrent: Bool {
        guard let namespace else { return true }
        return identity != nil && NetworkNamespace.identity(named: namespace) == identity
    }

    /// The identity of the namespace the thread entered (see ``NetworkNamespace/identity(named:)``);
    /// nil for the process's own namespace.
    public let identity: UInt64?

    private init(namespace: String?, executor: ThreadExecutor, identity: UInt64?) {
        self.namespace = namespace
        self.executor = executor
        self.identity = identity
    }
}

/// The namespace a new thread entered, handed from the thread back to its creator.
private final class EnteredNamespace: Sendable {
    private let value = Mutex<UInt64?>(nil)

    var identity: UInt64? {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
