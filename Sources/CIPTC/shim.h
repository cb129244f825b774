#ifndef CIPTC_SHIM_H
#define CIPTC_SHIM_H

/*
 * libiptc.h pulls in glibc's <netinet/in.h>/<net/if.h> before the kernel UAPI
 * <linux/netfilter_ipv4/ip_tables.h>; that is the only order that compiles
 * (linux/libc-compat.h suppresses the duplicates only when glibc came first).
 * Never include a <linux/...> header above this line.
 */
#include <libiptc/libiptc.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/xt_comment.h>

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

/* ---- Sizes, all XT_ALIGN'd the way the kernel checks them. ---- */

static inline unsigned int ciptc_entry_header_size(void) {
    return XT_ALIGN(sizeof(struct ipt_entry));
}

static inline unsigned int ciptc_comment_match_size(void) {
    return XT_ALIGN(sizeof(struct xt_entry_match) + sizeof(struct xt_comment_info));
}

/* A standard target (verdict or jump) carries one int; NAT targets revision 0
 * carry one nf_nat_ipv4_multi_range_compat. */
static inline unsigned int ciptc_standard_target_size(void) {
    return XT_ALIGN(sizeof(struct xt_standard_target));
}

static inline unsigned int ciptc_nat_target_size(void) {
    return XT_ALIGN(sizeof(struct xt_entry_target) + sizeof(struct nf_nat_ipv4_multi_range_compat));
}

/* DNAT revision 2 carries one nf_nat_range2. */
static inline unsigned int ciptc_nat_range2_target_size(void) {
    return XT_ALIGN(sizeof(struct xt_entry_target) + sizeof(struct nf_nat_range2));
}

static inline unsigned int ciptc_max_comment_length(void) {
    return XT_MAX_COMMENT_LEN - 1;
}

/* ---- Building an entry. ---- */

/* What kind of target an entry gets. */
enum ciptc_target_kind {
    /* A verdict such as ACCEPT or a jump to a chain: xt_standard_target. */
    CIPTC_TARGET_STANDARD = 0,
    /* SNAT revision 0 to one address: NF_NAT_RANGE_MAP_IPS. */
    CIPTC_TARGET_NAT_TO_ADDRESS = 1,
    /* MASQUERADE revision 0: one range, no flags. */
    CIPTC_TARGET_NAT_NO_RANGE = 2,
    /* DNAT revision 2 (nf_nat_range2) to one address: NF_NAT_RANGE_MAP_IPS.
     * Revision 2 because it is what iptables 1.8.9 itself writes and the only
     * DNAT revision its iptables-save prints (revision 0 shows as
     * "[unsupported revision]"). */
    CIPTC_TARGET_NAT2_TO_ADDRESS = 3,
};

/* The plain fields of a rule. Addresses and masks are in network byte order;
 * interface names may be NULL or empty for "any". */
struct ciptc_rule_spec {
    uint32_t src, smsk, dst, dmsk;
    const char *iniface;
    const char *outiface;
    const char *comment;      /* NULL for no comment match */
    const char *target;       /* "ACCEPT", a chain name, "DNAT", "SNAT", "MASQUERADE" */
    enum ciptc_target_kind target_kind;
    uint32_t nat_address;     /* network byte order, for CIPTC_TARGET_NAT_TO_ADDRESS */
};

/* Fills name and mask exactly as iptables' xtables_parse_interface does: the
 * mask covers every character plus the trailing NUL, or, for a name ending in
 * '+', every character before the '+' (a prefix match). */
static inline int ciptc_fill_interface(const char *name, char *vianame, unsigned char *mask) {
    memset(vianame, 0, IFNAMSIZ);
    memset(mask, 0, IFNAMSIZ);
    if (name == NULL || name[0] == '\0') return 0;
    size_t length = strlen(name);
    if (length + 1 > IFNAMSIZ) return -1;
    memcpy(vianame, name, length);
    if (name[length - 1] == '+') {
        memset(mask, 0xFF, length - 1);
    } else {
        memset(mask, 0xFF, length + 1);
    }
    return 0;
}

/* Builds one complete ipt_entry (header, optional comment match, target) in a
 * calloc'd buffer the caller frees. NULL with errno EINVAL for an interface
 * name, comment or target name that does not fit, ENOMEM if out of memory. */
static inline struct ipt_entry *ciptc_entry_new(const struct ciptc_rule_spec *spec) {
    unsigned int header = ciptc_entry_header_size();
    unsigned int match = spec->comment != NULL ? ciptc_comment_match_size() : 0;
    unsigned int target;
    switch (spec->target_kind) {
    case CIPTC_TARGET_STANDARD: target = ciptc_standard_target_size(); break;
    case CIPTC_TARGET_NAT2_TO_ADDRESS: target = ciptc_nat_range2_target_size(); break;
    default: target = ciptc_nat_target_size(); break;
    }
    if (spec->target == NULL || strlen(spec->target) >= XT_EXTENSION_MAXNAMELEN
        || (spec->comment != NULL && strlen(spec->comment) >= XT_MAX_COMMENT_LEN)) {
        errno = EINVAL;
        return NULL;
    }
    struct ipt_entry *e = calloc(1, header + match + target);
    if (e == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    e->ip.src.s_addr = spec->src;
    e->ip.smsk.s_addr = spec->smsk;
    e->ip.dst.s_addr = spec->dst;
    e->ip.dmsk.s_addr = spec->dmsk;
    if (ciptc_fill_interface(spec->iniface, e->ip.iniface, e->ip.iniface_mask) != 0
        || ciptc_fill_interface(spec->outiface, e->ip.outiface, e->ip.outiface_mask) != 0) {
        free(e);
        errno = EINVAL;
        return NULL;
    }
    e->target_offset = (uint16_t)(header + match);
    e->next_offset = (uint16_t)(header + match + target);

    if (spec->comment != NULL) {
        struct xt_entry_match *m = (struct xt_entry_match *)e->elems;
        m->u.match_size = (uint16_t)match;
        strcpy(m->u.user.name, "comment");
        m->u.user.revision = 0;
        struct xt_comment_info *info = (struct xt_comment_info *)m->data;
        strcpy(info->comment, spec->comment);
    }

    struct xt_entry_target *t = (struct xt_entry_target *)((char *)e + e->target_offset);
    t->u.target_size = (uint16_t)target;
    strcpy(t->u.user.name, spec->target);
    t->u.user.revision = 0;
    if (spec->target_kind == CIPTC_TARGET_NAT2_TO_ADDRESS) {
        struct nf_nat_range2 *range = (struct nf_nat_range2 *)t->data;
        t->u.user.revision = 2;
        range->flags = NF_NAT_RANGE_MAP_IPS;
        range->min_addr.ip = spec->nat_address;
        range->max_addr.ip = spec->nat_address;
    } else if (spec->target_kind != CIPTC_TARGET_STANDARD) {
        struct nf_nat_ipv4_multi_range_compat *range = (struct nf_nat_ipv4_multi_range_compat *)t->data;
        range->rangesize = 1;
        if (spec->target_kind == CIPTC_TARGET_NAT_TO_ADDRESS) {
            range->range[0].flags = NF_NAT_RANGE_MAP_IPS;
            range->range[0].min_ip = spec->nat_address;
            range->range[0].max_ip = spec->nat_address;
        }
    }
    return e;
}

/* ---- Reading an entry back. ---- */

/* A flattened view of an entry, with pointers into it (valid while the handle
 * that returned the entry lives). */
struct ciptc_rule_view {
    uint32_t src, smsk, dst, dmsk;  /* network byte order */
    const char *iniface;            /* "" when any */
    const char *outiface;
    /* 1 when the interface names are NUL-terminated and their masks are what
     * ciptc_fill_interface makes for them. */
    int interfaces_canonical;
    /* 1 when no protocol, fragment flag or inversion is set. */
    int plain;
    unsigned int match_count;
    /* The comment when the only match is a well-formed "comment" match. */
    const char *comment;
    /* 1 when the target carries exactly one IPv4 range with no port range,
     * either as nf_nat_ipv4_multi_range_compat (revision 0) or as
     * nf_nat_range2 (revision 2); then the fields below are set. */
    int nat_single_range;
    unsigned int target_revision;
    unsigned int nat_flags;
    uint32_t nat_min_ip, nat_max_ip; /* network byte order */
};

static inline int ciptc_interface_is_canonical(const char *name, const unsigned char *mask) {
    if (memchr(name, '\0', IFNAMSIZ) == NULL) return 0;
    char expected_name[IFNAMSIZ];
    unsigned char expected_mask[IFNAMSIZ];
    if (ciptc_fill_interface(name, expected_name, expected_mask) != 0) return 0;
    return memcmp(expected_mask, mask, IFNAMSIZ) == 0;
}

static inline void ciptc_view_entry(const struct ipt_entry *e, struct ciptc_rule_view *view) {
    memset(view, 0, sizeof(*view));
    view->src = e->ip.src.s_addr;
    view->smsk = e->ip.smsk.s_addr;
    view->dst = e->ip.dst.s_addr;
    view->dmsk = e->ip.dmsk.s_addr;
    view->interfaces_canonical = ciptc_interface_is_canonical(e->ip.iniface, e->ip.iniface_mask)
        && ciptc_interface_is_canonical(e->ip.outiface, e->ip.outiface_mask);
    view->iniface = view->interfaces_canonical ? e->ip.iniface : "";
    view->outiface = view->interfaces_canonical ? e->ip.outiface : "";
    view->plain = e->ip.proto == 0 && e->ip.flags == 0 && e->ip.invflags == 0;

    unsigned int offset = sizeof(struct ipt_entry);
    while (offset + sizeof(struct xt_entry_match) <= e->target_offset) {
        const struct xt_entry_match *m = ciptc_entry_match(e, offset);
        if (m->u.match_size < sizeof(struct xt_entry_match)) break;
        view->match_count++;
        offset += m->u.match_size;
    }
    if (view->match_count == 1) {
        const struct xt_entry_match *m = ciptc_entry_match(e, sizeof(struct ipt_entry));
        const struct xt_comment_info *info = (const struct xt_comment_info *)m->data;
        if (strcmp(m->u.user.name, "comment") == 0 && m->u.user.revision == 0
            && m->u.match_size == ciptc_comment_match_size()
            && memchr(info->comment, '\0', XT_MAX_COMMENT_LEN) != NULL) {
            view->comment = info->comment;
        }
    }

    const struct xt_entry_target *t = ciptc_entry_target(e);
    view->target_revision = t->u.user.revision;
    if (t->u.target_size == ciptc_nat_range2_target_size() && t->u.user.revision == 2) {
        const struct nf_nat_range2 *range = (const struct nf_nat_range2 *)t->data;
        if (range->min_addr.all[1] == 0 && range->min_addr.all[2] == 0 && range->min_addr.all[3] == 0
            && range->max_addr.all[1] == 0 && range->max_addr.all[2] == 0 && range->max_addr.all[3] == 0
            && range->min_proto.all == 0 && range->max_proto.all == 0 && range->base_proto.all == 0) {
            view->nat_single_range = 1;
            view->nat_flags = range->flags;
            view->nat_min_ip = range->min_addr.ip;
            view->nat_max_ip = range->max_addr.ip;
        }
    } else if (t->u.target_size == ciptc_nat_target_size() && t->u.user.revision == 0) {
        const struct nf_nat_ipv4_multi_range_compat *range = (const struct nf_nat_ipv4_multi_range_compat *)t->data;
        if (range->rangesize == 1 && range->range[0].min.all == 0 && range->range[0].max.all == 0) {
            view->nat_single_range = 1;
            view->nat_flags = range->range[0].flags;
            view->nat_min_ip = range->range[0].min_ip;
            view->nat_max_ip = range->range[0].max_ip;
        }
    }
}

static inline unsigned int ciptc_nat_range_map_ips(void) {
    return NF_NAT_RANGE_MAP_IPS;
}

#endif
