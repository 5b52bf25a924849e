/* admin/audit.h — the audit log: one JSON object per line, to a file
 * (reopened on SIGHUP for logrotate) or to syslog.
 *
 * Records are printable ASCII: jansson escapes controls, and every non-ASCII
 * character (C1 controls and bidi overrides in a label included) as \uXXXX,
 * so no record can act on a terminal or be shown out of order.
 *
 * Callers on any thread hand over a finished line; a writer thread does the
 * I/O, so a slow disk never stalls a worker. The queue is bounded: when it is
 * full the record is dropped and counted. Never pass a secret: tokens appear
 * as their 8-hex-digit hash.
 */
#ifndef RS_AUDIT_H
#define RS_AUDIT_H

#include "core/common.h"

struct rs_audit;

/* <target>: a file path, "syslog", or ""/NULL for no audit log (every call
 * is then a no-op). NULL with <err> filled when the file cannot be opened. */
struct rs_audit *rs_audit_open(const char *target, char *err, size_t errlen);
/* Flush what is queued and stop the writer. */
void rs_audit_close(struct rs_audit *a);
/* Reopen the file (SIGHUP). */
void rs_audit_reopen(struct rs_audit *a);

/* Queue a JSON object for writing; takes ownership of the json_t reference.
 * "ts" (RFC 3339, ms) and "event" are added first. */
struct json_t; /* jansson */
void rs_audit_emit(struct rs_audit *a, const char *event, struct json_t *fields);

uint64_t rs_audit_dropped(const struct rs_audit *a);
uint64_t rs_audit_written(const struct rs_audit *a);

#endif
