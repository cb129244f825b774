import CLinux

/// Starting a dedicated OS thread, named so that `top -H` and `/proc/<pid>/task/*/comm` show what
/// it is for. Foundation's `Thread` takes several times longer to start, which adds up when every
/// network namespace gets its own thread, and its name never reaches the kernel.
public enum OSThread {
    private final class Start {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Runs `body` on a new detached thread called `name` (truncated to 15 bytes by the kernel).
    public static func spawn(name: String, stackSize: Int = 1 << 20, _ body: @escaping @Sendable () -> Void) throws {
        let context = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
        let rc = csys_spawn_thread(
            { raw in
                guard let raw else { return nil }
                let start = Unmanaged<Start>.fromOpaque(raw).takeRetainedValue()
                _ = csys_set_thread_name(String(start.name.utf8.prefix(15)) ?? "sfnode")
                start.body()
                return nil
            }, context, UInt(stackSize))
        if rc != 0 {
            Unmanaged<Start>.fromOpaque(context).release()
            throw SystemError("pthread_create(\(name))", code: rc)
        }
    }
}
