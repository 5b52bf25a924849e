/* proto/termproxy.h — Proxmox termproxy framing, browser side (pure codec).
 *
 * The terminal page sends one termproxy message per WebSocket message:
 *   "0:<n>:<n bytes>"   input (n = byte length, decimal, no leading zeros)
 *   "1:<cols>:<rows>:"  window size (1..1000 each)
 *   "2"                 keep-alive
 * ringside checks every message before it reaches termproxy, whose own
 * parser skips unknown bytes one at a time and would otherwise turn a
 * malformed header into keystrokes. Anything else is refused.
 */
#ifndef RS_TERMPROXY_H
#define RS_TERMPROXY_H

#include "core/common.h"

#define RS_TP_MAX_DIM 1000

enum rs_tp_type { RS_TP_DATA = 0, RS_TP_RESIZE, RS_TP_PING };

struct rs_tp_msg {
	enum rs_tp_type type;
	const uint8_t *data; /* DATA: points into the message */
	size_t len;
	unsigned cols, rows; /* RESIZE */
};

/* Check one whole message. 0 with *out filled, or RS_PARSE_ERROR. */
int rs_termproxy_check(const uint8_t *msg, size_t len, struct rs_tp_msg *out);

#endif
