/* proto/termproxy.c — termproxy framing check (see proto/termproxy.h). */
#include "core/common.h"

#include "proto/termproxy.h"

/* A decimal number of 1..<maxdig> digits without a leading zero, then ':'.
 * Returns the bytes used (digits and colon) or 0. */
static size_t number(const uint8_t *p, size_t len, size_t maxdig, unsigned long *out)
{
	size_t i = 0;

	*out = 0;
	while (i < len && i <= maxdig && p[i] >= '0' && p[i] <= '9') {
		*out = *out * 10 + (unsigned long)(p[i] - '0');
		i++;
	}
	if (!i || i > maxdig || i >= len || p[i] != ':' || (p[0] == '0' && i > 1))
		return 0;
	return i + 1;
}

int rs_termproxy_check(const uint8_t *msg, size_t len, struct rs_tp_msg *out)
{
	unsigned long a, b;
	size_t n, m;

	memset(out, 0, sizeof(*out));
	if (len == 1 && msg[0] == '2') {
		out->type = RS_TP_PING;
		return 0;
	}
	if (len < 3 || msg[1] != ':')
		return RS_PARSE_ERROR;
	if (msg[0] == '0') {
		n = number(msg + 2, len - 2, 9, &a);
		if (!n || !a || a != len - 2 - n)
			return RS_PARSE_ERROR;
		out->type = RS_TP_DATA;
		out->data = msg + 2 + n;
		out->len = a;
		return 0;
	}
	if (msg[0] == '1') {
		n = number(msg + 2, len - 2, 4, &a);
		m = n ? number(msg + 2 + n, len - 2 - n, 4, &b) : 0;
		if (!m || 2 + n + m != len || !a || !b || a > RS_TP_MAX_DIM || b > RS_TP_MAX_DIM)
			return RS_PARSE_ERROR;
		out->type = RS_TP_RESIZE;
		out->cols = (unsigned)a;
		out->rows = (unsigned)b;
		return 0;
	}
	return RS_PARSE_ERROR;
}
