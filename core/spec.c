#include "core/common.h"

#include "core/spec.h"

struct rs_console_spec *rs_spec_new(void)
{
	return calloc(1, sizeof(struct rs_console_spec));
}

bool rs_usage_take(_Atomic unsigned *count, unsigned max)
{
	unsigned cur = atomic_load_explicit(count, memory_order_relaxed);

	do {
		if (max && cur >= max)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(count, &cur, cur + 1, memory_order_relaxed,
							 memory_order_relaxed));
	return true;
}

bool rs_spec_open_console(struct rs_console_spec *s)
{
	if (!s->usage || s->console_held)
		return true;
	if (!rs_usage_take(&s->usage->consoles, s->max_consoles))
		return false;
	s->console_held = true;
	return true;
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
	if (s->console_held)
		atomic_fetch_sub_explicit(&s->usage->consoles, 1, memory_order_relaxed);
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
