#include "core/common.h"

#include <fcntl.h>
#include <pthread.h>
#include <strings.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "core/log.h"
#include "core/text.h"

static _Atomic int log_level = RS_LOG_INFO;
static _Atomic int log_fd = 2;
static pthread_mutex_t log_open_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_own = -1; /* the log's own descriptor once a file was opened; under log_open_lock */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int rs_log_level_parse(const char *s, enum rs_log_level *out)
{
	for (size_t i = 0; i < RS_ARRAY_SIZE(level_names); i++) {
		if (!strcasecmp(s, level_names[i])) {
			*out = (enum rs_log_level)i;
			return 0;
		}
	}
	if (!strcasecmp(s, "warning")) {
		*out = RS_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

const char *rs_log_level_name(enum rs_log_level l)
{
	return (unsigned)l < RS_ARRAY_SIZE(level_names) ? level_names[l] : "?";
}

void rs_log_set_level(enum rs_log_level l)
{
	atomic_store_explicit(&log_level, (int)l, memory_order_relaxed);
}

enum rs_log_level rs_log_get_level(void)
{
	return (enum rs_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

int rs_log_open(const char *target)
{
	bool opened = false;
	int fd, ret = 0;

	if (!strcmp(target, "stderr") || !*target) {
		fd = 2;
	} else if (!strcmp(target, "stdout")) {
		fd = 1;
	} else {
		fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0)
			return -errno;
		opened = true;
	}
	pthread_mutex_lock(&log_open_lock);
	if (log_own < 0 && !opened) {
		atomic_store(&log_fd, fd); /* stdout/stderr: never closed */
	} else if (log_own < 0) {
		log_own = fd;
		atomic_store(&log_fd, fd);
		opened = false; /* kept: it is the log's own number from now on */
	} else {
		/* A writer may have loaded the number and not written yet: it must
		 * never name anything but a log. dup3 swaps the file behind the
		 * number atomically, so that writer writes to the old or the new
		 * log; the number itself is never closed. */
		if (fd != log_own && dup3(fd, log_own, O_CLOEXEC) < 0)
			ret = -errno;
		else
			atomic_store(&log_fd, log_own);
	}
	pthread_mutex_unlock(&log_open_lock);
	if (opened)
		close(fd);
	return ret;
}

const char *rs_log_quote(char *out, size_t outlen, const char *s)
{
	rs_text_escape(out, outlen, s ? s : "", s ? strlen(s) : 0, true);
	return out;
}

void rs_log(enum rs_log_level l, const char *comp, const char *fmt, ...)
{
	char line[1024], msg[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	if ((int)l < atomic_load_explicit(&log_level, memory_order_relaxed))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, rs_log_level_name(l), comp);
	va_start(ap, fmt);
	m = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	/* The newline below is the only one in the record. */
	n += (int)rs_text_escape(line + n, sizeof(line) - (size_t)n - 1, msg,
				 RS_MIN((size_t)m, sizeof(msg) - 1), false);
	line[n++] = '\n';
	if (write(atomic_load(&log_fd), line, (size_t)n) < 0) {
		/* Nowhere left to report a logging failure. */
	}
}

void rs_log_hash(const void *secret, size_t len, char out[9])
{
	uint8_t d[SHA256_DIGEST_LENGTH];
	static const char hex[] = "0123456789abcdef";

	SHA256(secret, len, d);
	for (int i = 0; i < 4; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[8] = 0;
	explicit_bzero(d, sizeof(d));
}
