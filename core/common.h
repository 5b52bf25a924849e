/* core/common.h — included first by every ringside .c file.
 *
 * Conventions (see README "Code conventions"): actions return 0 or -errno,
 * predicates return bool, parsers return bytes consumed, RS_PARSE_PARTIAL or
 * RS_PARSE_ERROR. Startup allocations go through rs_xmalloc() and friends,
 * which abort on failure; per-connection allocations use plain malloc and
 * shed the connection on failure.
 */
#ifndef RS_COMMON_H
#define RS_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RS_PARSE_ERROR (-1)
#define RS_PARSE_PARTIAL (-2)

#define RS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define RS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define rs_likely(x) __builtin_expect(!!(x), 1)
#define rs_unlikely(x) __builtin_expect(!!(x), 0)
#define rs_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define RS_UNUSED __attribute__((unused))
#define RS_MUST_CHECK __attribute__((warn_unused_result))
#define RS_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Aborting allocators: for start-up and control-plane memory only. */
void *rs_xmalloc(size_t n);
void *rs_xcalloc(size_t n, size_t size);
char *rs_xstrdup(const char *s);

/* Monotonic clock in milliseconds and nanoseconds. */
uint64_t rs_now_ms(void);
uint64_t rs_now_ns(void);

/* Wall clock, seconds since the epoch. */
int64_t rs_wall_s(void);

/* Fill <buf> with <n> bytes from getrandom() (small requests come from a
 * per-thread block of its output); 0 or -errno. */
int rs_random(void *buf, size_t n);

/* Constant-time comparison of two byte strings of possibly different
 * length; the time depends only on <blen>. */
bool rs_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Bytes of heap currently allocated by the application (allocator's own
 * count, excluding its caches); 0 when the allocator cannot tell. */
uint64_t rs_mem_allocated(void);

/* Return freed heap memory to the kernel (after a large token sweep). */
void rs_mem_release(void);

#endif
