#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// A doorbell between the processes of one host: ``ring()`` writes one byte into a file, and every
/// process that watches that file through ``FileWatcher`` hears it from the kernel (inotify).
///
/// Why a file and inotify, rather than watching the SQLite database or its WAL, or a socket per
/// listener: the WAL changes on every commit of every table (lease renewals, events, check-ins), so
/// its watchers would wake for work that is not theirs, and SQLite deletes and recreates it when the
/// last connection closes, which drops the watch. A socket per listener needs a directory of
/// sockets that ringers enumerate on every ring and that dead processes litter. A file written on
/// purpose fans out to any number of watchers in the kernel, costs the ringer one `pwrite`, keeps
/// the root-only mode of the store beside it, and needs no cleanup.
public final class FileDoorbell: Sendable {
    /// The doorbell file.
    public let path: String
    private let descriptor: Int32
    /// Set while a ring is queued: rings that come before it is written are one ring, since the
    /// watchers only need to know "look again", not how many times.
    private let pending = Atomic<Bool>(false)
    private let queue = DispatchQueue(label: "sfnode.doorbell")

    /// Opens (creating it, mode 0600) the doorbell file at `path`.
    public init(path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 { throw SystemError.fromErrno("open \(path)") }
        self.path = path
        self.descriptor = fd
    }

    deinit {
        close(descriptor)
    }

    /// Rings: every watcher of the file, in any process, hears it soon after. The write happens on a
    /// queue of its own (it is file I/O, kept off the cooperative pool); rings while one is queued
    /// coalesce into it.
    public func ring() {
        guard !pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.async { [self] in
            // Cleared before the write, so that a ring that arrives during it is written too.
            pending.store(false, ordering: .releasing)
            var byte: UInt8 = 1
            // The byte always goes to offset 0: the file never grows. A failed write (a full or
            // read-only disk) only delays watchers to their poll, so it is not reported here.
            _ = pwrite(descriptor, &byte, 1, 0)
        }
    }
}

/// Watches files for writes and attribute changes with one inotify instance and one thread for the
/// whole process, so that any number of stores cost one descriptor of the kernel's per-user limit
/// (`fs.inotify.max_user_instances`, 128 by default).
public final class FileWatcher: Sendable {
    /// A subscription made by ``watch(path:onChange:)``; ``cancel()`` ends it.
    public final class Watch: Sendable {
        fileprivate let watcher: FileWatcher
        fileprivate let descriptor: Int32
        fileprivate let id: Int

        fileprivate init(watcher: FileWatcher, descriptor: Int32, id: Int) {
            self.watcher = watcher
            self.descriptor = descriptor
            self.id = id
        }

        /// Stops calling this watch's handler. Idempotent.
        public func cancel() { watcher.remove(self) }

        deinit { cancel() }
    }

    private struct State {
        var nextID = 0
        /// Handlers by inotify watch descriptor: two watches of one file share a descriptor.
        var handlers: [Int32: [Int: @Sendable () -> Void]] = [:]
    }

    private let inotify: Int32
    private let state = Mutex(State())

    /// The process's watcher, started on first use, or why inotify is not available (callers then
    /// fall back to polling).
    public static let shared: Result<FileWatcher, SystemError> = Result { try FileWatcher() }
        .mapError { $0 as? SystemError ?? SystemError("inotify_init1", code: EINVAL) }

    private init() throws {
        let fd = inotify_init1(Int32(IN_CLOEXEC))
        if fd < 0 { throw SystemError.fromErrno("inotify_init1") }
        inotify = fd
        do {
            try OSThread.spawn(name: "sf-filewatch", stackSize: 256 << 10) { [self] in readEvents() }
        } catch {
            close(fd)
            throw error
        }
    }

    /// Calls `onChange` (on the watcher's thread; keep it short) whenever `path` is written or its
    /// attributes change, until the returned watch is cancelled or released.
    public func watch(path: String, onChange: @escaping @Sendable () -> Void) throws -> Watch {
        // The add and the handler's registration are one step under the lock, so that an event for a
        // descriptor is never read between the two and dropped.
        try state.withLock { state in
            let wd = inotify_add_watch(inotify, path, UInt32(IN_MODIFY | IN_ATTRIB))
            if wd < 0 { throw SystemError.fromErrno("inotify_add_watch \(path)") }
            state.nextID += 1
            state.handlers[wd, default: [:]][state.nextID] = onChange
            return Watch(watcher: self, descriptor: wd, id: state.nextID)
        }
    }

    fileprivate func remove(_ watch: Watch) {
        state.withLock { state in
            guard state.handlers[watch.descriptor]?.removeValue(forKey: watch.id) != nil else { return }
            if state.handlers[watch.descriptor]?.isEmpty == true {
                state.handlers[watch.descriptor] = nil
                _ = inotify_rm_watch(inotify, watch.descriptor)
            }
        }
    }

    /// The thread's body: blocks in `read` for the process's lifetime (the watcher is never freed).
    private func readEvents() {
        let capacity = 4096
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: MemoryLayout<inotify_event>.alignment)
        defer { buffer.deallocate() }
        let header = MemoryLayout<inotify_event>.size
        while true {
            let count = read(inotify, buffer, capacity)
            if count < 0 {
                if errno == EINTR { continue }
                return
            }
            // Every watch descriptor named in this batch is told once, however many events it had.
            var changed = Set<Int32>()
            var offset = 0
            while offset + header <= count {
                let event = buffer.load(fromByteOffset: offset, as: inotify_event.self)
                if event.mask & UInt32(IN_IGNORED) != 0 {
                    // The file was deleted (or its file system unmounted): the watch is gone.
                    state.withLock { _ = $0.handlers.removeValue(forKey: event.wd) }
                } else {
                    changed.insert(event.wd)
                }
                offset += header + Int(event.len)
            }
            let handlers = state.withLock { state in changed.flatMap { state.handlers[$0].map { Array($0.values) } ?? [] } }
            for handler in handlers { handler() }
        }
    }
}
