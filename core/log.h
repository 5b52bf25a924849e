/* core/log.h — leveled logging with component prefixes.
 *
 * Lines look like "2026-11-22T09:30:00Z info  http: message". Never pass a
 * secret (token, ticket, password, key) to these functions: log a short hash
 * (rs_log_hash) instead. Thread-safe; each line is written with one write(2).
 *
 * Free text (anything a client, a target or an upstream chose: labels,
 * reasons, error details) goes into a key=value line only through rs_log_q,
 * which quotes and escapes it, so it can neither forge a field nor a line.
 * Every message is also escaped as a whole (controls, bidi overrides and
 * invalid UTF-8 as \xHH/\uHHHH, see core/text.h): one record is one line of
 * printable UTF-8 whatever a caller passed.
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
 * file when called again with the same path (SIGHUP/logrotate). Once a file
 * was opened, the log keeps one descriptor number for the rest of the
 * process and only the file behind it changes, so a line being written
 * during a reopen goes to the old or the new log, never to whatever reused a
 * closed number. 0 or -errno. */
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

/* <s> as one quoted log value ("..." with '"', '\\', controls, bidi
 * overrides and invalid UTF-8 escaped; NULL gives ""), written to <out>
 * (cut to fit, still closed). Returns <out>. */
const char *rs_log_quote(char *out, size_t outlen, const char *s);

/* rs_log_quote into a buffer that lives until the end of the enclosing block:
 * rs_info("api", "issued label=%s", rs_log_q(label)). */
#define RS_LOG_QUOTED_MAX 600
#define rs_log_q(s) rs_log_quote((char[RS_LOG_QUOTED_MAX]){0}, RS_LOG_QUOTED_MAX, (s))

/* Write an 8-hex-digit non-reversible tag of <len> bytes of <secret> into
 * <out> (9 bytes), so logs can correlate a token without revealing it. */
void rs_log_hash(const void *secret, size_t len, char out[9]);

#endif
