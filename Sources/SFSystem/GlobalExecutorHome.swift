import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// Keeps the threads of Swift's global executor in the process's own network namespace.
///
/// A new thread inherits the namespace of the thread that creates it, and Dispatch creates the
/// global executor's worker threads from whichever thread enqueues work when it needs one. Work
/// reaches the global executor from a namespace thread all the time: an actor running there (a
/// netlink session, the firewall) returns to its caller, a continuation is resumed there, a task
/// sleeps. A worker created at that moment (and every task it later runs, every socket it opens,
/// every process it spawns) would live in the other namespace: in the tests, agents spawned into a
/// test namespace, 127.0.0.1 unbindable, taps made where libvirt could not see them.
///
/// So every enqueue onto the global executor from a thread that is away from home (see
/// ``NetworkNamespace``) is handed to one thread that stays in the process's namespace, which
/// makes it there. This goes through the runtime's enqueue hooks (`swift_task_enqueueGlobal_hook`
/// and the two for delayed work), installed by CLinux before any thread first leaves home: in C,
/// because Swift 6.3 cannot compile a thin closure with the deadline hook's signature
/// (CLinux's executor_hooks.c).
enum GlobalExecutorHome {
    /// Called before the calling thread leaves the process's namespace: installs the hooks (once),
    /// or throws if they cannot be, and then the thread must not leave.
    static func prepareToLeave() throws {
        if let failure = installation { throw failure }
    }

    /// Records where the calling thread now is: away from the process's namespace (after a
    /// successful `setns` or `unshare` elsewhere) or home again.
    static func arrived(away: Bool) {
        csys_set_away_from_home(away ? 1 : 0)
    }

    private static let installation: SystemError? = {
        let rc = csys_install_executor_hooks()
        switch rc {
        case 0: return nil
        case -ENOSYS: return SystemError("finding Swift's global executor hooks (swift_task_enqueueGlobal_hook)", code: ENOSYS)
        case -EBUSY: return SystemError("installing sfnode's global executor hooks: another hook is installed", code: EBUSY)
        default: return SystemError("starting the thread that enqueues for namespace threads", code: -rc)
        }
    }()
}
