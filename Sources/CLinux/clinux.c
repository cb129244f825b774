#define _GNU_SOURCE
#include <sys/timex.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>
#include <sched.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/vfs.h>
#include "clinux.h"

#define CSYS_NSFS_MAGIC 0x6e736673

int csys_unshare_network(void) {
    return unshare(CLONE_NEWNET) == 0 ? 0 : -errno;
}

int csys_enter_network(int fd) {
    return setns(fd, CLONE_NEWNET) == 0 ? 0 : -errno;
}

int csys_is_namespace_file(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) != 0) return -errno;
    return fs.f_type == CSYS_NSFS_MAGIC ? 1 : 0;
}

int csys_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, name, 0, 0, 0) == 0 ? 0 : -errno;
}

int csys_spawn_thread(void *(*body)(void *), void *context, unsigned long stack_size) {
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0) return rc;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (stack_size > 0) pthread_attr_setstacksize(&attr, stack_size);
    pthread_t thread;
    rc = pthread_create(&thread, &attr, body, context);
    pthread_attr_destroy(&attr);
    return rc;
}

int csys_limit_malloc_arenas(int arenas) {
    return mallopt(M_ARENA_MAX, arenas) == 1 ? 0 : -EINVAL;
}

int csys_release_free_memory(void) {
    return malloc_trim(0);
}

int csys_clock_synchronised(void) {
    struct timex state = {0};
    int rc = adjtimex(&state);
    if (rc < 0) return -errno;
    return (rc == TIME_ERROR || (state.status & STA_UNSYNC)) ? 0 : 1;
}
