#include "core/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"
#include "proto/store.h"
#include "tls/boringssl.h"

#include <openssl/aead.h>
#include <openssl/hkdf.h>

const char *const rs_store_outcome_names[RS_SO__COUNT] = {
    "issued",	     "peek_ok", "peek_missing",	     "consumed",       "consume_missing",
    "consume_bound", "revoked", "store_unavailable", "replicas_short", "corrupt",
};

struct rs_store {
	struct rs_token_table *tokens;
	struct rs_redis_pool *redis;
	char *prefix;
	unsigned consume_replicas, wait_timeout_ms;
	_Atomic uint64_t out[RS_SO__COUNT];
};

enum op_type { OP_ISSUE, OP_PEEK, OP_CONSUME, OP_WAIT, OP_REVOKE };

struct rs_store_op {
	struct rs_store *s;
	struct rs_redis *r;
	struct rs_redis_req *req;
	enum op_type type;
	uint8_t tok[RS_TOKEN_BYTES];
	char key[160];
	struct sockaddr_storage client;
	bool has_client;
	struct rs_console_spec *spec; /* consume: held during WAIT */
	rs_store_cb cb;
	void *arg;
};

#define COUNT(s, o) atomic_fetch_add_explicit(&(s)->out[o], 1, memory_order_relaxed)

static const char HKDF_INFO[] = "ringside fleet link v1";
#define BLOB_VERSION 1
#define NONCE_LEN    12

/* ---- sealing ------------------------------------------------------------ */

void rs_store_key(const char *prefix, const uint8_t tok[RS_TOKEN_BYTES], char *out, size_t len)
{
	uint8_t h[SHA256_DIGEST_LENGTH];
	char hex[2 * SHA256_DIGEST_LENGTH + 1];

	SHA256(tok, RS_TOKEN_BYTES, h);
	for (size_t i = 0; i < sizeof(h); i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	snprintf(out, len, "%stok:%s", prefix, hex);
}

/* The serialized spec: tag (1 byte), length (2 bytes, big endian), value;
 * numbers as 8 bytes big endian. Unknown tags are skipped on reading. */
enum {
	T_KIND = 1,
	T_HOST,
	T_PORT,
	T_PASSWORD,
	T_LABEL,
	T_KEYNAME,
	T_CREATED,
	T_EXPIRES,
	T_TTL,
	T_CLIENT,
	T_CLUSTER,
	T_NODE,
	T_USER,
	T_VMID,
	T_PVETYPE,
	T_MAXCON,
};

struct wbuf {
	uint8_t *p;
	size_t len, cap;
	bool bad;
};

static void put(struct wbuf *b, uint8_t tag, const void *v, size_t len)
{
	if (b->bad)
		return;
	if (len > 0xffff) {
		b->bad = true;
		return;
	}
	if (b->len + 3 + len > b->cap) {
		size_t cap = (b->cap + 3 + len) * 2;
		uint8_t *n = malloc(cap);

		if (!n) {
			b->bad = true;
			return;
		}
		if (b->p) {
			memcpy(n, b->p, b->len);
			explicit_bzero(b->p, b->cap);
			free(b->p);
		}
		b->p = n;
		b->cap = cap;
	}
	b->p[b->len++] = tag;
	b->p[b->len++] = (uint8_t)(len >> 8);
	b->p[b->len++] = (uint8_t)len;
	memcpy(b->p + b->len, v, len);
	b->len += len;
}

static void put_str(struct wbuf *b, uint8_t tag, const char *s)
{
	if (s)
		put(b, tag, s, strlen(s));
}

static void put_u64(struct wbuf *b, uint8_t tag, uint64_t v)
{
	uint8_t x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (56 - 8 * i));
	put(b, tag, x, 8);
}

static int derive(const uint8_t tok[RS_TOKEN_BYTES], uint8_t key[32])
{
	return HKDF(key, 32, EVP_sha256(), tok, RS_TOKEN_BYTES, NULL, 0, (const uint8_t *)HKDF_INFO,
		    sizeof(HKDF_INFO) - 1)
		   ? 0
		   : -ENOMEM;
}

int rs_store_seal(const uint8_t tok[RS_TOKEN_BYTES], const char *key_name,
		  const struct rs_console_spec *spec, uint8_t **blob, size_t *len)
{
	struct wbuf b = {0};
	uint8_t key[32], *out = NULL;
	EVP_AEAD_CTX ctx;
	size_t out_len = 0, max;
	int ret = -ENOMEM;

	*blob = NULL;
	*len = 0;
	put_u64(&b, T_KIND, (uint64_t)spec->kind);
	put_str(&b, T_HOST, spec->host);
	put_u64(&b, T_PORT, spec->port);
	put_str(&b, T_PASSWORD, spec->password);
	put_str(&b, T_LABEL, spec->label);
	put_str(&b, T_KEYNAME, spec->api_key_name);
	put_u64(&b, T_CREATED, (uint64_t)spec->created_s);
	put_u64(&b, T_EXPIRES, (uint64_t)spec->expires_s);
	put_u64(&b, T_TTL, spec->ttl_s);
	if (spec->bind_ip) {
		/* On the wire as a sockaddr_storage, as boxes before the
		 * compact form wrote it. */
		struct sockaddr_storage ip = {0};

		memcpy(&ip, &spec->client_ip, sizeof(spec->client_ip));
		put(&b, T_CLIENT, &ip, sizeof(ip));
	}
	put_str(&b, T_CLUSTER, spec->cluster);
	put_str(&b, T_NODE, spec->node);
	put_str(&b, T_USER, spec->user);
	put_u64(&b, T_VMID, spec->vmid);
	put_str(&b, T_PVETYPE, spec->pve_type);
	put_u64(&b, T_MAXCON, spec->max_consoles);
	if (b.bad) {
		ret = b.p ? -EINVAL : -ENOMEM;
		goto out_wipe;
	}
	if (derive(tok, key))
		goto out_wipe;
	max = 1 + NONCE_LEN + b.len + EVP_AEAD_max_overhead(EVP_aead_aes_256_gcm());
	out = malloc(max);
	if (!out)
		goto out_key;
	out[0] = BLOB_VERSION;
	if (getrandom(out + 1, NONCE_LEN, 0) != NONCE_LEN) {
		ret = -EIO;
		goto out_key;
	}
	if (!EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), key, sizeof(key),
			       EVP_AEAD_DEFAULT_TAG_LENGTH, NULL))
		goto out_key;
	if (!EVP_AEAD_CTX_seal(&ctx, out + 1 + NONCE_LEN, &out_len, max - 1 - NONCE_LEN, out + 1,
			       NONCE_LEN, b.p, b.len, (const uint8_t *)key_name,
			       strlen(key_name))) {
		EVP_AEAD_CTX_cleanup(&ctx);
		goto out_key;
	}
	EVP_AEAD_CTX_cleanup(&ctx);
	*blob = out;
	*len = 1 + NONCE_LEN + out_len;
	out = NULL;
	ret = 0;
out_key:
	free(out);
	explicit_bzero(key, sizeof(key));
out_wipe:
	if (b.p)
		explicit_bzero(b.p, b.cap);
	free(b.p);
	return ret;
}

static char *dup_field(const uint8_t *v, size_t len)
{
	char *s = malloc(len + 1);

	if (s) {
		memcpy(s, v, len);
		s[len] = 0;
	}
	return s;
}

static uint64_t get_u64(const uint8_t *v)
{
	uint64_t x = 0;

	for (int i = 0; i < 8; i++)
		x = x << 8 | v[i];
	return x;
}

static int parse_spec(const uint8_t *p, size_t len, struct rs_console_spec *s)
{
	size_t i = 0;

	while (i < len) {
		uint8_t tag;
		size_t n;
		const uint8_t *v;
		char **str = NULL;

		if (len - i < 3)
			return -EBADMSG;
		tag = p[i];
		n = (size_t)p[i + 1] << 8 | p[i + 2];
		i += 3;
		if (len - i < n)
			return -EBADMSG;
		v = p + i;
		i += n;
		switch (tag) {
		case T_HOST:
			str = &s->host;
			break;
		case T_PASSWORD:
			str = &s->password;
			break;
		case T_LABEL:
			str = &s->label;
			break;
		case T_KEYNAME:
			str = &s->api_key_name;
			break;
		case T_CLUSTER:
			str = &s->cluster;
			break;
		case T_NODE:
			str = &s->node;
			break;
		case T_USER:
			str = &s->user;
			break;
		case T_PVETYPE:
			str = &s->pve_type;
			break;
		case T_CLIENT:
			if (n != sizeof(struct sockaddr_storage))
				return -EBADMSG;
			memcpy(&s->client_ip, v, sizeof(s->client_ip));
			s->bind_ip = true;
			continue;
		default:
			if (tag >= T_KIND && tag <= T_MAXCON && n != 8)
				return -EBADMSG;
			break;
		}
		if (str) {
			if (*str || memchr(v, 0, n))
				return -EBADMSG;
			*str = dup_field(v, n);
			if (!*str)
				return -ENOMEM;
			continue;
		}
		switch (tag) {
		case T_KIND:
			if (get_u64(v) > RS_CONSOLE_PVE_TERM)
				return -EBADMSG;
			s->kind = (enum rs_console_kind)get_u64(v);
			break;
		case T_PORT:
			s->port = (uint16_t)get_u64(v);
			break;
		case T_CREATED:
			s->created_s = (int64_t)get_u64(v);
			break;
		case T_EXPIRES:
			s->expires_s = (int64_t)get_u64(v);
			break;
		case T_TTL:
			s->ttl_s = (uint32_t)get_u64(v);
			break;
		case T_VMID:
			s->vmid = (uint32_t)get_u64(v);
			break;
		case T_MAXCON:
			s->max_consoles = (unsigned)get_u64(v);
			break;
		default:
			break;
		}
	}
	return 0;
}

int rs_store_decode_spec(const uint8_t *p, size_t len, struct rs_console_spec **out)
{
	struct rs_console_spec *spec = rs_spec_new();
	int ret;

	*out = NULL;
	if (!spec)
		return -ENOMEM;
	ret = parse_spec(p, len, spec);
	if (ret) {
		rs_spec_free(spec);
		return ret;
	}
	*out = spec;
	return 0;
}

int rs_store_open(const uint8_t tok[RS_TOKEN_BYTES], const char *key_name, const uint8_t *blob,
		  size_t len, struct rs_console_spec **out)
{
	uint8_t key[32], *plain = NULL;
	EVP_AEAD_CTX ctx;
	size_t plain_len = 0;
	int ret = -EBADMSG;

	*out = NULL;
	if (len < 1 + NONCE_LEN || blob[0] != BLOB_VERSION)
		return -EBADMSG;
	if (derive(tok, key))
		return -ENOMEM;
	plain = malloc(len);
	if (!plain) {
		ret = -ENOMEM;
		goto out_key;
	}
	if (!EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), key, sizeof(key),
			       EVP_AEAD_DEFAULT_TAG_LENGTH, NULL)) {
		ret = -ENOMEM;
		goto out_key;
	}
	if (!EVP_AEAD_CTX_open(&ctx, plain, &plain_len, len, blob + 1, NONCE_LEN,
			       blob + 1 + NONCE_LEN, len - 1 - NONCE_LEN, (const uint8_t *)key_name,
			       strlen(key_name))) {
		EVP_AEAD_CTX_cleanup(&ctx);
		ERR_clear_error();
		goto out_key;
	}
	EVP_AEAD_CTX_cleanup(&ctx);
	ret = rs_store_decode_spec(plain, plain_len, out);
out_key:
	if (plain) {
		explicit_bzero(plain, len);
		free(plain);
	}
	explicit_bzero(key, sizeof(key));
	return ret;
}

/* ---- the store ---------------------------------------------------------- */

int rs_store_new(struct rs_store **out, const struct rs_store_opts *o)
{
	struct rs_store *s = rs_xcalloc(1, sizeof(*s));

	s->tokens = o->tokens;
	s->redis = o->redis;
	s->prefix = rs_xstrdup(o->key_prefix ? o->key_prefix : "rs:");
	s->consume_replicas = o->consume_replicas;
	s->wait_timeout_ms = o->wait_timeout_ms ? o->wait_timeout_ms : 200;
	*out = s;
	return 0;
}

void rs_store_free(struct rs_store *s)
{
	if (!s)
		return;
	free(s->prefix);
	free(s);
}

bool rs_store_fleet(const struct rs_store *s)
{
	return s && s->redis;
}

struct rs_redis_pool *rs_store_redis(const struct rs_store *s)
{
	return s ? s->redis : NULL;
}

void rs_store_outcomes(const struct rs_store *s, uint64_t out[RS_SO__COUNT])
{
	for (int i = 0; i < RS_SO__COUNT; i++)
		out[i] =
		    s ? atomic_load_explicit(&((struct rs_store *)s)->out[i], memory_order_relaxed)
		      : 0;
}

static void op_free(struct rs_store_op *op)
{
	if (op->spec)
		rs_spec_free(op->spec);
	explicit_bzero(op, sizeof(*op));
	free(op);
}

void rs_store_cancel(struct rs_store_op *op)
{
	if (!op)
		return;
	rs_redis_cancel(op->req);
	op_free(op);
}

static void noop_cb(void *arg, const redisReply *reply, int err)
{
	(void)arg;
	(void)reply;
	(void)err;
}

static struct rs_store_op *op_new(struct rs_store *s, struct rs_worker *w, enum op_type type,
				  const uint8_t tok[RS_TOKEN_BYTES], rs_store_cb cb, void *arg)
{
	struct rs_store_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->s = s;
	op->r = rs_redis_of(s->redis, w);
	op->type = type;
	memcpy(op->tok, tok, RS_TOKEN_BYTES);
	rs_store_key(s->prefix, tok, op->key, sizeof(op->key));
	op->cb = cb;
	op->arg = arg;
	return op;
}

/* The callback owns nothing of <op> but what it is given; <op> is freed
 * right after (it is the caller's handle until then). */
static void finish(struct rs_store_op *op, int err, struct rs_console_spec *spec,
		   enum rs_console_kind kind)
{
	rs_store_cb cb = op->cb;
	void *arg = op->arg;

	if (err == -EAGAIN)
		COUNT(op->s, RS_SO_UNAVAILABLE);
	op_free(op);
	cb(arg, err, spec, kind);
}

static int send_cmd(struct rs_store_op *op, rs_redis_cb cb, int argc, const char **argv,
		    const size_t *lens)
{
	int ret = rs_redis_cmd(op->r, cb, op, argc, argv, lens, &op->req);

	return ret ? -EAGAIN : 0;
}

static void log_store_error(const char *what, const redisReply *reply, int err)
{
	if (reply && reply->type == REDIS_REPLY_ERROR)
		rs_warn("store", "%s: Redis answered %.*s", what, (int)reply->len, reply->str);
	else if (err)
		rs_warn("store", "%s: store unavailable (%s)", what, strerror(-err));
}

/* -- issue -- */

static void on_issued(void *arg, const redisReply *reply, int err)
{
	struct rs_store_op *op = arg;

	op->req = NULL;
	if (err || !reply || reply->type != REDIS_REPLY_STATUS) {
		log_store_error("issue", reply, err);
		finish(op, -EAGAIN, NULL, 0);
		return;
	}
	COUNT(op->s, RS_SO_ISSUED);
	finish(op, 0, NULL, 0);
}

int rs_store_issue(struct rs_store *s, struct rs_worker *w, struct rs_console_spec *spec,
		   uint32_t ttl_ms, char out[RS_TOKEN_TEXT + 1], rs_store_cb cb, void *arg,
		   struct rs_store_op **opp)
{
	struct rs_store_op *op;
	uint8_t tok[RS_TOKEN_BYTES], *blob = NULL;
	size_t blen = 0;
	char ttl[24], hash[9], rev[64];
	int ret;

	if (opp)
		*opp = NULL;
	if (!s->redis) {
		ret = rs_token_issue(s->tokens, spec, ttl_ms, out);
		if (!ret)
			COUNT(s, RS_SO_ISSUED);
		return ret;
	}
	if (getrandom(tok, sizeof(tok), 0) != sizeof(tok))
		return -EIO;
	op = op_new(s, w, OP_ISSUE, tok, cb, arg);
	if (!op) {
		ret = -ENOMEM;
		goto out_wipe;
	}
	ret = rs_store_seal(tok, op->key, spec, &blob, &blen);
	if (ret)
		goto out_op;
	snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
	{
		const char *argv[6] = {"SET", op->key, (const char *)blob, "PX", ttl, "NX"};
		size_t lens[6] = {3, strlen(op->key), blen, 2, strlen(ttl), 2};

		ret = send_cmd(op, on_issued, 6, argv, lens);
	}
	if (ret) {
		COUNT(s, RS_SO_UNAVAILABLE);
		goto out_op;
	}
	/* The revocation index: the log hash names the link for ops. */
	rs_log_hash(tok, sizeof(tok), hash);
	snprintf(rev, sizeof(rev), "%srev:%s", s->prefix, hash);
	{
		const char *hex = op->key + strlen(s->prefix) + 4;
		const char *argv[5] = {"SET", rev, hex, "PX", ttl};

		if (rs_redis_cmd(op->r, noop_cb, NULL, 5, argv, NULL, NULL))
			rs_debug("store", "revocation index for %s not written", hash);
	}
	rs_token_encode(tok, out);
	/* The link lives in Redis now: the spec is done with. A fleet does not
	 * count pending links per key (no box sees them all). */
	if (spec->usage)
		atomic_fetch_sub(&spec->usage->pending, 1);
	spec->usage = NULL;
	rs_spec_free(spec);
	if (opp)
		*opp = op;
	ret = RS_STORE_PENDING;
	goto out_wipe;
out_op:
	op_free(op);
out_wipe:
	if (blob) {
		explicit_bzero(blob, blen);
		free(blob);
	}
	explicit_bzero(tok, sizeof(tok));
	return ret;
}

/* -- peek -- */

static void on_peeked(void *arg, const redisReply *reply, int err)
{
	struct rs_store_op *op = arg;
	struct rs_console_spec *spec = NULL;
	enum rs_console_kind kind;

	op->req = NULL;
	if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
		log_store_error("page", reply, err);
		finish(op, -EAGAIN, NULL, 0);
		return;
	}
	if (reply->type != REDIS_REPLY_STRING ||
	    rs_store_open(op->tok, op->key, (const uint8_t *)reply->str, reply->len, &spec) ||
	    spec->expires_s <= rs_wall_s()) {
		if (reply->type == REDIS_REPLY_STRING && !spec)
			COUNT(op->s, RS_SO_CORRUPT);
		rs_spec_free(spec);
		COUNT(op->s, RS_SO_PEEK_MISSING);
		finish(op, -ENOENT, NULL, 0);
		return;
	}
	kind = spec->kind;
	COUNT(op->s, RS_SO_PEEK_OK);
	finish(op, 0, spec, kind); /* borrowed by the page for its view-only flag */
	rs_spec_free(spec);
}

int rs_store_peek(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		  enum rs_console_kind *kind, bool *view_only, rs_store_cb cb, void *arg,
		  struct rs_store_op **opp)
{
	struct rs_store_op *op;
	const char *argv[2];
	int ret;

	if (opp)
		*opp = NULL;
	if (!s->redis) {
		ret = rs_token_peek(s->tokens, tok, kind, view_only);
		COUNT(s, ret ? RS_SO_PEEK_MISSING : RS_SO_PEEK_OK);
		return ret;
	}
	op = op_new(s, w, OP_PEEK, tok, cb, arg);
	if (!op)
		return -ENOMEM;
	argv[0] = "GET";
	argv[1] = op->key;
	ret = send_cmd(op, on_peeked, 2, argv, NULL);
	if (ret) {
		COUNT(s, RS_SO_UNAVAILABLE);
		op_free(op);
		return ret;
	}
	if (opp)
		*opp = op;
	return RS_STORE_PENDING;
}

/* -- consume -- */

/* <sa> as 16 bytes, IPv4 mapped into IPv6 (as core/token.c compares). */
static bool addr16(const struct sockaddr *sa, uint8_t out[16])
{
	memset(out, 0, 16);
	if (sa->sa_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return true;
	}
	return false;
}

static bool client_ok(const struct rs_console_spec *spec, const struct rs_store_op *op)
{
	uint8_t a[16], b[16];

	if (!spec->bind_ip)
		return true;
	return op->has_client && addr16((const struct sockaddr *)&spec->client_ip, a) &&
	       addr16((const struct sockaddr *)&op->client, b) && !memcmp(a, b, 16);
}

static int put_back(struct rs_store *s, struct rs_redis *r, const uint8_t tok[RS_TOKEN_BYTES],
		    const char *key, const struct rs_console_spec *spec)
{
	int64_t left_ms = (spec->expires_s - rs_wall_s()) * 1000;
	uint8_t *blob = NULL;
	size_t blen = 0;
	char ttl[24];
	int ret;

	if (left_ms <= 0)
		return -ENOENT;
	ret = rs_store_seal(tok, key, spec, &blob, &blen);
	if (ret)
		return ret;
	snprintf(ttl, sizeof(ttl), "%lld", (long long)left_ms);
	{
		const char *argv[6] = {"SET", key, (const char *)blob, "PX", ttl, "NX"};
		size_t lens[6] = {3, strlen(key), blen, 2, strlen(ttl), 2};

		ret = rs_redis_cmd(r, noop_cb, NULL, 6, argv, lens, NULL) ? -EAGAIN : 0;
	}
	(void)s;
	explicit_bzero(blob, blen);
	free(blob);
	return ret;
}

static void on_waited(void *arg, const redisReply *reply, int err)
{
	struct rs_store_op *op = arg;
	struct rs_console_spec *spec;

	op->req = NULL;
	if (err || !reply || reply->type != REDIS_REPLY_INTEGER ||
	    reply->integer < (long long)op->s->consume_replicas) {
		if (!err && reply && reply->type == REDIS_REPLY_INTEGER) {
			/* Nobody opened it: the link goes back (with what is
			 * left of its TTL), so the page's retry can open it
			 * once the replicas catch up (after a failover, the
			 * promoted master has none for a moment). */
			COUNT(op->s, RS_SO_REPLICAS_SHORT);
			rs_warn("store",
				"consume: %lld of %u replicas acknowledged in time; the console is "
				"refused and the link put back",
				reply->integer, op->s->consume_replicas);
			put_back(op->s, op->r, op->tok, op->key, op->spec);
		} else {
			log_store_error("consume (WAIT)", reply, err);
		}
		finish(op, -EAGAIN, NULL, 0);
		return;
	}
	spec = op->spec;
	op->spec = NULL;
	COUNT(op->s, RS_SO_CONSUMED);
	finish(op, 0, spec, spec->kind);
}

static void on_consumed(void *arg, const redisReply *reply, int err)
{
	struct rs_store_op *op = arg;
	struct rs_console_spec *spec = NULL;
	int ret;

	op->req = NULL;
	if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
		/* Sent and unanswered: GETDEL may have run. The link is then
		 * spent; it is never handed out twice. */
		log_store_error("consume", reply, err);
		finish(op, -EAGAIN, NULL, 0);
		return;
	}
	if (reply->type != REDIS_REPLY_STRING ||
	    rs_store_open(op->tok, op->key, (const uint8_t *)reply->str, reply->len, &spec) ||
	    spec->expires_s <= rs_wall_s()) {
		if (reply->type == REDIS_REPLY_STRING && !spec)
			COUNT(op->s, RS_SO_CORRUPT);
		rs_spec_free(spec);
		COUNT(op->s, RS_SO_CONSUME_MISSING);
		finish(op, -ENOENT, NULL, 0);
		return;
	}
	if (!client_ok(spec, op)) {
		/* Not this client's: the link stays for its rightful owner. */
		put_back(op->s, op->r, op->tok, op->key, spec);
		rs_spec_free(spec);
		COUNT(op->s, RS_SO_CONSUME_BOUND);
		finish(op, -EACCES, NULL, 0);
		return;
	}
	if (op->s->consume_replicas) {
		char n[16], t[16];
		const char *argv[3] = {"WAIT", n, t};

		snprintf(n, sizeof(n), "%u", op->s->consume_replicas);
		snprintf(t, sizeof(t), "%u", op->s->wait_timeout_ms);
		op->spec = spec;
		op->type = OP_WAIT;
		ret = send_cmd(op, on_waited, 3, argv, NULL);
		if (ret)
			finish(op, -EAGAIN, NULL, 0);
		return;
	}
	COUNT(op->s, RS_SO_CONSUMED);
	finish(op, 0, spec, spec->kind);
}

int rs_store_consume(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		     const struct sockaddr *client, struct rs_console_spec **out, rs_store_cb cb,
		     void *arg, struct rs_store_op **opp)
{
	struct rs_store_op *op;
	const char *argv[2];
	int ret;

	if (opp)
		*opp = NULL;
	*out = NULL;
	if (!s->redis) {
		ret = rs_token_consume(s->tokens, tok, client, out);
		COUNT(s, !ret		  ? RS_SO_CONSUMED
			 : ret == -EACCES ? RS_SO_CONSUME_BOUND
					  : RS_SO_CONSUME_MISSING);
		return ret;
	}
	op = op_new(s, w, OP_CONSUME, tok, cb, arg);
	if (!op)
		return -ENOMEM;
	if (client && (client->sa_family == AF_INET || client->sa_family == AF_INET6)) {
		memcpy(&op->client, client,
		       client->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						    : sizeof(struct sockaddr_in6));
		op->has_client = true;
	}
	argv[0] = "GETDEL";
	argv[1] = op->key;
	ret = send_cmd(op, on_consumed, 2, argv, NULL);
	if (ret) {
		COUNT(s, RS_SO_UNAVAILABLE);
		op_free(op);
		return ret;
	}
	if (opp)
		*opp = op;
	return RS_STORE_PENDING;
}

int rs_store_return(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		    struct rs_console_spec *spec)
{
	char key[160];
	int ret;

	if (!s->redis)
		return rs_token_return(s->tokens, tok, spec);
	rs_store_key(s->prefix, tok, key, sizeof(key));
	ret = put_back(s, rs_redis_of(s->redis, w), tok, key, spec);
	rs_spec_free(spec);
	return ret;
}

/* -- revoke -- */

static void on_revoked(void *arg, const redisReply *reply, int err)
{
	struct rs_store_op *op = arg;

	op->req = NULL;
	if (err || !reply || reply->type != REDIS_REPLY_INTEGER) {
		log_store_error("revoke", reply, err);
		finish(op, -EAGAIN, NULL, 0);
		return;
	}
	if (reply->integer > 0)
		COUNT(op->s, RS_SO_REVOKED);
	finish(op, reply->integer > 0 ? 0 : -ENOENT, NULL, 0);
}

int rs_store_revoke(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		    rs_store_cb cb, void *arg, struct rs_store_op **opp)
{
	struct rs_store_op *op;
	const char *argv[2];
	int ret;

	if (opp)
		*opp = NULL;
	if (!s->redis) {
		ret = rs_token_revoke(s->tokens, tok);
		if (!ret)
			COUNT(s, RS_SO_REVOKED);
		return ret;
	}
	op = op_new(s, w, OP_REVOKE, tok, cb, arg);
	if (!op)
		return -ENOMEM;
	argv[0] = "DEL";
	argv[1] = op->key;
	ret = send_cmd(op, on_revoked, 2, argv, NULL);
	if (ret) {
		COUNT(s, RS_SO_UNAVAILABLE);
		op_free(op);
		return ret;
	}
	if (opp)
		*opp = op;
	return RS_STORE_PENDING;
}

/* -- revoke by log hash, from a control thread -- */

struct hash_call {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	bool done;
	int ret;
	struct rs_store *s;
	char hash[9];
};

static void hash_call_unref(struct hash_call *hc)
{
	bool last;

	pthread_mutex_lock(&hc->mu);
	last = --hc->refs == 0;
	pthread_mutex_unlock(&hc->mu);
	if (last) {
		pthread_mutex_destroy(&hc->mu);
		pthread_cond_destroy(&hc->cv);
		free(hc);
	}
}

static void hash_call_done(struct hash_call *hc, int ret)
{
	pthread_mutex_lock(&hc->mu);
	hc->ret = ret;
	hc->done = true;
	pthread_cond_signal(&hc->cv);
	pthread_mutex_unlock(&hc->mu);
	hash_call_unref(hc);
}

static void on_hash_revoked(void *arg, const redisReply *reply, int err)
{
	struct hash_call *hc = arg;

	if (err || !reply || reply->type != REDIS_REPLY_INTEGER) {
		log_store_error("revoke", reply, err);
		COUNT(hc->s, RS_SO_UNAVAILABLE);
		hash_call_done(hc, -EAGAIN);
		return;
	}
	if (reply->integer > 0)
		COUNT(hc->s, RS_SO_REVOKED);
	hash_call_done(hc, reply->integer > 0 ? 0 : -ENOENT);
}

/* GET the index, DEL both keys: one script, one round trip. */
static const char REVOKE_LUA[] = "local t = redis.call('GET', KEYS[1]) "
				 "if not t then return 0 end "
				 "redis.call('DEL', KEYS[1]) "
				 "return redis.call('DEL', ARGV[1] .. t)";

static void revoke_hash_on_worker(struct rs_worker *w, void *arg)
{
	struct hash_call *hc = arg;
	struct rs_store *s = hc->s;
	char rev[80], tokp[80];
	const char *argv[5] = {"EVAL", REVOKE_LUA, "1", rev, tokp};

	snprintf(rev, sizeof(rev), "%srev:%s", s->prefix, hc->hash);
	snprintf(tokp, sizeof(tokp), "%stok:", s->prefix);
	if (rs_redis_cmd(rs_redis_of(s->redis, w), on_hash_revoked, hc, 5, argv, NULL, NULL)) {
		COUNT(s, RS_SO_UNAVAILABLE);
		hash_call_done(hc, -EAGAIN);
	}
}

int rs_store_revoke_hash(struct rs_store *s, struct rs_engine *e, const char *hash)
{
	struct hash_call *hc;
	struct timespec until;
	int ret;

	if (!s->redis)
		return rs_token_revoke_hash(s->tokens, hash);
	if (strlen(hash) != 8 || strspn(hash, "0123456789abcdefABCDEF") != 8)
		return -EINVAL;
	hc = rs_xcalloc(1, sizeof(*hc));
	pthread_mutex_init(&hc->mu, NULL);
	pthread_cond_init(&hc->cv, NULL);
	hc->refs = 2;
	hc->s = s;
	for (int i = 0; i < 8; i++)
		hc->hash[i] = (char)(hash[i] >= 'A' && hash[i] <= 'F' ? hash[i] + 32 : hash[i]);
	if (rs_worker_post(rs_engine_worker(e, 0), revoke_hash_on_worker, hc)) {
		hc->refs = 1;
		hash_call_unref(hc);
		return -EAGAIN;
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5; /* the command's own deadline answers well before */
	pthread_mutex_lock(&hc->mu);
	while (!hc->done)
		if (pthread_cond_timedwait(&hc->cv, &hc->mu, &until) == ETIMEDOUT)
			break;
	ret = hc->done ? hc->ret : -EAGAIN;
	pthread_mutex_unlock(&hc->mu);
	hash_call_unref(hc);
	return ret;
}
