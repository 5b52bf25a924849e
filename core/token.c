#include "core/common.h"

#include <netinet/in.h>
#include <stdatomic.h>

#include "core/log.h"
#include "core/token.h"

enum { S_EMPTY = 0, S_RESERVED, S_LIVE, S_BUSY };

#define STATE(w) ((unsigned)((w)&0xff))
#define GEN(w) ((w) >> 8)
#define WORD(state, gen) (((uint64_t)(gen) << 8) | (state))
#define MAX_DRAWS 64

/* Fields other than <word> are written only while the writer holds the slot
 * (RESERVED or BUSY) and read by others under a seqlock check on <word>;
 * they are atomics (relaxed) so those reads are not data races. */
struct slot {
	_Atomic uint64_t word;
	_Atomic uint64_t tok[2];
	_Atomic uint64_t expires_ms;
	_Atomic(struct rs_console_spec *) spec;
	_Atomic uint64_t ip[2]; /* bound client address (IPv4 mapped into IPv6) */
	_Atomic uint32_t kind;
	_Atomic uint32_t bound;
};

struct rs_token_table {
	struct slot *slots;
	size_t mask;
	unsigned capacity;
	uint64_t (*now)(void);
	_Atomic uint64_t issued, consumed, expired, revoked, rejected;
	_Atomic int64_t live;
};

struct rs_token_table *rs_token_table_new(unsigned capacity)
{
	struct rs_token_table *t = calloc(1, sizeof(*t));
	size_t n = 16;

	if (!t)
		return NULL;
	while (n < 2 * (size_t)capacity)
		n *= 2;
	t->slots = calloc(n, sizeof(*t->slots));
	if (!t->slots) {
		free(t);
		return NULL;
	}
	t->mask = n - 1;
	t->capacity = capacity;
	t->now = rs_now_ms;
	return t;
}

void rs_token_table_free(struct rs_token_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i <= t->mask; i++)
		rs_spec_free(atomic_load(&t->slots[i].spec));
	free(t->slots);
	free(t);
}

void rs_token_table_set_clock(struct rs_token_table *t, uint64_t (*now_ms)(void))
{
	t->now = now_ms;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void encode(const uint8_t in[16], char out[RS_TOKEN_TEXT + 1])
{
	size_t o = 0;

	for (size_t i = 0; i < 15; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	out[o++] = b64url[in[15] >> 2];
	out[o++] = b64url[(in[15] & 3) << 4];
	out[o] = 0;
}

static int dec(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int rs_token_parse(const char *text, size_t len, uint8_t out[RS_TOKEN_BYTES])
{
	int v[RS_TOKEN_TEXT];

	if (len != RS_TOKEN_TEXT)
		return -EINVAL;
	for (size_t i = 0; i < RS_TOKEN_TEXT; i++) {
		v[i] = dec(text[i]);
		if (v[i] < 0)
			return -EINVAL;
	}
	/* The last character carries 2 bits; the rest must be zero (canonical). */
	if (v[21] & 15)
		return -EINVAL;
	for (size_t i = 0, o = 0; i < 20; i += 4) {
		uint32_t x = (uint32_t)v[i] << 18 | (uint32_t)v[i + 1] << 12 |
			     (uint32_t)v[i + 2] << 6 | (uint32_t)v[i + 3];

		out[o++] = (uint8_t)(x >> 16);
		out[o++] = (uint8_t)(x >> 8);
		out[o++] = (uint8_t)x;
	}
	out[15] = (uint8_t)(v[20] << 2 | v[21] >> 4);
	return 0;
}

static void tok_words(const uint8_t tok[16], uint64_t w[2])
{
	memcpy(w, tok, 16);
}

static struct slot *slot_of(struct rs_token_table *t, const uint64_t w[2])
{
	return &t->slots[w[0] & t->mask];
}

static void ip_words(const struct sockaddr *sa, uint64_t w[2])
{
	uint8_t a[16] = {0};

	if (sa && sa->sa_family == AF_INET6) {
		memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else if (sa && sa->sa_family == AF_INET) {
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	}
	memcpy(w, a, 16);
}

int rs_token_issue(struct rs_token_table *t, struct rs_console_spec *spec, uint32_t ttl_ms,
		   char out[RS_TOKEN_TEXT + 1])
{
	uint8_t raw[16];
	uint64_t w[2], ip[2];
	int ret = -ENOSPC;

	if (atomic_fetch_add(&t->live, 1) >= (int64_t)t->capacity) {
		atomic_fetch_sub(&t->live, 1);
		return -ENOSPC;
	}
	for (int draw = 0; draw < MAX_DRAWS; draw++) {
		struct slot *s;
		uint64_t word;

		if (rs_random(raw, sizeof(raw)))
			break;
		tok_words(raw, w);
		s = slot_of(t, w);
		word = atomic_load_explicit(&s->word, memory_order_acquire);
		if (STATE(word) != S_EMPTY ||
		    !atomic_compare_exchange_strong(&s->word, &word, WORD(S_RESERVED, GEN(word))))
			continue; /* taken: we choose the token, so just draw again */
		atomic_store_explicit(&s->tok[0], w[0], memory_order_relaxed);
		atomic_store_explicit(&s->tok[1], w[1], memory_order_relaxed);
		atomic_store_explicit(&s->expires_ms, t->now() + ttl_ms, memory_order_relaxed);
		atomic_store_explicit(&s->spec, spec, memory_order_relaxed);
		atomic_store_explicit(&s->kind, spec->kind, memory_order_relaxed);
		ip_words(spec->bind_ip ? (const struct sockaddr *)&spec->client_ip : NULL, ip);
		atomic_store_explicit(&s->ip[0], ip[0], memory_order_relaxed);
		atomic_store_explicit(&s->ip[1], ip[1], memory_order_relaxed);
		atomic_store_explicit(&s->bound, spec->bind_ip, memory_order_relaxed);
		atomic_store_explicit(&s->word, WORD(S_LIVE, GEN(word)), memory_order_release);
		encode(raw, out);
		atomic_fetch_add_explicit(&t->issued, 1, memory_order_relaxed);
		ret = 0;
		break;
	}
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(w, sizeof(w));
	if (ret)
		atomic_fetch_sub(&t->live, 1);
	return ret;
}

struct snap {
	uint64_t word, expires, ip[2];
	uint32_t kind, bound;
	bool match;
};

/* Seqlock read of a live slot: the fields are consistent only if the state
 * word did not change while they were read. */
static bool read_live(struct slot *s, const uint64_t w[2], struct snap *out)
{
	uint64_t t0, t1, again;

	out->word = atomic_load_explicit(&s->word, memory_order_acquire);
	if (STATE(out->word) != S_LIVE)
		return false;
	t0 = atomic_load_explicit(&s->tok[0], memory_order_relaxed);
	t1 = atomic_load_explicit(&s->tok[1], memory_order_relaxed);
	out->expires = atomic_load_explicit(&s->expires_ms, memory_order_relaxed);
	out->kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
	out->bound = atomic_load_explicit(&s->bound, memory_order_relaxed);
	out->ip[0] = atomic_load_explicit(&s->ip[0], memory_order_relaxed);
	out->ip[1] = atomic_load_explicit(&s->ip[1], memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	again = atomic_load_explicit(&s->word, memory_order_relaxed);
	if (again != out->word)
		return false;
	/* both halves are always compared: no early exit on the first */
	out->match = ((int)rs_ct_equal(&t0, 8, &w[0], 8) & (int)rs_ct_equal(&t1, 8, &w[1], 8)) != 0;
	return out->match;
}

/* Take a live slot exclusively (LIVE -> BUSY) and empty it; returns its spec. */
static struct rs_console_spec *take(struct rs_token_table *t, struct slot *s, uint64_t word)
{
	struct rs_console_spec *spec;

	if (!atomic_compare_exchange_strong(&s->word, &word, WORD(S_BUSY, GEN(word))))
		return NULL;
	spec = atomic_load_explicit(&s->spec, memory_order_relaxed);
	atomic_store_explicit(&s->spec, NULL, memory_order_relaxed);
	atomic_store_explicit(&s->tok[0], 0, memory_order_relaxed);
	atomic_store_explicit(&s->tok[1], 0, memory_order_relaxed);
	atomic_store_explicit(&s->word, WORD(S_EMPTY, GEN(word) + 1), memory_order_release);
	atomic_fetch_sub(&t->live, 1);
	return spec;
}

int rs_token_peek(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		  enum rs_console_kind *kind)
{
	uint64_t w[2];
	struct snap sn;
	bool ok;

	tok_words(tok, w);
	ok = read_live(slot_of(t, w), w, &sn) && sn.expires > t->now();
	explicit_bzero(w, sizeof(w));
	if (!ok)
		return -ENOENT;
	if (kind)
		*kind = (enum rs_console_kind)sn.kind;
	return 0;
}

int rs_token_consume(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		     const struct sockaddr *client, struct rs_console_spec **out)
{
	uint64_t w[2], ip[2];
	struct slot *s;
	struct snap sn;
	struct rs_console_spec *spec;
	int ret = -ENOENT;

	*out = NULL;
	tok_words(tok, w);
	s = slot_of(t, w);
	if (!read_live(s, w, &sn))
		goto out_reject;
	if (sn.expires <= t->now()) {
		spec = take(t, s, sn.word);
		if (spec) {
			atomic_fetch_add(&t->expired, 1);
			rs_spec_free(spec);
		}
		goto out_reject;
	}
	if (sn.bound) {
		ip_words(client, ip);
		if (ip[0] != sn.ip[0] || ip[1] != sn.ip[1]) {
			ret = -EACCES;
			goto out_reject;
		}
	}
	/* The compare-and-swap on the generation-tagged word is the one place a
	 * token is spent: exactly one caller gets the spec. */
	spec = take(t, s, sn.word);
	if (!spec)
		goto out_reject;
	atomic_fetch_add(&t->consumed, 1);
	*out = spec;
	ret = 0;
	goto out;

out_reject:
	atomic_fetch_add(&t->rejected, 1);
out:
	explicit_bzero(w, sizeof(w));
	return ret;
}

int rs_token_revoke(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES])
{
	uint64_t w[2];
	struct slot *s;
	struct snap sn;
	struct rs_console_spec *spec = NULL;

	tok_words(tok, w);
	s = slot_of(t, w);
	if (read_live(s, w, &sn))
		spec = take(t, s, sn.word);
	explicit_bzero(w, sizeof(w));
	if (!spec)
		return -ENOENT;
	atomic_fetch_add(&t->revoked, 1);
	rs_spec_free(spec);
	return 0;
}

int rs_token_revoke_hash(struct rs_token_table *t, const char hash[9])
{
	for (size_t i = 0; i <= t->mask; i++) {
		struct slot *s = &t->slots[i];
		uint64_t w[2];
		char h[9];

		if (STATE(atomic_load(&s->word)) != S_LIVE)
			continue;
		w[0] = atomic_load_explicit(&s->tok[0], memory_order_relaxed);
		w[1] = atomic_load_explicit(&s->tok[1], memory_order_relaxed);
		rs_log_hash(w, 16, h);
		if (!strcmp(h, hash)) {
			int ret = rs_token_revoke(t, (const uint8_t *)w);

			explicit_bzero(w, sizeof(w));
			return ret;
		}
		explicit_bzero(w, sizeof(w));
	}
	return -ENOENT;
}

size_t rs_token_sweep(struct rs_token_table *t, uint64_t now_ms)
{
	size_t n = 0;

	if (!atomic_load_explicit(&t->live, memory_order_relaxed))
		return 0;
	for (size_t i = 0; i <= t->mask; i++) {
		struct slot *s = &t->slots[i];
		uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
		struct rs_console_spec *spec;

		if (STATE(word) != S_LIVE ||
		    atomic_load_explicit(&s->expires_ms, memory_order_relaxed) > now_ms)
			continue;
		spec = take(t, s, word);
		if (spec) {
			rs_spec_free(spec);
			n++;
		}
	}
	atomic_fetch_add(&t->expired, n);
	return n;
}

void rs_token_stats_get(struct rs_token_table *t, struct rs_token_stats *out)
{
	int64_t live = atomic_load(&t->live);

	out->issued = atomic_load(&t->issued);
	out->consumed = atomic_load(&t->consumed);
	out->expired = atomic_load(&t->expired);
	out->revoked = atomic_load(&t->revoked);
	out->rejected = atomic_load(&t->rejected);
	out->live = live > 0 ? (uint64_t)live : 0;
}
