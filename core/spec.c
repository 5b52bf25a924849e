#include "core/common.h"

#include "core/spec.h"

struct rs_console_spec *rs_spec_new(void)
{
	return calloc(1, sizeof(struct rs_console_spec));
}

/* Every string is wiped, not only the password: the target address and node
 * name are confidential towards the browser too, and wiping costs nothing
 * next to the console setup. */
static void wipe_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

void rs_spec_free(struct rs_console_spec *s)
{
	if (!s)
		return;
	wipe_free(s->password);
	wipe_free(s->host);
	wipe_free(s->label);
	wipe_free(s->api_key_name);
	wipe_free(s->cluster);
	wipe_free(s->node);
	wipe_free(s->user);
	wipe_free(s->pve_type);
	explicit_bzero(s, sizeof(*s));
	free(s);
}
