/* bench/fake.h — what the fake upstreams (fake-pve, fake-rfb) share: their
 * connection callbacks that need no state, and serving on ringside's engine
 * until SIGTERM/SIGINT; and what the bench's TLS parts (fake-pve,
 * ringside-bench) count: the cipher suite each connection negotiated.
 */
#ifndef RS_BENCH_FAKE_H
#define RS_BENCH_FAKE_H

#include "core/engine.h"

/* on_drain: read again once the peer took what was queued. */
void rs_fake_on_drain(struct rs_conn *c);

/* on_close: free() the connection's context. */
void rs_fake_on_close(struct rs_conn *c, enum rs_close_reason why, int err);

/* Start an engine with <eo> listening on <listen> (HOST:PORT), accepting with
 * <on_accept>, print {"event":"listening"} on stderr and block until SIGTERM
 * or SIGINT. Returns 0 after the signal, with the engine still running (the
 * caller prints its counters and _exit()s: the kernel closes every connection
 * faster than a graceful stop), or the exit status after printing why, as
 * "<name>: …" on stderr: 2 for a bad --listen, 1 when the engine cannot start. */
int rs_fake_serve(const char *name, struct rs_engine_opts *eo, const char *listen,
		  rs_accept_fn on_accept);

/* Count the suite established TLS connection <c> negotiated (any thread). */
void rs_bench_count_suite(struct rs_conn *c);

/* The counts as a JSON object, {"TLS_AES_128_GCM_SHA256":N,…}, suites never
 * negotiated left out, onto <f>. */
void rs_bench_print_suites(FILE *f);

#endif
