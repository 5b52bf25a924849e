/* tls/server.c — browser-facing TLS contexts (see tls/server.h). */
#include "core/common.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/log.h"
#include "tls/server.h"

/* TLS 1.2 suites: ECDHE (forward secrecy) with AEADs only. TLS 1.3's are
 * all AEAD and fixed by BoringSSL. */
#define CIPHERS_TLS12                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* X25519 first: browsers send its key share, so no HelloRetryRequest, and
 * the Debian BoringSSL has no fast P-256. */
#define GROUPS "X25519:P-256:P-384"

struct cert_ctx {
	SSL_CTX *ctx;
	char **names; /* DNS names the certificate covers (SAN, else CN) */
	size_t n_names;
	char fp[RS_TLS_FP_STR];
	char subject[160];
	char path[PATH_MAX];
};

struct certset {
	_Atomic unsigned refs;
	struct cert_ctx *v;
	size_t n;
};

struct ticket_key {
	uint8_t name[16], hmac[16], aes[16];
};

struct rs_tls_server {
	pthread_mutex_t lock; /* guards <cur> between loading it and taking a reference */
	struct certset *cur;
	struct rs_tls_counters stats;
	pthread_rwlock_t tk_lock;
	struct ticket_key tk_cur, tk_prev;
	unsigned rotation_s;
	uint64_t next_rotation_s;
	_Atomic uint64_t rotations;
};

/* BoringSSL's ticket callback has no argument; one server per process. */
static struct rs_tls_server *ticket_server;

static void certset_put(struct certset *set)
{
	if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t i = 0; i < set->n; i++) {
		SSL_CTX_free(set->v[i].ctx);
		for (size_t j = 0; j < set->v[i].n_names; j++)
			free(set->v[i].names[j]);
		free(set->v[i].names);
	}
	free(set->v);
	free(set);
}

static void ssl_err(char *err, size_t errlen, const char *what, const char *path)
{
	char e[200];

	ERR_error_string_n(ERR_get_error(), e, sizeof(e));
	ERR_clear_error();
	snprintf(err, errlen, "tls: %s '%s': %s", what, path, e);
}

static void add_name(struct cert_ctx *cc, const char *name, size_t len)
{
	char **v;

	if (!len || memchr(name, 0, len))
		return;
	v = realloc(cc->names, (cc->n_names + 1) * sizeof(*v));
	if (!v)
		return;
	cc->names = v;
	cc->names[cc->n_names] = strndup(name, len);
	if (cc->names[cc->n_names])
		cc->n_names++;
}

static void collect_names(struct cert_ctx *cc, X509 *x)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	char cn[256];

	for (size_t i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_DNS)
			add_name(cc, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
				 (size_t)ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(gens);
	if (!cc->n_names &&
	    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0)
		add_name(cc, cn, strlen(cn));
}

/* "*.example.com" covers exactly one label. */
static bool name_matches(const char *pattern, const char *host)
{
	const char *dot;

	if (!strcasecmp(pattern, host))
		return true;
	if (strncmp(pattern, "*.", 2))
		return false;
	dot = strchr(host, '.');
	return dot && dot != host && !strcasecmp(pattern + 1, dot);
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
	const struct certset *set = arg;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)alert;
	if (!host)
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i < set->n; i++)
		for (size_t j = 0; j < set->v[i].n_names; j++)
			if (name_matches(set->v[i].names[j], host)) {
				if (i)
					SSL_set_SSL_CTX(ssl, set->v[i].ctx);
				return SSL_TLSEXT_ERR_OK;
			}
	/* Unknown names get the default certificate, as other servers do. */
	return SSL_TLSEXT_ERR_OK;
}

static int on_alpn(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in,
		   unsigned inlen, void *arg)
{
	(void)ssl, (void)arg;
	for (unsigned i = 0; i < inlen;) {
		unsigned n = in[i];

		if (i + 1 + n > inlen)
			break;
		if (n == 8 && !memcmp(in + i + 1, "http/1.1", 8)) {
			*out = in + i + 1;
			*outlen = 8;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	/* A client offering only h2 still gets HTTP/1.1, without ALPN. */
	return SSL_TLSEXT_ERR_NOACK;
}

static int on_ticket_key(SSL *ssl, uint8_t *name, uint8_t *iv, EVP_CIPHER_CTX *ectx, HMAC_CTX *hctx,
			 int encrypt)
{
	struct rs_tls_server *s = ticket_server;
	struct ticket_key k;
	int ret = 1;

	(void)ssl;
	pthread_rwlock_rdlock(&s->tk_lock);
	if (encrypt) {
		k = s->tk_cur;
		pthread_rwlock_unlock(&s->tk_lock);
		RAND_bytes(iv, 16);
		memcpy(name, k.name, 16);
	} else if (!memcmp(name, s->tk_cur.name, 16)) {
		k = s->tk_cur;
		pthread_rwlock_unlock(&s->tk_lock);
	} else if (!memcmp(name, s->tk_prev.name, 16)) {
		k = s->tk_prev;
		pthread_rwlock_unlock(&s->tk_lock);
		ret = 2; /* valid, but issue a ticket under the current key */
	} else {
		pthread_rwlock_unlock(&s->tk_lock);
		return 0; /* unknown key: full handshake */
	}
	if (encrypt ? !EVP_EncryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, k.aes, iv)
		    : !EVP_DecryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, k.aes, iv))
		ret = -1;
	else if (!HMAC_Init_ex(hctx, k.hmac, sizeof(k.hmac), EVP_sha256(), NULL))
		ret = -1;
	explicit_bzero(&k, sizeof(k));
	return ret;
}

static int build_ctx(struct rs_tls_server *s, struct certset *set, struct cert_ctx *cc,
		     const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	X509 *leaf;

	snprintf(cc->path, sizeof(cc->path), "%s", cert);
	if (!ctx) {
		snprintf(err, errlen, "tls: out of memory");
		return -ENOMEM;
	}
	cc->ctx = ctx;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_strict_cipher_list(ctx, CIPHERS_TLS12) ||
	    !SSL_CTX_set1_curves_list(ctx, GROUPS)) {
		ssl_err(err, errlen, "cannot configure the protocol for", cert);
		return -EINVAL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (s->rotation_s) {
		SSL_CTX_set_tlsext_ticket_key_cb(ctx, on_ticket_key);
		SSL_CTX_set_timeout(ctx, 2 * s->rotation_s);
		SSL_CTX_set_session_psk_dhe_timeout(ctx, 2 * s->rotation_s);
	} else {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	}
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	SSL_CTX_set_tlsext_servername_arg(ctx, set);
	if (!SSL_CTX_use_certificate_chain_file(ctx, cert)) {
		ssl_err(err, errlen, "cannot load the certificate chain", cert);
		return -EINVAL;
	}
	if (!SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM)) {
		ssl_err(err, errlen,
			ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH
			    ? "the private key does not match the certificate"
			    : "cannot load the private key",
			key);
		return -EINVAL;
	}
	if (!SSL_CTX_check_private_key(ctx)) {
		ssl_err(err, errlen, "the private key does not match the certificate", key);
		return -EINVAL;
	}
	leaf = SSL_CTX_get0_certificate(ctx);
	collect_names(cc, leaf);
	X509_NAME_oneline(X509_get_subject_name(leaf), cc->subject, sizeof(cc->subject));
	{
		uint8_t *der = NULL;
		int n = i2d_X509(leaf, &der);

		if (n > 0)
			rs_tls_fingerprint(der, (size_t)n, cc->fp);
		OPENSSL_free(der);
	}
	return 0;
}

static int build_set(struct rs_tls_server *s, const struct rs_tls_server_opts *o,
		     struct certset **out, char *err, size_t errlen)
{
	struct certset *set = calloc(1, sizeof(*set));
	char cert[PATH_MAX], key[PATH_MAX], fp[RS_TLS_FP_STR];
	struct rs_tls_cert_files self = {cert, key};
	const struct rs_tls_cert_files *files = o->certs;
	size_t n = o->n_certs;
	bool created;
	int ret;

	if (!set)
		return -ENOMEM;
	atomic_init(&set->refs, 1);
	if (!n) {
		ret = rs_tls_selfsigned(o->state_dir, cert, key, fp, &created, err, errlen);
		if (ret)
			goto out_put;
		if (created)
			rs_warn("tls",
				"no certificate configured: generated a self-signed ECDSA "
				"P-256 certificate %s (SHA-256 %s)",
				cert, fp);
		else
			rs_info("tls",
				"no certificate configured: using the self-signed "
				"certificate %s (SHA-256 %s)",
				cert, fp);
		files = &self;
		n = 1;
	}
	set->v = calloc(n, sizeof(*set->v));
	if (!set->v) {
		ret = -ENOMEM;
		goto out_put;
	}
	for (size_t i = 0; i < n; i++) {
		set->n = i + 1;
		ret = build_ctx(s, set, &set->v[i], files[i].cert, files[i].key, err, errlen);
		if (ret)
			goto out_put;
	}
	*out = set;
	return 0;

out_put:
	certset_put(set);
	return ret;
}

static void new_ticket_key(struct ticket_key *k)
{
	RAND_bytes((uint8_t *)k, sizeof(*k));
}

int rs_tls_server_new(struct rs_tls_server **out, const struct rs_tls_server_opts *o, char *err,
		      size_t errlen)
{
	struct rs_tls_server *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_rwlock_init(&s->tk_lock, NULL);
	s->rotation_s = o->ticket_rotation_s;
	new_ticket_key(&s->tk_cur);
	new_ticket_key(&s->tk_prev);
	s->next_rotation_s = rs_now_ms() / 1000 + s->rotation_s;
	ticket_server = s;
	ret = build_set(s, o, &s->cur, err, errlen);
	if (ret) {
		rs_tls_server_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

void rs_tls_server_free(struct rs_tls_server *s)
{
	if (!s)
		return;
	certset_put(s->cur);
	if (ticket_server == s)
		ticket_server = NULL;
	explicit_bzero(&s->tk_cur, sizeof(s->tk_cur));
	explicit_bzero(&s->tk_prev, sizeof(s->tk_prev));
	pthread_rwlock_destroy(&s->tk_lock);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int rs_tls_server_reload(struct rs_tls_server *s, const struct rs_tls_server_opts *o, char *err,
			 size_t errlen)
{
	struct certset *set, *old;
	int ret = build_set(s, o, &set, err, errlen);

	if (ret)
		return ret;
	pthread_mutex_lock(&s->lock);
	old = s->cur;
	s->cur = set;
	pthread_mutex_unlock(&s->lock);
	/* Connections made with the old set hold references to it. */
	certset_put(old);
	return 0;
}

uint64_t rs_tls_server_tick(struct rs_tls_server *s, uint64_t now_s)
{
	struct ticket_key k;

	if (!s->rotation_s)
		return UINT64_MAX;
	if (now_s < s->next_rotation_s)
		return s->next_rotation_s;
	new_ticket_key(&k);
	pthread_rwlock_wrlock(&s->tk_lock);
	s->tk_prev = s->tk_cur;
	s->tk_cur = k;
	pthread_rwlock_unlock(&s->tk_lock);
	explicit_bzero(&k, sizeof(k));
	s->next_rotation_s = now_s + s->rotation_s;
	atomic_fetch_add(&s->rotations, 1);
	rs_debug("tls", "session ticket key rotated");
	return s->next_rotation_s;
}

void rs_tls_server_describe(struct rs_tls_server *s, char *out, size_t len)
{
	size_t off = 0;

	out[0] = 0;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->cur->n && off < len; i++) {
		int n = snprintf(out + off, len - off, "%s%s (%s) sha256 %s", i ? "\n" : "",
				 s->cur->v[i].path, s->cur->v[i].subject, s->cur->v[i].fp);

		if (n < 0)
			break;
		off += (size_t)n;
	}
	pthread_mutex_unlock(&s->lock);
}

static void on_conn_release(struct rs_tls_conn *t)
{
	certset_put(t->owner);
}

SSL *rs_tls_server_new_ssl(struct rs_tls_server *s, void **set_ref)
{
	struct certset *set;
	SSL *ssl;

	pthread_mutex_lock(&s->lock);
	set = s->cur;
	atomic_fetch_add(&set->refs, 1);
	pthread_mutex_unlock(&s->lock);
	ssl = SSL_new(set->v[0].ctx);
	if (!ssl) {
		certset_put(set);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	*set_ref = set;
	return ssl;
}

void rs_tls_server_put(void *set_ref)
{
	certset_put(set_ref);
}

int rs_tls_server_attach(struct rs_tls_server *s, struct rs_conn *c)
{
	struct rs_tls_conn *t;
	void *set;
	SSL *ssl = rs_tls_server_new_ssl(s, &set);
	int ret;

	if (!ssl)
		return -ENOMEM;
	ret = rs_tls_conn_attach(c, ssl, &s->stats, &t);
	if (ret) {
		certset_put(set);
		return ret;
	}
	t->owner = set;
	t->on_release = on_conn_release;
	return 0;
}

const struct rs_tls_counters *rs_tls_server_counters(const struct rs_tls_server *s)
{
	return &s->stats;
}

uint64_t rs_tls_server_ticket_rotations(const struct rs_tls_server *s)
{
	return atomic_load(&s->rotations);
}
