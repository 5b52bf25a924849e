/* rs_text_sanitize and rs_text_escape on arbitrary bytes and buffer sizes:
 * the result always fits, is NUL-terminated, is well-formed UTF-8 without a
 * control, C1 or bidi code point, and a quoted value is one closed "...". */
#include "core/common.h"

#include "core/text.h"

/* Returns false on malformed UTF-8 or an unsafe code point in s[0..n). */
static bool clean(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t c = s[i];
		size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

		if (c >= 0x80 && (c < 0xc2 || c > 0xf4))
			return false;
		if (i + len > n)
			return false;
		if (len > 1)
			c &= 0x3f >> (len - 1);
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			c = c << 6 | (s[i + k] & 0x3f);
		}
		if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
		    (c >= 0xd800 && c <= 0xdfff))
			return false;
		if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x61c || c == 0x200e ||
		    c == 0x200f || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) ||
		    c == 0x2028 || c == 0x2029)
			return false;
		i += len;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[512];
	size_t cap, n;

	if (size < 1)
		return 0;
	cap = 1 + data[0] % sizeof(out);
	data++, size--;
	n = rs_text_sanitize(out, cap, (const char *)data, size);
	if (n >= cap || out[n] || strlen(out) != n || !clean((const uint8_t *)out, n))
		abort();
	for (int quote = 0; quote < 2; quote++) {
		n = rs_text_escape(out, cap, (const char *)data, size, quote);
		if (n && (n >= cap || out[n] || strlen(out) != n))
			abort();
		if (!clean((const uint8_t *)out, n))
			abort();
		if (quote && cap >= 6) {
			/* one value: opens and closes with a quote, none unescaped inside */
			if (n < 2 || out[0] != '"' || out[n - 1] != '"')
				abort();
			for (size_t i = 1; i + 1 < n; i++) {
				if (out[i] == '\\')
					i++;
				else if (out[i] == '"')
					abort();
			}
		}
	}
	return 0;
}
