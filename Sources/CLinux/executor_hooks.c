#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/prctl.h>
#include "clinux.h"

/* Swift's global executor kept at home (SFSystem's GlobalExecutorHome.swift says why): a flag per
 * thread saying whether it left the process's network namespace, and the runtime's enqueue hooks,
 * which hand work enqueued from such a thread to one thread that never leaves. In C because Swift
 * 6.3 cannot compile a thin closure with the deadline hook's signature. */

static __thread int csys_away_from_home = 0;

void csys_set_away_from_home(int away) {
    csys_away_from_home = away;
}

int csys_is_away_from_home(void) {
    return csys_away_from_home;
}

/* Swift's global executor hooks (swift/Runtime/Concurrency.h): each receives the job and the
 * runtime's own implementation, in Swift's calling convention. */
#define CSYS_SWIFTCC __attribute__((swiftcall))
typedef CSYS_SWIFTCC void (*csys_enqueue_original)(void *job);
typedef CSYS_SWIFTCC void (*csys_enqueue_hook)(void *job, csys_enqueue_original original);
typedef CSYS_SWIFTCC void (*csys_delay_original)(unsigned long long delay, void *job);
typedef CSYS_SWIFTCC void (*csys_delay_hook)(unsigned long long delay, void *job, csys_delay_original original);
typedef CSYS_SWIFTCC void (*csys_deadline_original)(long long sec, long long nsec, long long tsec, long long tnsec, int clock, void *job);
typedef CSYS_SWIFTCC void (*csys_deadline_hook)(long long sec, long long nsec, long long tsec, long long tnsec, int clock, void *job,
                                                csys_deadline_original original);

enum csys_forward_kind { CSYS_ENQUEUE, CSYS_DELAY, CSYS_DEADLINE };

/* One enqueue to make at home: the runtime's function and its arguments. */
struct csys_forwarded {
    enum csys_forward_kind kind;
    void *job;
    void *original;
    unsigned long long delay;
    long long sec, nsec, tsec, tnsec;
    int clock;
    struct csys_forwarded *next;
};

static pthread_mutex_t csys_home_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t csys_home_ready = PTHREAD_COND_INITIALIZER;
static struct csys_forwarded *csys_home_head = NULL, *csys_home_tail = NULL;
static unsigned long csys_home_forwarded = 0;

static void *csys_home_main(void *unused) {
    (void)unused;
    prctl(PR_SET_NAME, "ns-home", 0, 0, 0);
    /* Explicitly home, whatever thread started this one. */
    int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        setns(fd, CLONE_NEWNET);
        close(fd);
    }
    csys_away_from_home = 0;
    for (;;) {
        pthread_mutex_lock(&csys_home_lock);
        while (csys_home_head == NULL) pthread_cond_wait(&csys_home_ready, &csys_home_lock);
        struct csys_forwarded *item = csys_home_head;
        csys_home_head = item->next;
        if (csys_home_head == NULL) csys_home_tail = NULL;
        pthread_mutex_unlock(&csys_home_lock);
        switch (item->kind) {
        case CSYS_ENQUEUE: ((csys_enqueue_original)item->original)(item->job); break;
        case CSYS_DELAY: ((csys_delay_original)item->original)(item->delay, item->job); break;
        case CSYS_DEADLINE:
            ((csys_deadline_original)item->original)(item->sec, item->nsec, item->tsec, item->tnsec, item->clock, item->job);
            break;
        }
        free(item);
    }
    return NULL;
}

static void csys_forward(struct csys_forwarded item) {
    struct csys_forwarded *copy = malloc(sizeof item);
    if (copy == NULL) abort(); /* a lost job would hang its task forever */
    *copy = item;
    copy->next = NULL;
    pthread_mutex_lock(&csys_home_lock);
    if (csys_home_tail) csys_home_tail->next = copy; else csys_home_head = copy;
    csys_home_tail = copy;
    csys_home_forwarded++;
    pthread_cond_signal(&csys_home_ready);
    pthread_mutex_unlock(&csys_home_lock);
}

static CSYS_SWIFTCC void csys_enqueue_global(void *job, csys_enqueue_original original) {
    if (!csys_away_from_home) { original(job); return; }
    csys_forward((struct csys_forwarded){ .kind = CSYS_ENQUEUE, .job = job, .original = (void *)original });
}

static CSYS_SWIFTCC void csys_enqueue_global_with_delay(unsigned long long delay, void *job, csys_delay_original original) {
    if (!csys_away_from_home) { original(delay, job); return; }
    csys_forward((struct csys_forwarded){ .kind = CSYS_DELAY, .job = job, .original = (void *)original, .delay = delay });
}

static CSYS_SWIFTCC void csys_enqueue_global_with_deadline(long long sec, long long nsec, long long tsec, long long tnsec, int clock,
                                                           void *job, csys_deadline_original original) {
    if (!csys_away_from_home) { original(sec, nsec, tsec, tnsec, clock, job); return; }
    csys_forward((struct csys_forwarded){
        .kind = CSYS_DEADLINE, .job = job, .original = (void *)original, .sec = sec, .nsec = nsec, .tsec = tsec, .tnsec = tnsec,
        .clock = clock });
}

static pthread_once_t csys_hooks_once = PTHREAD_ONCE_INIT;
static int csys_hooks_result = 0;

static void csys_install_hooks_once(void) {
    csys_enqueue_hook *enqueue = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobal_hook");
    csys_delay_hook *delay = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobalWithDelay_hook");
    csys_deadline_hook *deadline = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobalWithDeadline_hook");
    if (!enqueue || !delay || !deadline) { csys_hooks_result = -ENOSYS; return; }
    if (*enqueue || *delay || *deadline) { csys_hooks_result = -EBUSY; return; }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t home;
    int rc = pthread_create(&home, &attr, csys_home_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) { csys_hooks_result = -rc; return; }
    *enqueue = csys_enqueue_global;
    *delay = csys_enqueue_global_with_delay;
    *deadline = csys_enqueue_global_with_deadline;
}

int csys_install_executor_hooks(void) {
    pthread_once(&csys_hooks_once, csys_install_hooks_once);
    return csys_hooks_result;
}

unsigned long csys_forwarded_enqueues(void) {
    pthread_mutex_lock(&csys_home_lock);
    unsigned long count = csys_home_forwarded;
    pthread_mutex_unlock(&csys_home_lock);
    return count;
}
