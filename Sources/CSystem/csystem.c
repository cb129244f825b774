#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <sys/vfs.h>
#include "csystem.h"

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
