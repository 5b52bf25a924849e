#include "core/common.h"

#include <netinet/in.h>

#include "core/portpool.h"

/* A pair is (address index << 16 | port) in the ring, and
 * address index * nports + (port - lo) in the <is_out> flags. */
struct rs_portpool {
	struct sockaddr_storage *addrs;
	size_t naddrs;
	uint32_t *addr_hash; /* open addressing over <addrs>: index + 1, 0 = empty */
	size_t hash_mask;
	uint16_t lo, hi; /* this worker's slice of the port range */
	uint32_t *ring;	 /* free pairs, oldest at <head> */
	uint8_t *is_out;
	size_t size, head, nfree;
	struct rs_portpool_stats st;
};

/* The address bytes of <ss>, or NULL for another family. */
static const uint8_t *addr_bytes(const struct sockaddr_storage *ss, size_t *len)
{
	if (ss->ss_family == AF_INET6) {
		*len = 16;
		return ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
	}
	if (ss->ss_family == AF_INET) {
		*len = 4;
		return (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr.s_addr;
	}
	return NULL;
}

/* FNV-1a over family and address. */
static size_t addr_hash(const struct sockaddr_storage *ss)
{
	size_t len = 0;
	const uint8_t *b = addr_bytes(ss, &len);
	uint64_t h = 14695981039346656037ull;

	h = (h ^ ss->ss_family) * 1099511628211ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return (size_t)(h ^ (h >> 32));
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	size_t alen = 0, blen = 0;
	const uint8_t *ab = addr_bytes(a, &alen), *bb = addr_bytes(b, &blen);

	return ab && bb && a->ss_family == b->ss_family && !memcmp(ab, bb, alen);
}

/* The hash slot holding <ss>, or the empty slot where it would go. At most
 * half the slots are used, so the expected probe length is below two. */
static size_t hash_find(const struct rs_portpool *p, const struct sockaddr_storage *ss)
{
	size_t h = addr_hash(ss) & p->hash_mask;

	while (p->addr_hash[h] && !same_addr(&p->addrs[p->addr_hash[h] - 1], ss))
		h = (h + 1) & p->hash_mask;
	return h;
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

static size_t flag_index(const struct rs_portpool *p, size_t addr, uint16_t port)
{
	return addr * (size_t)(p->hi - p->lo + 1) + (size_t)(port - p->lo);
}

int rs_portpool_init(struct rs_portpool **out, const struct sockaddr_storage *addrs,
		     size_t naddrs, uint16_t port_min, uint16_t port_max, unsigned worker,
		     unsigned nworkers)
{
	struct rs_portpool *p = NULL;
	size_t ports, nhash = 2, n = 0;
	int ret = -EINVAL;

	*out = NULL;
	/* The ring packs the address index into 16 bits. */
	if (!addrs || !naddrs || naddrs > 65535 || !port_min || port_min > port_max ||
	    !nworkers || worker >= nworkers)
		goto out;
	ports = (size_t)(port_max - port_min + 1);
	/* Slice w is [min + w*P/N, min + (w+1)*P/N): contiguous, disjoint,
	 * covering the range, sizes differing by at most one. */
	if (ports < nworkers)
		goto out;
	ret = -ENOMEM;
	p = calloc(1, sizeof(*p));
	if (!p)
		goto out;
	p->lo = (uint16_t)(port_min + worker * ports / nworkers);
	p->hi = (uint16_t)(port_min + (worker + 1) * ports / nworkers - 1);
	p->naddrs = naddrs;
	p->size = naddrs * (size_t)(p->hi - p->lo + 1);
	while (nhash < 2 * naddrs)
		nhash *= 2;
	p->hash_mask = nhash - 1;
	p->addrs = calloc(naddrs, sizeof(*p->addrs));
	p->addr_hash = calloc(nhash, sizeof(*p->addr_hash));
	p->ring = calloc(p->size, sizeof(*p->ring));
	p->is_out = calloc(p->size, 1);
	if (!p->addrs || !p->addr_hash || !p->ring || !p->is_out)
		goto out_free;
	ret = -EINVAL;
	for (size_t a = 0; a < naddrs; a++) {
		size_t h, len;

		if (!addr_bytes(&addrs[a], &len))
			goto out_free;
		p->addrs[a] = addrs[a];
		set_port(&p->addrs[a], 0);
		h = hash_find(p, &p->addrs[a]);
		/* Twice the same address would hand out each of its pairs twice. */
		if (p->addr_hash[h])
			goto out_free;
		p->addr_hash[h] = (uint32_t)a + 1;
	}
	/* Port-major order: consecutive gets spread over the source addresses. */
	for (uint32_t port = p->lo; port <= p->hi; port++)
		for (size_t a = 0; a < naddrs; a++)
			p->ring[n++] = (uint32_t)a << 16 | port;
	p->nfree = p->size;
	p->st.size = p->size;
	*out = p;
	ret = 0;
	goto out;

out_free:
	rs_portpool_free(p);
out:
	return ret;
}

void rs_portpool_free(struct rs_portpool *p)
{
	if (!p)
		return;
	free(p->addrs);
	free(p->addr_hash);
	free(p->ring);
	free(p->is_out);
	free(p);
}

int rs_portpool_get(struct rs_portpool *p, struct sockaddr_storage *out)
{
	uint32_t e;

	if (!p->nfree) {
		p->st.exhausted++;
		return -EADDRNOTAVAIL;
	}
	e = p->ring[p->head];
	p->head = p->head + 1 == p->size ? 0 : p->head + 1;
	p->nfree--;
	*out = p->addrs[e >> 16];
	set_port(out, (uint16_t)e);
	p->is_out[flag_index(p, e >> 16, (uint16_t)e)] = 1;
	p->st.in_use++;
	return 0;
}

void rs_portpool_put(struct rs_portpool *p, const struct sockaddr_storage *pair)
{
	size_t len, h, a, idx, tail;
	uint16_t port;

	if (!pair || !addr_bytes(pair, &len))
		goto out_bad;
	port = get_port(pair);
	h = hash_find(p, pair);
	if (!p->addr_hash[h] || port < p->lo || port > p->hi)
		goto out_bad;
	a = p->addr_hash[h] - 1;
	idx = flag_index(p, a, port);
	if (!p->is_out[idx])
		goto out_bad;
	p->is_out[idx] = 0;
	tail = p->head + p->nfree;
	p->ring[tail >= p->size ? tail - p->size : tail] = (uint32_t)a << 16 | port;
	p->nfree++;
	p->st.in_use--;
	return;

out_bad:
	p->st.bad_put++;
}

void rs_portpool_stats(const struct rs_portpool *p, struct rs_portpool_stats *out)
{
	*out = p->st;
}
