/* tests/unit/console_test.c — console state read from other threads before a
 * worker's start hook has run.
 *
 * Workers start side by side: worker 0 may already serve ProxmoxVNC's
 * /status (rs_console_list over every worker) or an admin `stats`
 * (rs_console_worker_stats) while worker 1 is still setting up and has no
 * console state. Those calls must see an empty worker, not dereference NULL.
 */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/engine.h"
#include "proto/console.h"

static void test_state_read_before_the_start_hook(void **st)
{
	struct rs_engine_opts o = {.workers = 2};
	struct rs_console_info info[4];
	struct rs_console_stats cs;
	char err[256];
	struct rs_engine *e = rs_engine_new(&o, err, sizeof(err));

	(void)st;
	assert_non_null(e);
	for (unsigned i = 0; i < rs_engine_workers(e); i++) {
		struct rs_worker *w = rs_engine_worker(e, i);

		memset(&cs, 0xff, sizeof(cs));
		assert_int_equal(rs_console_list(w, info, 4), 0);
		rs_console_worker_stats(w, &cs);
		assert_int_equal(cs.active, 0);
		assert_int_equal(cs.opened, 0);
	}
	rs_console_stats(e, &cs);
	assert_int_equal(cs.active, 0);
	/* a worker without its state is not ready: the daemon refuses to start */
	assert_int_equal(rs_console_workers_ready(e, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "worker 0"));
	rs_engine_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_read_before_the_start_hook),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
