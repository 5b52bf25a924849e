#include "core/common.h"

#include <signal.h>

#include "bench/fake.h"
#include "core/config.h"
#include "core/log.h"

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
