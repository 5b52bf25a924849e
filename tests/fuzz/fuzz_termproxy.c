/* The termproxy message check fed arbitrary messages: a message it accepts
 * must be exactly one well-formed termproxy message. */
#include "core/common.h"

#include "proto/termproxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_tp_msg m;
	char head[32];
	int n;

	if (rs_termproxy_check(data, size, &m))
		return 0;
	switch (m.type) {
	case RS_TP_PING:
		if (size != 1 || data[0] != '2')
			abort();
		break;
	case RS_TP_DATA:
		n = snprintf(head, sizeof(head), "0:%zu:", m.len);
		if ((size_t)n + m.len != size || memcmp(head, data, (size_t)n) ||
		    m.data != data + n || !m.len)
			abort();
		break;
	case RS_TP_RESIZE:
		n = snprintf(head, sizeof(head), "1:%u:%u:", m.cols, m.rows);
		if ((size_t)n != size || memcmp(head, data, size) || !m.cols || !m.rows ||
		    m.cols > RS_TP_MAX_DIM || m.rows > RS_TP_MAX_DIM)
			abort();
		break;
	}
	return 0;
}
