/* The server-side TLS handshake (ringside's contexts and callbacks: SNI,
 * ALPN, session tickets, versions, ciphers) fed arbitrary client bytes in
 * arbitrary chunks, then the record layer after an accepted handshake. */
#include "core/common.h"

#include <stdlib.h>
#include <unistd.h>

#include "tls/server.h"

static struct rs_tls_server *srv;
static char dir[] = "/tmp/rs-fuzz-tls-XXXXXX";

/* The self-signed certificate lives only as long as the fuzzer. */
static void cleanup(void)
{
	char p[64];

	snprintf(p, sizeof(p), "%s/tls-selfsigned.crt", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/tls-selfsigned.key", dir);
	unlink(p);
	rmdir(dir);
}

static void setup(void)
{
	struct rs_tls_server_opts o = {.state_dir = NULL, .ticket_rotation_s = 3600};
	char err[256];

	if (!mkdtemp(dir))
		abort();
	atexit(cleanup);
	o.state_dir = dir;
	if (rs_tls_server_new(&srv, &o, err, sizeof(err))) {
		fprintf(stderr, "fuzz_tls_server: %s\n", err);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[16384];
	void *set;
	SSL *ssl;
	BIO *rbio, *wbio;
	size_t chunk, off = 0;

	if (!srv)
		setup();
	if (size < 1)
		return 0;
	chunk = 1 + data[0] * 37u % 4096;
	data++, size--;
	ssl = rs_tls_server_new_ssl(srv, &set);
	rbio = BIO_new(BIO_s_mem());
	wbio = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(rbio, -1);
	SSL_set_bio(ssl, rbio, wbio);
	while (off < size) {
		size_t n = RS_MIN(chunk, size - off);
		int r;

		BIO_write(rbio, data + off, (int)n);
		off += n;
		r = SSL_is_init_finished(ssl) ? SSL_read(ssl, out, sizeof(out))
					      : SSL_do_handshake(ssl);
		if (r <= 0 && SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ)
			break;
		/* Whatever the server answered is discarded, as a peer would. */
		BIO_reset(wbio);
	}
	ERR_clear_error();
	SSL_free(ssl);
	rs_tls_server_put(set);
	return 0;
}
