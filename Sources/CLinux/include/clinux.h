#ifndef CSYSTEM_H
#define CSYSTEM_H

/* Linux calls that Swift's Glibc module does not import (they need _GNU_SOURCE or
 * <sys/vfs.h>). Each returns 0 or -errno. */
int csys_unshare_network(void);
int csys_enter_network(int fd);
/* 1 if path is a mounted namespace file (nsfs), 0 if not, -errno on failure. */
int csys_is_namespace_file(const char *path);

/* Names the calling thread as /proc/<pid>/task/<tid>/comm shows it (15 bytes at most). prctl is
 * variadic, which Swift cannot call. Returns 0 or -errno. */
int csys_set_thread_name(const char *name);
/* Starts a detached thread running body(context) with the given stack size. pthread_create's
 * start routine is awkward to pass from Swift; this keeps the attr handling in C. Returns 0 or an
 * errno value. */
int csys_spawn_thread(void *(*body)(void *), void *context, unsigned long stack_size);

#endif
