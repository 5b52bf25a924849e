/* core/portpool.h — local (source address, port) pairs for upstream
 * connections, one pool per worker (single-threaded, no locks).
 *
 * The configured source addresses x port range are split so workers never
 * share a pair; with several source addresses one box holds more than 64k
 * connections to a single target. Allocation is O(1); released pairs go to
 * the back of a FIFO so a pair in TIME_WAIT is reused as late as possible.
 */
#ifndef RS_PORTPOOL_H
#define RS_PORTPOOL_H

#include "core/common.h"

#include <sys/socket.h>

struct rs_portpool;

struct rs_portpool_stats {
	uint64_t size, in_use, exhausted, bad_put;
};

/* 0, -EINVAL (empty range or slice) or -ENOMEM. */
int rs_portpool_init(struct rs_portpool **out, const struct sockaddr_storage *addrs,
		     size_t naddrs, uint16_t port_min, uint16_t port_max, unsigned worker,
		     unsigned nworkers);
void rs_portpool_free(struct rs_portpool *p);

/* Next free pair: <out> is the address with the port set. 0 or -EADDRNOTAVAIL. */
int rs_portpool_get(struct rs_portpool *p, struct sockaddr_storage *out);
/* Give a pair back; a pair that is not out is ignored and counted. */
void rs_portpool_put(struct rs_portpool *p, const struct sockaddr_storage *pair);

void rs_portpool_stats(const struct rs_portpool *p, struct rs_portpool_stats *out);

#endif
