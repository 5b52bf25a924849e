/* tls/cert.c — fingerprints and the self-signed fallback certificate. */
#include "core/common.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls/boringssl.h"
#include "tls/cert.h"

#define SELF_DAYS                                                                                  \
	397 /* browsers and scanners flag longer validity */ /* renewed on start when less than a  \
								day is left */

void rs_tls_fingerprint_str(const uint8_t fp[RS_TLS_FP_LEN], char out[RS_TLS_FP_STR])
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < RS_TLS_FP_LEN; i++) {
		out[i * 3] = hex[fp[i] >> 4];
		out[i * 3 + 1] = hex[fp[i] & 15];
		out[i * 3 + 2] = i + 1 < RS_TLS_FP_LEN ? ':' : 0;
	}
}

void rs_tls_fingerprint(const uint8_t *der, size_t len, char out[RS_TLS_FP_STR])
{
	uint8_t md[RS_TLS_FP_LEN];

	SHA256(der, len, md);
	rs_tls_fingerprint_str(md, out);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int rs_tls_parse_fingerprint(const char *s, uint8_t out[RS_TLS_FP_LEN])
{
	size_t n = 0;

	if (!strncasecmp(s, "sha256:", 7))
		s += 7;
	else if (!strncasecmp(s, "sha256//", 8))
		s += 8;
	while (*s) {
		int hi, lo;

		if (*s == ':' && n) {
			s++;
			continue;
		}
		hi = hexval(s[0]);
		lo = hi < 0 ? -1 : hexval(s[1]);
		if (lo < 0 || n == RS_TLS_FP_LEN)
			return -EINVAL;
		out[n++] = (uint8_t)(hi << 4 | lo);
		s += 2;
	}
	return n == RS_TLS_FP_LEN ? 0 : -EINVAL;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (!f)
		return NULL;
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return x;
}

static void cert_fingerprint(X509 *x, char out[RS_TLS_FP_STR])
{
	uint8_t *der = NULL;
	int len = i2d_X509(x, &der);

	if (len > 0)
		rs_tls_fingerprint(der, (size_t)len, out);
	else
		snprintf(out, RS_TLS_FP_STR, "?");
	OPENSSL_free(der);
}

int rs_tls_file_fingerprint(const char *path, char out[RS_TLS_FP_STR])
{
	X509 *x = read_cert(path);

	if (!x)
		return -ENOENT;
	cert_fingerprint(x, out);
	X509_free(x);
	return 0;
}

static bool add_ext(X509 *x, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, nid, value);
	bool ok = ext && X509_add_ext(x, ext, -1);

	X509_EXTENSION_free(ext);
	return ok;
}

static X509 *make_cert(EVP_PKEY *pkey)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	char san[600], host[256] = "";
	uint64_t serial;

	if (!x || !name)
		goto fail;
	rs_random(&serial, sizeof(serial));
	gethostname(host, sizeof(host) - 1);
	/* A SAN entry the hostname does not fit (or that is not a DNS label) is
	 * left out rather than failing the start. */
	if (*host && strlen(host) < 200 && !strpbrk(host, ", :/"))
		snprintf(san, sizeof(san), "DNS:localhost,DNS:%s,IP:127.0.0.1,IP:::1", host);
	else
		snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,IP:::1");
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), serial >> 1) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)SELF_DAYS * 86400) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const uint8_t *)"ringside", -1,
					-1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const uint8_t *)"ringside self-signed", -1, -1, 0) ||
	    !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name) ||
	    !X509_set_pubkey(x, pkey) || !add_ext(x, NID_basic_constraints, "critical,CA:FALSE") ||
	    !add_ext(x, NID_key_usage, "critical,digitalSignature") ||
	    !add_ext(x, NID_ext_key_usage, "serverAuth") ||
	    !add_ext(x, NID_subject_alt_name, san) || !X509_sign(x, pkey, EVP_sha256()))
		goto fail;
	X509_NAME_free(name);
	return x;

fail:
	X509_NAME_free(name);
	X509_free(x);
	return NULL;
}

/* Write through a temporary file and rename, so a crash never leaves half a
 * key behind. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *pkey, X509 *x)
{
	char tmp[PATH_MAX];
	FILE *f;
	int fd, ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		unlink(tmp);
		return -ENOMEM;
	}
	ok = pkey ? PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, x);
	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (fclose(f) || !ok || rename(tmp, path)) {
		unlink(tmp);
		return -EIO;
	}
	return 0;
}

static bool usable(const char *cert, const char *key, char fp[RS_TLS_FP_STR])
{
	X509 *x;
	bool ok;

	if (access(key, R_OK))
		return false;
	x = read_cert(cert);
	if (!x)
		return false;
	time_t soon = time(NULL) + 86400;

	ok = X509_cmp_time(X509_get0_notAfter(x), &soon) > 0;
	if (ok)
		cert_fingerprint(x, fp);
	X509_free(x);
	return ok;
}

int rs_tls_selfsigned(const char *dir, char *cert, char *key, char fp[RS_TLS_FP_STR], bool *created,
		      char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	EC_KEY *ec = NULL;
	X509 *x = NULL;
	int ret;

	*created = false;
	if (snprintf(cert, PATH_MAX, "%s/tls-selfsigned.crt", dir) >= PATH_MAX ||
	    snprintf(key, PATH_MAX, "%s/tls-selfsigned.key", dir) >= PATH_MAX) {
		snprintf(err, errlen, "state_dir '%s' is too long", dir);
		return -ENAMETOOLONG;
	}
	if (usable(cert, key, fp))
		return 0;
	if (mkdir(dir, 0700) && errno != EEXIST) {
		ret = -errno;
		snprintf(err, errlen, "cannot create state_dir '%s': %s", dir, strerror(errno));
		return ret;
	}
	ret = -ENOMEM;
	pkey = EVP_PKEY_new();
	ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	if (!pkey || !ec || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(pkey, ec)) {
		EC_KEY_free(ec);
		snprintf(err, errlen, "cannot generate an ECDSA P-256 key");
		goto out_free;
	}
	x = make_cert(pkey);
	if (!x) {
		snprintf(err, errlen, "cannot build the self-signed certificate");
		goto out_free;
	}
	ret = write_pem(key, 0600, pkey, NULL);
	if (!ret)
		ret = write_pem(cert, 0644, NULL, x);
	if (ret) {
		snprintf(err, errlen, "cannot write the self-signed certificate into '%s': %s", dir,
			 strerror(-ret));
		goto out_free;
	}
	cert_fingerprint(x, fp);
	*created = true;

out_free:
	X509_free(x);
	EVP_PKEY_free(pkey);
	return ret;
}
