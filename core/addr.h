/* core/addr.h — IP literals and CIDR ranges (trusted proxies). */
#ifndef RS_ADDR_H
#define RS_ADDR_H

#include "core/common.h"

#include <netinet/in.h>
#include <sys/socket.h>

struct rs_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned bits;
};

/* "10.0.0.0/8", "2001:db8::/32", or a single address. 0 or -EINVAL. */
int rs_parse_cidr(const char *s, struct rs_cidr *out);

/* Is <sa> inside <c>? IPv4-mapped IPv6 addresses match IPv4 ranges. */
bool rs_cidr_match(const struct rs_cidr *c, const struct sockaddr *sa);

/* An address and port of either family, as long as that family needs (28
 * bytes; a sockaddr_storage is 128): for what is kept per console. */
union rs_ip {
	struct sockaddr sa;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

/* Parse an IP literal (no port) into a sockaddr with port 0. 0 or -EINVAL.
 * The one parser of IP literals: every other place calls this. */
int rs_parse_ip(const char *s, size_t len, struct sockaddr_storage *out);

/* Is every address of <inner> inside <outer>? */
bool rs_cidr_within(const struct rs_cidr *inner, const struct rs_cidr *outer);

/* May a console connect to <sa> under the target list <allowed> (n entries)?
 * The address must fall in an entry. Addresses no console has business with
 * — unspecified (0.0.0.0, ::), broadcast, multicast (224.0.0.0/4, ff00::/8)
 * and link-local (169.254.0.0/16, fe80::/10, where cloud metadata services
 * live) — pass only when an entry lies inside that special range (e.g.
 * "169.254.169.254/32"): a wide range such as 0.0.0.0/0 does not name them.
 * IPv4-mapped IPv6 addresses are judged as IPv4. Pure. */
bool rs_addr_allowed(const struct rs_cidr *allowed, size_t n, const struct sockaddr *sa);

/* "1.2.3.4" / "::1" (no port), or "-" for an unknown family. */
void rs_addr_str(const struct sockaddr *sa, char *out, size_t len);

#endif
