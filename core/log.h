/* core/log.h — leveled logging with component prefixes.
 *
 * Lines look like "2026-11-22T09:30:00Z info  http: message". Never pass a
 * secret (token, ticket, password, key) to these functions: log a short hash
 * (rs_log_hash) instead. Thread-safe; each line is written with one write(2).
 */
#ifndef RS_LOG_H
#define RS_LOG_H

#include "core/common.h"

enum rs_log_level {
	RS_LOG_DEBUG = 0,
	RS_LOG_INFO,
	RS_LOG_WARN,
	RS_LOG_ERROR,
};

/* Parse "debug|info|warn|warning|error"; 0 or -EINVAL. */
int rs_log_level_parse(const char *s, enum rs_log_level *out);
const char *rs_log_level_name(enum rs_log_level l);

/* Set the minimum level (atomic; any thread). */
void rs_log_set_level(enum rs_log_level l);
enum rs_log_level rs_log_get_level(void);

/* Log to "stderr", "stdout" or a file path (opened O_APPEND). Reopens the
 * file when called again with the same path (SIGHUP/logrotate). 0 or -errno. */
int rs_log_open(const char *target);

void rs_log(enum rs_log_level l, const char *comp, const char *fmt, ...) RS_PRINTF(3, 4);

#define rs_debug(comp, ...)                                                                        \
	do {                                                                                       \
		if (rs_log_get_level() <= RS_LOG_DEBUG)                                            \
			rs_log(RS_LOG_DEBUG, comp, __VA_ARGS__);                                   \
	} while (0)
#define rs_info(comp, ...) rs_log(RS_LOG_INFO, comp, __VA_ARGS__)
#define rs_warn(comp, ...) rs_log(RS_LOG_WARN, comp, __VA_ARGS__)
#define rs_error(comp, ...) rs_log(RS_LOG_ERROR, comp, __VA_ARGS__)

/* Write an 8-hex-digit non-reversible tag of <len> bytes of <secret> into
 * <out> (9 bytes), so logs can correlate a token without revealing it. */
void rs_log_hash(const void *secret, size_t len, char out[9]);

#endif
