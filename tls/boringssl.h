/* tls/boringssl.h — the one place BoringSSL headers are included.
 *
 * Debian ships OpenSSL 3 headers in /usr/include as well; compiling against
 * them by mistake would build but misbehave (different BIO and verify
 * semantics), so the build fails instead.
 */
#ifndef RS_TLS_BORINGSSL_H
#define RS_TLS_BORINGSSL_H

#include <openssl/base.h>

#ifndef OPENSSL_IS_BORINGSSL
#error "ringside's tls/ layer needs BoringSSL headers (-I/usr/include/android), not OpenSSL's"
#endif

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#endif
