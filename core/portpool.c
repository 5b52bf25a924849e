#include "core/common.h"

#include <netinet/in.h>

#include "core/portpool.h"

struct rs_portpool {
	struct sockaddr_storage *addrs;
	size_t naddrs;
	uint16_t lo, hi;  /* this worker's slice */
	uint32_t *fifo;   /* entries: addr index << 16 | port */
	uint8_t *out;     /* one flag per pair: handed out */
	size_t size, head, count;
	struct rs_portpool_stats st;
};

static size_t pair_index(const struct rs_portpool *p, size_t addr, uint16_t port)
{
	return addr * (size_t)(p->hi - p->lo + 1) + (size_t)(port - p->lo);
}

int rs_portpool_init(struct rs_portpool **out, const struct sockaddr_storage *addrs,
		     size_t naddrs, uint16_t port_min, uint16_t port_max, unsigned worker,
		     unsigned nworkers)
{
	struct rs_portpool *p;
	size_t ports, per;

	*out = NULL;
	if (!naddrs || port_min > port_max || !nworkers || worker >= nworkers || naddrs > 65535)
		return -EINVAL;
	ports = (size_t)(port_max - port_min + 1);
	per = ports / nworkers;
	if (!per)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->lo = (uint16_t)(port_min + worker * per);
	p->hi = (uint16_t)(worker == nworkers - 1 ? port_max : p->lo + per - 1);
	p->naddrs = naddrs;
	p->size = naddrs * (size_t)(p->hi - p->lo + 1);
	p->addrs = malloc(naddrs * sizeof(*addrs));
	p->fifo = malloc(p->size * sizeof(*p->fifo));
	p->out = calloc(p->size, 1);
	if (!p->addrs || !p->fifo || !p->out) {
		rs_portpool_free(p);
		return -ENOMEM;
	}
	memcpy(p->addrs, addrs, naddrs * sizeof(*addrs));
	/* Interleave addresses so consecutive connections spread across them. */
	for (uint32_t port = p->lo, n = 0; port <= p->hi; port++)
		for (size_t a = 0; a < naddrs; a++)
			p->fifo[n++] = (uint32_t)a << 16 | port;
	p->count = p->size;
	p->st.size = p->size;
	*out = p;
	return 0;
}

void rs_portpool_free(struct rs_portpool *p)
{
	if (!p)
		return;
	free(p->addrs);
	free(p->fifo);
	free(p->out);
	free(p);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons(port);
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

int rs_portpool_get(struct rs_portpool *p, struct sockaddr_storage *out)
{
	uint32_t e;

	if (!p->count) {
		p->st.exhausted++;
		return -EADDRNOTAVAIL;
	}
	e = p->fifo[p->head];
	p->head = (p->head + 1) % p->size;
	p->count--;
	*out = p->addrs[e >> 16];
	set_port(out, (uint16_t)e);
	p->out[pair_index(p, e >> 16, (uint16_t)e)] = 1;
	p->st.in_use++;
	return 0;
}

void rs_portpool_put(struct rs_portpool *p, const struct sockaddr_storage *pair)
{
	uint16_t port = get_port(pair);
	size_t a, idx;

	/* A linear search over the source addresses: there are a handful. */
	for (a = 0; a < p->naddrs; a++)
		if (same_addr(&p->addrs[a], pair))
			break;
	if (a == p->naddrs || port < p->lo || port > p->hi) {
		p->st.bad_put++;
		return;
	}
	idx = pair_index(p, a, port);
	if (!p->out[idx]) {
		p->st.bad_put++;
		return;
	}
	p->out[idx] = 0;
	p->fifo[(p->head + p->count) % p->size] = (uint32_t)a << 16 | port;
	p->count++;
	p->st.in_use--;
}

void rs_portpool_stats(const struct rs_portpool *p, struct rs_portpool_stats *out)
{
	*out = p->st;
}
