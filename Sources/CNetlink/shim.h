#ifndef CNETLINK_SHIM_H
#define CNETLINK_SHIM_H
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/tc.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/classifier.h>
#include <linux/filter.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/if_ether.h>

/*
 * A persistent tap is made with ioctls on /dev/net/tun; there is no rtnetlink
 * message for it. ioctl is variadic, which Swift cannot call, hence this helper.
 * Returns 0, or -errno.
 */
static inline int cnl_create_persistent_tap(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); return -e; }
    if (ioctl(fd, TUNSETPERSIST, 1) < 0) { int e = errno; close(fd); return -e; }
    close(fd);
    return 0;
}

/*
 * Message readers for callbacks. Swift cannot do the NLMSG_DATA/attribute pointer arithmetic
 * comfortably, and doing it here keeps every length check next to the pointer it guards.
 */

/* The nlmsg_type of a received message. */
static inline int cnl_message_type(struct nl_msg *msg) {
    return nlmsg_hdr(msg)->nlmsg_type;
}

/* The ifi_family of an RTM_NEWLINK/RTM_DELLINK message, or -1 if it is too short. Bridge port
 * events arrive on RTNLGRP_LINK with AF_BRIDGE; only AF_UNSPEC ones describe the link itself. */
static inline int cnl_link_message_family(struct nl_msg *msg) {
    struct nlmsghdr *hdr = nlmsg_hdr(msg);
    if (!nlmsg_valid_hdr(hdr, sizeof(struct ifinfomsg))) return -1;
    return ((struct ifinfomsg *)nlmsg_data(hdr))->ifi_family;
}

/* Reads one bridge FDB entry (RTM_NEWNEIGH, AF_BRIDGE). Returns 1 and fills ifindex and the
 * remote (network byte order) when it is a flood entry: all-zeros MAC with an IPv4 NDA_DST.
 * Returns 0 for anything else. */
static inline int cnl_parse_flood_entry(struct nl_msg *msg, int *ifindex, uint32_t *remote) {
    static const unsigned char zero[6] = {0, 0, 0, 0, 0, 0};
    struct nlmsghdr *hdr = nlmsg_hdr(msg);
    if (hdr->nlmsg_type != RTM_NEWNEIGH || !nlmsg_valid_hdr(hdr, sizeof(struct ndmsg))) return 0;
    struct ndmsg *ndm = nlmsg_data(hdr);
    if (ndm->ndm_family != AF_BRIDGE) return 0;
    struct nlattr *lladdr = nlmsg_find_attr(hdr, sizeof(struct ndmsg), NDA_LLADDR);
    struct nlattr *dst = nlmsg_find_attr(hdr, sizeof(struct ndmsg), NDA_DST);
    if (!lladdr || nla_len(lladdr) != 6 || !dst || nla_len(dst) != 4) return 0;
    if (memcmp(nla_data(lladdr), zero, 6) != 0) return 0;
    *ifindex = ndm->ndm_ifindex;
    memcpy(remote, nla_data(dst), 4);
    return 1;
}

/*
 * The tap filters' tc handles. TC_H_MAKE and friends are macros Swift does not import.
 * clsact sits at parent TC_H_CLSACT with handle ffff:0; its ingress hook is ffff:fff2.
 */
static inline uint32_t cnl_clsact_parent(void) { return TC_H_CLSACT; }
static inline uint32_t cnl_clsact_handle(void) { return TC_H_MAKE(TC_H_CLSACT, 0); }
static inline uint32_t cnl_clsact_ingress(void) { return TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS); }

#endif
