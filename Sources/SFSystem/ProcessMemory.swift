import CLinux

/// The C heap of a long-running daemon. glibc's malloc makes an arena for each thread that
/// contends (up to eight per core) and keeps in each what its threads freed: an agent whose threads
/// come and go (one per network namespace a pass visits) held 22 MiB of freed heap in ten arenas,
/// a quarter of its resident memory.
public enum ProcessMemory {
    /// Caps malloc's arenas; call first thing, before threads start (existing arenas stay).
    public static func limitArenas(to arenas: Int32 = 2) {
        _ = csys_limit_malloc_arenas(arenas)
    }

    /// Gives the heap's free pages back to the kernel, after work that freed much (a
    /// reconciliation pass). Costs a walk of the free lists: a few milliseconds, not per request.
    public static func releaseFree() {
        _ = csys_release_free_memory()
    }
}
