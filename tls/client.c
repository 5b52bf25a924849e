/* tls/client.c — TLS towards upstreams (see tls/client.h). */
#include "core/common.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "core/addr.h"
#include "core/log.h"
#include "tls/client.h"

#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
#define CACHE_MAX      64 /* cached sessions per upstream (one per host:port) */

struct cached {
	char key[272];
	SSL_SESSION *sess;
};

struct rs_tls_client {
	SSL_CTX *ctx;
	/* Every connection to the same node shares one copy of its certificate
	 * chain (held by each connection's session); outlives <ctx>. */
	CRYPTO_BUFFER_POOL *pool;
	X509_STORE *store; /* NULL with pins or insecure */
	char name[64];
	uint8_t (*pins)[RS_TLS_FP_LEN];
	size_t n_pins;
	bool insecure;
	bool no_resume;
	pthread_mutex_t lock; /* the session cache */
	struct cached cache[CACHE_MAX];
	size_t n_cache, next_evict;
	struct rs_tls_counters stats;
	_Atomic uint64_t insecure_conns;
};

/* Per-connection client state, hung on rs_tls_conn.owner, for the life of
 * the connection (TLS 1.3 session tickets arrive after the handshake): kept
 * as small as its key, since every held console has one. */
struct client_conn {
	struct rs_tls_client *cl;
	char *msg;  /* why verification failed (allocated only then) */
	char key[]; /* host:port ("[v6]:port"), the session cache's key */
};

#define HOST_MAX 256

/* The host part of a "host:port" or "[v6]:port" key. */
static void host_of(const char *key, char out[HOST_MAX])
{
	const char *colon = strrchr(key, ':');
	size_t n = (size_t)(colon - key);

	if (key[0] == '[' && n >= 2)
		snprintf(out, HOST_MAX, "%.*s", (int)(n - 2), key + 1);
	else
		snprintf(out, HOST_MAX, "%.*s", (int)n, key);
}

#define MSG_LEN 1024

static bool is_ip(const char *host)
{
	struct sockaddr_storage ss;

	return !rs_parse_ip(host, strlen(host), &ss);
}

static void fp_list(const struct rs_tls_client *cl, char *out, size_t len)
{
	size_t off = 0;

	out[0] = 0;
	for (size_t i = 0; i < cl->n_pins && off + RS_TLS_FP_STR + 4 < len; i++) {
		char fp[RS_TLS_FP_STR];

		rs_tls_fingerprint_str(cl->pins[i], fp);
		off += (size_t)snprintf(out + off, len - off, "%s%s", i ? " or " : "", fp);
	}
}

/* Chain verification against the CA store, including the host name or IP. */
static bool verify_chain(struct client_conn *cc, const STACK_OF(CRYPTO_BUFFER) * chain,
			 const char **why)
{
	STACK_OF(X509) *rest = sk_X509_new_null();
	X509_STORE_CTX *xctx = X509_STORE_CTX_new();
	X509 *leaf = NULL;
	char host[HOST_MAX];
	bool ok = false;

	host_of(cc->key, host);
	*why = "out of memory";
	if (!rest || !xctx)
		goto out_free;
	for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(chain); i++) {
		const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(chain, i);
		const uint8_t *p = CRYPTO_BUFFER_data(b);
		X509 *x = d2i_X509(NULL, &p, (long)CRYPTO_BUFFER_len(b));

		if (!x) {
			*why = "unparsable certificate";
			goto out_free;
		}
		if (!i)
			leaf = x;
		else if (!sk_X509_push(rest, x)) {
			X509_free(x);
			goto out_free;
		}
	}
	if (!X509_STORE_CTX_init(xctx, cc->cl->store, leaf, rest))
		goto out_free;
	X509_STORE_CTX_set_default(xctx, "ssl_server");
	if (is_ip(host))
		X509_VERIFY_PARAM_set1_ip_asc(X509_STORE_CTX_get0_param(xctx), host);
	else
		X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(xctx), host, strlen(host));
	ok = X509_verify_cert(xctx) == 1;
	if (!ok)
		*why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(xctx));

out_free:
	X509_STORE_CTX_free(xctx);
	X509_free(leaf);
	sk_X509_pop_free(rest, X509_free);
	ERR_clear_error();
	return ok;
}

static void set_msg(struct client_conn *cc, const char *fmt, ...) RS_PRINTF(2, 3);
static void set_msg(struct client_conn *cc, const char *fmt, ...)
{
	va_list ap;

	free(cc->msg);
	cc->msg = malloc(MSG_LEN);
	if (!cc->msg)
		return;
	va_start(ap, fmt);
	vsnprintf(cc->msg, MSG_LEN, fmt, ap);
	va_end(ap);
}

static enum ssl_verify_result_t on_verify(SSL *ssl, uint8_t *alert)
{
	struct rs_tls_conn *t = rs_tls_conn_of(ssl);
	struct client_conn *cc = t->owner;
	struct rs_tls_client *cl = cc->cl;
	const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(ssl);
	const CRYPTO_BUFFER *leaf = chain ? sk_CRYPTO_BUFFER_value(chain, 0) : NULL;
	uint8_t fp[RS_TLS_FP_LEN];
	char got[RS_TLS_FP_STR], want[4 * RS_TLS_FP_STR];
	const char *why;

	if (cl->insecure) {
		atomic_fetch_add_explicit(&cl->insecure_conns, 1, memory_order_relaxed);
		return ssl_verify_ok;
	}
	if (!leaf) {
		set_msg(cc, "upstream %s (%s): no certificate presented", cl->name, cc->key);
		goto refuse;
	}
	SHA256(CRYPTO_BUFFER_data(leaf), CRYPTO_BUFFER_len(leaf), fp);
	rs_tls_fingerprint_str(fp, got);
	if (cl->n_pins) {
		for (size_t i = 0; i < cl->n_pins; i++)
			if (!CRYPTO_memcmp(cl->pins[i], fp, sizeof(fp)))
				return ssl_verify_ok;
		fp_list(cl, want, sizeof(want));
		set_msg(cc,
			"upstream %s (%s): certificate fingerprint mismatch: expected %s, got %s",
			cl->name, cc->key, want, got);
		goto refuse;
	}
	if (verify_chain(cc, chain, &why))
		return ssl_verify_ok;
	set_msg(cc, "upstream %s (%s): certificate not trusted: %s (its SHA-256 fingerprint is %s)",
		cl->name, cc->key, why, got);

refuse:
	t->fail_msg = cc->msg;
	*alert = SSL_AD_BAD_CERTIFICATE;
	return ssl_verify_invalid;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct client_conn *cc = rs_tls_conn_of(ssl)->owner;
	struct rs_tls_client *cl = cc->cl;
	struct cached *slot = NULL;
	SSL_SESSION *old;

	pthread_mutex_lock(&cl->lock);
	for (size_t i = 0; i < cl->n_cache && !slot; i++)
		if (!strcmp(cl->cache[i].key, cc->key))
			slot = &cl->cache[i];
	if (!slot && cl->n_cache < CACHE_MAX)
		slot = &cl->cache[cl->n_cache++];
	if (!slot)
		slot = &cl->cache[cl->next_evict++ % CACHE_MAX];
	old = slot->sess;
	snprintf(slot->key, sizeof(slot->key), "%s", cc->key);
	slot->sess = sess;
	pthread_mutex_unlock(&cl->lock);
	SSL_SESSION_free(old);
	return 1; /* we keep the reference */
}

static SSL_SESSION *cached_session(struct rs_tls_client *cl, const char *key)
{
	SSL_SESSION *s = NULL;

	pthread_mutex_lock(&cl->lock);
	for (size_t i = 0; i < cl->n_cache; i++)
		if (!strcmp(cl->cache[i].key, key) && cl->cache[i].sess) {
			s = cl->cache[i].sess;
			SSL_SESSION_up_ref(s);
			break;
		}
	pthread_mutex_unlock(&cl->lock);
	return s;
}

static int load_store(struct rs_tls_client *cl, const struct rs_tls_client_opts *o, char *err,
		      size_t errlen)
{
	const char *file = o->ca_file ? o->ca_file : o->ca_pem ? NULL : SYSTEM_CA_FILE;
	size_t added = 0;
	BIO *bio;
	X509 *x;

	cl->store = X509_STORE_new();
	if (!cl->store)
		return -ENOMEM;
	bio = file ? BIO_new_file(file, "r") : BIO_new_mem_buf(o->ca_pem, -1);
	if (!bio) {
		snprintf(err, errlen, "upstream %s: cannot read CA file '%s'", cl->name, file);
		return -ENOENT;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (X509_STORE_add_cert(cl->store, x))
			added++;
		X509_free(x);
	}
	BIO_free(bio);
	ERR_clear_error();
	if (!added) {
		snprintf(err, errlen, "upstream %s: no certificate in the CA %s%s%s", cl->name,
			 file ? "file '" : "PEM", file ? file : "", file ? "'" : "");
		return -EINVAL;
	}
	return 0;
}

int rs_tls_client_new(struct rs_tls_client **out, const struct rs_tls_client_opts *o, char *err,
		      size_t errlen)
{
	static const uint8_t alpn[] = "\x08http/1.1";
	struct rs_tls_client *cl = calloc(1, sizeof(*cl));
	int ret = -ENOMEM;

	if (!cl)
		return -ENOMEM;
	pthread_mutex_init(&cl->lock, NULL);
	snprintf(cl->name, sizeof(cl->name), "%s", o->name ? o->name : "-");
	cl->insecure = o->insecure;
	cl->no_resume = o->no_resume;
	if (o->n_pins) {
		cl->pins = calloc(o->n_pins, sizeof(*cl->pins));
		if (!cl->pins)
			goto out_free;
		for (size_t i = 0; i < o->n_pins; i++)
			if (rs_tls_parse_fingerprint(o->pins[i], cl->pins[i])) {
				snprintf(err, errlen,
					 "upstream %s: fingerprint '%s' is not a SHA-256 "
					 "fingerprint (64 hex digits, colons allowed)",
					 cl->name, o->pins[i]);
				ret = -EINVAL;
				goto out_free;
			}
		cl->n_pins = o->n_pins;
	} else if (!o->insecure) {
		ret = load_store(cl, o, err, errlen);
		if (ret)
			goto out_free;
	}
	/* Certificates stay as buffers: no X509 parsing unless a CA verifies. */
	cl->ctx = SSL_CTX_new(TLS_with_buffers_method());
	cl->pool = CRYPTO_BUFFER_POOL_new();
	if (!cl->ctx || !cl->pool || !SSL_CTX_set_min_proto_version(cl->ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(cl->ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set1_curves_list(cl->ctx, "X25519:P-256:P-384") ||
	    SSL_CTX_set_alpn_protos(cl->ctx, alpn, sizeof(alpn) - 1)) {
		snprintf(err, errlen, "upstream %s: cannot set up TLS", cl->name);
		ret = -ENOMEM;
		goto out_free;
	}
	SSL_CTX_set0_buffer_pool(cl->ctx, cl->pool);
	SSL_CTX_set_custom_verify(cl->ctx, SSL_VERIFY_PEER, on_verify);
	SSL_CTX_set_session_cache_mode(cl->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(cl->ctx, on_new_session);
	if (o->insecure)
		rs_warn("tls",
			"upstream %s: certificate verification is OFF (insecure): anyone on "
			"the path can read and change its consoles",
			cl->name);
	*out = cl;
	return 0;

out_free:
	rs_tls_client_free(cl);
	return ret;
}

void rs_tls_client_free(struct rs_tls_client *cl)
{
	if (!cl)
		return;
	for (size_t i = 0; i < cl->n_cache; i++)
		SSL_SESSION_free(cl->cache[i].sess);
	SSL_CTX_free(cl->ctx);
	CRYPTO_BUFFER_POOL_free(cl->pool); /* after every session holding its buffers */
	X509_STORE_free(cl->store);
	free(cl->pins);
	pthread_mutex_destroy(&cl->lock);
	free(cl);
}

static void on_conn_release(struct rs_tls_conn *t)
{
	struct client_conn *cc = t->owner;

	free(cc->msg);
	free(cc);
}

int rs_tls_client_attach(struct rs_tls_client *cl, struct rs_conn *c, const char *host,
			 uint16_t port, rs_tls_done_fn done, void *arg)
{
	const char *fmt = strchr(host, ':') ? "[%s]:%u" : "%s:%u";
	int klen = snprintf(NULL, 0, fmt, host, port);
	struct client_conn *cc;
	struct rs_tls_conn *t;
	SSL_SESSION *sess;
	SSL *ssl;
	int ret;

	cc = klen < 0 ? NULL : calloc(1, sizeof(*cc) + (size_t)klen + 1);
	ssl = cc ? SSL_new(cl->ctx) : NULL;
	if (!ssl) {
		free(cc);
		return -ENOMEM;
	}
	cc->cl = cl;
	snprintf(cc->key, (size_t)klen + 1, fmt, host, port);
	SSL_set_connect_state(ssl);
	if (!is_ip(host))
		SSL_set_tlsext_host_name(ssl, host);
	sess = cl->no_resume ? NULL : cached_session(cl, cc->key);
	if (sess) {
		SSL_set_session(ssl, sess);
		SSL_SESSION_free(sess);
	}
	ret = rs_tls_conn_attach(c, ssl, &cl->stats, &t);
	if (ret) {
		free(cc);
		return ret;
	}
	t->owner = cc;
	t->on_release = on_conn_release;
	t->done = done;
	t->done_arg = arg;
	rs_tls_conn_start(t);
	return 0;
}

bool rs_tls_client_resumed(struct rs_conn *c)
{
	struct rs_tls_conn *t = rs_conn_filter_ctx(c);

	return t && t->resumed;
}

const struct rs_tls_counters *rs_tls_client_counters(const struct rs_tls_client *cl)
{
	return &cl->stats;
}

uint64_t rs_tls_client_insecure_conns(const struct rs_tls_client *cl)
{
	return atomic_load(&cl->insecure_conns);
}
