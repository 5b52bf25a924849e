/* core/addr.c — IP literals and CIDR ranges. */
#include "core/common.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/addr.h"

int rs_parse_ip(const char *s, size_t len, struct sockaddr_storage *out)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
	char buf[INET6_ADDRSTRLEN];

	memset(out, 0, sizeof(*out));
	if (!len || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = 0;
	if (inet_pton(AF_INET, buf, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		return 0;
	}
	return -EINVAL;
}

int rs_parse_cidr(const char *s, struct rs_cidr *out)
{
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	struct sockaddr_storage ss;
	unsigned max;

	memset(out, 0, sizeof(*out));
	if (rs_parse_ip(s, len, &ss))
		return -EINVAL;
	out->family = ss.ss_family;
	if (ss.ss_family == AF_INET) {
		memcpy(out->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
		max = 32;
	} else {
		memcpy(out->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
		max = 128;
	}
	out->bits = max;
	if (slash) {
		char *end;
		unsigned long b;

		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		b = strtoul(slash + 1, &end, 10);
		if (*end || b > max)
			return -EINVAL;
		out->bits = (unsigned)b;
	}
	return 0;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;

	if (memcmp(a, b, bytes))
		return false;
	return !rest || !((a[bytes] ^ b[bytes]) & (uint8_t)(0xff << (8 - rest)));
}

bool rs_cidr_match(const struct rs_cidr *c, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET && c->family == AF_INET)
		return prefix_eq((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr,
				 c->addr, c->bits);
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

		if (c->family == AF_INET6)
			return prefix_eq(a, c->addr, c->bits);
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a))
			return prefix_eq(a + 12, c->addr, c->bits);
	}
	return false;
}

bool rs_cidr_within(const struct rs_cidr *inner, const struct rs_cidr *outer)
{
	return inner->family == outer->family && inner->bits >= outer->bits &&
	       prefix_eq(inner->addr, outer->addr, outer->bits);
}

static const struct rs_cidr special[] = {
	{AF_INET, {0, 0, 0, 0}, 32},
	{AF_INET, {255, 255, 255, 255}, 32},
	{AF_INET, {224}, 4},
	{AF_INET, {169, 254}, 16},
	{AF_INET6, {0}, 128},
	{AF_INET6, {0xff}, 8},
	{AF_INET6, {0xfe, 0x80}, 10},
};

bool rs_addr_allowed(const struct rs_cidr *allowed, size_t n, const struct sockaddr *sa)
{
	const struct rs_cidr *range = NULL;
	struct rs_cidr a = {0};

	if (sa->sa_family == AF_INET) {
		a.family = AF_INET;
		a.bits = 32;
		memcpy(a.addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)b)) {
			a.family = AF_INET;
			a.bits = 32;
			memcpy(a.addr, b + 12, 4);
		} else {
			a.family = AF_INET6;
			a.bits = 128;
			memcpy(a.addr, b, 16);
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < RS_ARRAY_SIZE(special); i++)
		if (rs_cidr_within(&a, &special[i]))
			range = &special[i];
	for (size_t i = 0; i < n; i++)
		if (rs_cidr_within(&a, &allowed[i]) && (!range || rs_cidr_within(&allowed[i], range)))
			return true;
	return false;
}

void rs_addr_str(const struct sockaddr *sa, char *out, size_t len)
{
	const void *a = NULL;

	if (sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (!a || !inet_ntop(sa->sa_family, a, out, (socklen_t)len))
		snprintf(out, len, "-");
}
