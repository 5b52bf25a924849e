#include "core/common.h"

#include <signal.h>
#include <stdatomic.h>

#include "bench/fake.h"
#include "core/config.h"
#include "core/log.h"
#include "tls/conn.h"

void rs_fake_on_drain(struct rs_conn *c)
{
	rs_conn_resume(c);
}

void rs_fake_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	(void)why, (void)err;
	free(rs_conn_ctx(c));
}

int rs_fake_serve(const char *name, struct rs_engine_opts *eo, const char *listen,
		  rs_accept_fn on_accept)
{
	struct sockaddr_storage ss;
	struct rs_engine *e;
	socklen_t len;
	sigset_t sigs;
	char err[256];
	int sig;

	if (rs_parse_hostport(listen, &ss, &len)) {
		fprintf(stderr, "%s: bad --listen '%s'\n", name, listen);
		return 2;
	}
	rs_log_set_level(RS_LOG_WARN);
	/* Blocked before the engine's threads start, so that they inherit it
	 * and the signal reaches sigwait here. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	e = rs_engine_new(eo, err, sizeof(err));
	if (!e || rs_engine_listen(e, (struct sockaddr *)&ss, len, on_accept, NULL) ||
	    rs_engine_start(e, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", name, e ? err : "cannot create the engine");
		return 1;
	}
	fprintf(stderr, "{\"event\":\"listening\",\"listen\":\"%s\"}\n", listen);
	sigwait(&sigs, &sig);
	return 0;
}

/* Why count them: the relays' figures are comparable only when every relay
 * negotiated the same suites (AES-256-GCM costs ~40 % more AES rounds per
 * byte than AES-128-GCM), and which one a relay gets depends on the order
 * its TLS library offers them in. */
static const char *const suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
				     "TLS_CHACHA20_POLY1305_SHA256", "other"};
static _Atomic uint64_t suite_n[RS_ARRAY_SIZE(suites)];

void rs_bench_count_suite(struct rs_conn *c)
{
	const char *name = rs_tls_suite(c);
	size_t i = 0;

	while (i + 1 < RS_ARRAY_SIZE(suites) && (!name || strcmp(name, suites[i])))
		i++;
	atomic_fetch_add_explicit(&suite_n[i], 1, memory_order_relaxed);
}

void rs_bench_print_suites(FILE *f)
{
	const char *sep = "";

	fputc('{', f);
	for (size_t i = 0; i < RS_ARRAY_SIZE(suites); i++) {
		uint64_t n = atomic_load(&suite_n[i]);

		if (!n)
			continue;
		fprintf(f, "%s\"%s\":%llu", sep, suites[i], (unsigned long long)n);
		sep = ",";
	}
	fputc('}', f);
}
