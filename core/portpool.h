/* core/portpool.h — local (source address, port) pairs for upstream
 * connections, one pool per worker (single-threaded, no locks).
 *
 * The port range is split into <nworkers> contiguous slices and worker w
 * uses slice w on every source address, so two workers never hold the same
 * pair; with several source addresses one box can keep more than 64k
 * connections to a single target. Get and put are O(1): a ring of free pairs
 * and a hash of the source addresses, no scans. A released pair goes to the
 * back of the ring, so a pair that may still be in TIME_WAIT is reused as
 * late as possible; consecutive gets alternate between the source addresses.
 */
#ifndef RS_PORTPOOL_H
#define RS_PORTPOOL_H

#include "core/common.h"

#include <sys/socket.h>

struct rs_portpool;

struct rs_portpool_stats {
	uint64_t size;	    /* pairs owned by this worker */
	uint64_t in_use;    /* handed out and not yet put back */
	uint64_t exhausted; /* gets refused with -EADDRNOTAVAIL */
	uint64_t bad_put;   /* puts of a pair that was not out (ignored) */
};

/* Build worker <worker>'s pool (of <nworkers>) over <naddrs> source addresses
 * (AF_INET or AF_INET6; their ports are ignored, the rest — IPv6 scope id
 * included — is copied into every pair) and ports <port_min>..<port_max>.
 * The slices differ in size by at most one port. *<out> is the pool, or NULL
 * on failure. Returns 0, -ENOMEM, or -EINVAL when: no addresses, more than
 * 65535, an address of another family or one listed twice; port_min 0 or
 * above port_max; worker >= nworkers; or fewer ports than workers (a slice
 * would be empty). <addrs> is copied; the caller keeps it. */
int rs_portpool_init(struct rs_portpool **out, const struct sockaddr_storage *addrs,
		     size_t naddrs, uint16_t port_min, uint16_t port_max, unsigned worker,
		     unsigned nworkers);

/* Free the pool (NULL is accepted); pairs still out are forgotten. */
void rs_portpool_free(struct rs_portpool *p);

/* Hand out the free pair released longest ago (or never used): <out> is its
 * source address with the port set. 0, or -EADDRNOTAVAIL when every pair is
 * out (counted in <exhausted>). */
int rs_portpool_get(struct rs_portpool *p, struct sockaddr_storage *out);

/* Give back a pair from rs_portpool_get, once its socket is closed. A pair
 * that is not out — put twice, another worker's, or unknown — is ignored and
 * counted in <bad_put>. */
void rs_portpool_put(struct rs_portpool *p, const struct sockaddr_storage *pair);

void rs_portpool_stats(const struct rs_portpool *p, struct rs_portpool_stats *out);

#endif
