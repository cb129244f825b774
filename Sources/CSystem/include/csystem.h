#ifndef CSYSTEM_H
#define CSYSTEM_H

/* Linux calls that Swift's Glibc module does not import (they need _GNU_SOURCE or
 * <sys/vfs.h>). Each returns 0 or -errno. */
int csys_unshare_network(void);
int csys_enter_network(int fd);
/* 1 if path is a mounted namespace file (nsfs), 0 if not, -errno on failure. */
int csys_is_namespace_file(const char *path);

#endif
