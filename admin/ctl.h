/* admin/ctl.h — the admin socket and the `ringside ctl` client.
 *
 * A Unix stream socket (path, group and mode from config). One request per
 * connection: a single line "<command> [args] [--json]" of at most 4 KiB,
 * size-checked before it is parsed. The answer starts with "OK" or
 * "ERR <reason>" on its own line, then text or one JSON document. A control
 * thread serves it; commands that touch sessions run on their worker through
 * rs_worker_call, so nothing on the data path takes a lock.
 *
 * Up to 16 clients are served at once without blocking on any: each has 5 s
 * to send its line and 5 s to read the answer, then it is dropped (a late
 * request gets "ERR timed out"). A slow or stuck client delays neither other
 * clients nor the daemon's stop.
 */
#ifndef RS_CTL_H
#define RS_CTL_H

#include "core/common.h"

struct rs_app;
struct rs_ctl;

/* Create the socket (refusing when another live instance owns it, replacing
 * a stale one) and start serving. NULL with <err> filled on failure; a NULL
 * return with err[0] == 0 means "no admin socket configured". */
struct rs_ctl *rs_ctl_start(struct rs_app *app, char *err, size_t errlen);
/* Stop serving and remove the socket. */
void rs_ctl_stop(struct rs_ctl *c);

/* Execute one request line; the answer goes to <out> (malloc'd, caller
 * frees). Returns 0 (OK) or 1 (ERR). Exposed for tests and fuzzing. */
int rs_ctl_execute(struct rs_app *app, const char *line, char **out);

/* `ringside ctl ...` (argv after "ctl"): connect, send, print. Exit code:
 * 0 ok, 1 the command failed, 2 usage, 3 cannot reach the daemon. */
int rs_ctl_client(int argc, char **argv);

#endif
