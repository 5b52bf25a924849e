/* core/spec.h — the immutable description of one console.
 *
 * Created by the API handler, owned by the token table until the token is
 * consumed, then by the console session. Secrets are wiped when it is freed.
 */
#ifndef RS_SPEC_H
#define RS_SPEC_H

#include "core/common.h"

#include <sys/socket.h>

enum rs_console_kind {
	RS_CONSOLE_VNC = 0, /* a plain VNC target, host:port */
	RS_CONSOLE_PVE_VNC,
	RS_CONSOLE_PVE_TERM,
};

struct rs_console_spec {
	enum rs_console_kind kind;
	char *host;
	uint16_t port;
	char *password; /* NULL: no VNC authentication; wiped on free */
	char *label;
	char *api_key_name;
	int64_t created_s, expires_s;
	uint32_t ttl_s;
	bool bind_ip;
	struct sockaddr_storage client_ip; /* when bind_ip */
};

/* Zeroed spec, NULL when out of memory. */
struct rs_console_spec *rs_spec_new(void);
/* Wipe the secrets and free everything; NULL is fine. */
void rs_spec_free(struct rs_console_spec *s);

#endif
