#ifndef CIPTC_SHIM_H
#define CIPTC_SHIM_H

/*
 * libiptc.h pulls in glibc's <netinet/in.h>/<net/if.h> before the kernel UAPI
 * <linux/netfilter_ipv4/ip_tables.h>; that is the only order that compiles
 * (linux/libc-compat.h suppresses the duplicates only when glibc came first).
 * Never include a <linux/...> header above this line.
 */
#include <libiptc/libiptc.h>

/* Swift cannot do the byte-offset arithmetic of the IPT_* macros, so expose
 * tiny inline helpers instead. */
static inline const struct xt_entry_target *
ciptc_entry_target(const struct ipt_entry *e) {
    return (const struct xt_entry_target *)((const char *)e + e->target_offset);
}

static inline const struct xt_entry_match *
ciptc_entry_match(const struct ipt_entry *e, unsigned int offset) {
    return (const struct xt_entry_match *)((const char *)e + offset);
}

static inline unsigned int ciptc_entry_size(const struct ipt_entry *e) {
    return e->next_offset;
}

#endif
