/* tests/unit/log_test.c — reopening the log (SIGHUP, `ctl reload`) while
 * other threads log.
 *
 * A writer loads the log descriptor, then writes to it. If a reopen closes
 * that number in between and something else opens a file (or a socket) and
 * gets the same number, the writer's line goes there: a log line inside a
 * client's connection. Writers, a reopener and a "thief" that keeps opening
 * and closing another file run together; the thief's file must stay empty and
 * every line must reach a log file.
 */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

enum { WRITERS = 8 };

static _Atomic bool done;
static char log_path[64], thief_path[64];
static _Atomic unsigned long lines_written;

static void *writer(void *arg)
{
	(void)arg;
	while (!atomic_load(&done)) {
		rs_info("test", "a line from a writer thread, long enough to be noticed");
		atomic_fetch_add(&lines_written, 1);
	}
	return NULL;
}

static void *thief(void *arg)
{
	(void)arg;
	while (!atomic_load(&done)) {
		int fd = open(thief_path, O_WRONLY | O_APPEND | O_CLOEXEC);

		sched_yield();
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static void test_reopen_never_writes_to_a_reused_number(void **st)
{
	pthread_t w[WRITERS], t;
	struct stat sb;
	uint64_t end;
	unsigned reopens = 0;
	int fd;

	(void)st;
	strcpy(log_path, "/tmp/rs-log-test-XXXXXX");
	strcpy(thief_path, "/tmp/rs-log-thief-XXXXXX");
	fd = mkstemp(log_path);
	assert_true(fd >= 0);
	close(fd);
	fd = mkstemp(thief_path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(rs_log_open(log_path), 0);
	for (int i = 0; i < WRITERS; i++)
		pthread_create(&w[i], NULL, writer, NULL);
	pthread_create(&t, NULL, thief, NULL);
	for (end = rs_now_ms() + 700; rs_now_ms() < end; reopens++)
		assert_int_equal(rs_log_open(log_path), 0);
	atomic_store(&done, true);
	for (int i = 0; i < WRITERS; i++)
		pthread_join(w[i], NULL);
	pthread_join(t, NULL);
	assert_int_equal(rs_log_open("stderr"), 0);
	assert_int_equal(stat(thief_path, &sb), 0);
	print_message("%u reopens, %lu lines, %lld bytes in the thief's file\n", reopens,
		      atomic_load(&lines_written), (long long)sb.st_size);
	assert_int_equal(sb.st_size, 0);
	assert_true(reopens > 100);
	/* and no line was lost on the way */
	{
		FILE *f = fopen(log_path, "r");
		unsigned long n = 0;
		int c;

		assert_non_null(f);
		while ((c = getc(f)) != EOF)
			n += c == '\n';
		fclose(f);
		assert_int_equal(n, atomic_load(&lines_written));
	}
	unlink(log_path);
	unlink(thief_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reopen_never_writes_to_a_reused_number),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
