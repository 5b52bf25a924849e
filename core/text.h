/* core/text.h — untrusted text made safe to show and to log.
 *
 * Text from a peer (a VNC server's failure reason, an API label, a Proxmox
 * error detail) may hold anything: line breaks that start a forged log line,
 * terminal escapes (ESC, or the C1 CSI U+009B), bidi overrides (U+202E) that
 * make a terminal or a browser show other text than the bytes say, and
 * invalid UTF-8. "Unsafe" below means: C0 controls, DEL, C1 controls
 * (U+0080-U+009F), the bidi marks, embeddings, overrides and isolates
 * (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), the line and
 * paragraph separators (U+2028, U+2029), and every byte that is not part of a
 * well-formed UTF-8 sequence (overlong forms, surrogates and code points
 * above U+10FFFF included).
 *
 * Pure functions: no allocation, no locale; <out> is always NUL-terminated
 * (when <outlen> > 0) and never ends inside a UTF-8 sequence or an escape.
 */
#ifndef RS_TEXT_H
#define RS_TEXT_H

#include "core/common.h"

/* Printable UTF-8 for a person to read (the browser's failure reason): each
 * unsafe code point, and each byte of invalid UTF-8, becomes U+FFFD. Returns
 * strlen(out). */
size_t rs_text_sanitize(char *out, size_t outlen, const char *in, size_t len);

/* Log text: unsafe input is written as escapes (\n \r \t, \xHH for other
 * bytes below 0x80 and for invalid UTF-8, \uHHHH for C1 and bidi code
 * points); safe UTF-8 stays as it is. <quote>: the result is one quoted
 * key=value value, "..." with '"' and '\\' escaped too, so no value can end
 * early and forge a field; cut values end in "..." inside the quotes.
 * Returns strlen(out). */
size_t rs_text_escape(char *out, size_t outlen, const char *in, size_t len, bool quote);

#endif
