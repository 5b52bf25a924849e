/* tls/cert.h — certificates: fingerprints, PEM loading checks, and the
 * self-signed certificate ringside makes for itself when none is configured.
 */
#ifndef RS_TLS_CERT_H
#define RS_TLS_CERT_H

#include "core/common.h"

#define RS_TLS_FP_LEN 32       /* SHA-256 */
#define RS_TLS_FP_STR (32 * 3) /* "AB:CD:...:EF" + NUL */

/* SHA-256 of <der> as uppercase colon-separated hex (pveproxy's notation). */
void rs_tls_fingerprint(const uint8_t *der, size_t len, char out[RS_TLS_FP_STR]);
void rs_tls_fingerprint_str(const uint8_t fp[RS_TLS_FP_LEN], char out[RS_TLS_FP_STR]);

/* Parse a SHA-256 fingerprint written as 64 hex digits, with or without
 * colons, any case, optionally prefixed "sha256:" / "SHA256//". 0 or -EINVAL. */
int rs_tls_parse_fingerprint(const char *s, uint8_t out[RS_TLS_FP_LEN]);

/* Fingerprint of the first certificate in PEM file <path>. 0 or -errno. */
int rs_tls_file_fingerprint(const char *path, char out[RS_TLS_FP_STR]);

/* The self-signed ECDSA P-256 certificate in <dir> (tls-selfsigned.crt and
 * .key): created on first use (key mode 0600), reused afterwards. Paths are
 * written to <cert>/<key> (PATH_MAX each), its fingerprint to <fp>; *created
 * tells whether it was made now. 0 or -errno with <err> filled. */
int rs_tls_selfsigned(const char *dir, char *cert, char *key, char fp[RS_TLS_FP_STR], bool *created,
		      char *err, size_t errlen);

#endif
