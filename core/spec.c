#include "core/common.h"

#include "core/spec.h"

struct rs_console_spec *rs_spec_new(void)
{
	return calloc(1, sizeof(struct rs_console_spec));
}

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
	free(s->host);
	free(s->label);
	free(s->api_key_name);
	explicit_bzero(s, sizeof(*s));
	free(s);
}
