#ifndef CSYSTEM_H
#define CSYSTEM_H

/* Linux calls that Swift's Glibc module does not import (they need _GNU_SOURCE or
 * <sys/vfs.h>). Each returns 0 or -errno. */
int csys_unshare_network(void);
int csys_enter_network(int fd);
/* 1 if path is a mounted namespace file (nsfs), 0 if not, -errno on failure. */
int csys_is_namespace_file(const char *path);

/* Whether the calling thread has entered a network namespace other than the process's own
 * (a thread-local flag NetworkNamespace keeps: set by setns/unshare into another namespace,
 * cleared on the way back). */
void csys_set_away_from_home(int away);
int csys_is_away_from_home(void);
/* Installs hooks on Swift's global executor (swift_task_enqueueGlobal_hook and the two for
 * delayed work) that hand every enqueue made on a thread away from home to one thread in the
 * process's own namespace, which makes it there: Dispatch creates its worker threads from the
 * enqueuing thread, and they would inherit its namespace. Once per process; later calls return
 * the first one's result. 0, -ENOSYS (no hooks in this runtime), -EBUSY (another hook is
 * installed) or -errno of starting the thread. */
int csys_install_executor_hooks(void);
/* How many enqueues were handed over so far. */
unsigned long csys_forwarded_enqueues(void);

/* Names the calling thread as /proc/<pid>/task/<tid>/comm shows it (15 bytes at most). prctl is
 * variadic, which Swift cannot call. Returns 0 or -errno. */
int csys_set_thread_name(const char *name);
/* Starts a detached thread running body(context) with the given stack size. pthread_create's
 * start routine is awkward to pass from Swift; this keeps the attr handling in C. Returns 0 or an
 * errno value. */
int csys_spawn_thread(void *(*body)(void *), void *context, unsigned long stack_size);

/* glibc's malloc, which Swift's Glibc module does not import (<malloc.h>). Caps the arenas at
 * `arenas`: by default glibc makes one for each thread that contends, up to eight per core, and
 * each keeps what its threads freed. Returns 0 or -EINVAL. */
int csys_limit_malloc_arenas(int arenas);
/* Hands the free memory of every arena back to the kernel (malloc_trim(0)); 1 if it released
 * any. */
int csys_release_free_memory(void);
/* Whether the kernel's clock is synchronised (adjtimex): 1 yes, 0 no, -errno when it cannot say. */
int csys_clock_synchronised(void);

#endif
