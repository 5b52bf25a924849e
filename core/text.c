#include "core/common.h"

#include "core/text.h"

/* Length (1-4) of the well-formed UTF-8 sequence at <p> and its code point,
 * or 0 when the byte at <p> starts none (RFC 3629: no overlong form, no
 * surrogate, nothing above U+10FFFF). */
static size_t utf8_decode(const uint8_t *p, size_t n, uint32_t *cp)
{
	uint32_t c = p[0];
	size_t len;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		c &= 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		c &= 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		c &= 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* Controls, and the code points that change how the text around them is
 * shown (direction) or where a line ends. */
static bool unsafe_cp(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) || c == 0x2028 ||
	       c == 0x2029;
}

size_t rs_text_sanitize(char *out, size_t outlen, const char *in, size_t len)
{
	static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
	const uint8_t *p = (const uint8_t *)in;
	size_t o = 0;

	if (!outlen)
		return 0;
	for (size_t i = 0; i < len;) {
		uint32_t cp = 0;
		size_t n = utf8_decode(p + i, len - i, &cp);
		const char *src = (const char *)p + i;
		size_t w = n;

		if (!n || unsafe_cp(cp)) {
			src = replacement;
			w = sizeof(replacement) - 1;
		}
		if (o + w >= outlen)
			break;
		memcpy(out + o, src, w);
		o += w;
		i += n ? n : 1;
	}
	out[o] = 0;
	return o;
}

size_t rs_text_escape(char *out, size_t outlen, const char *in, size_t len, bool quote)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = (const uint8_t *)in;
	size_t o = 0, room;
	bool cut = false;

	/* Quoted: the opening and closing quotes, a possible "..." and the NUL
	 * always fit, so a cut value still reads as one closed value. */
	if (outlen < (quote ? 6u : 1u)) {
		if (outlen)
			out[0] = 0;
		return 0;
	}
	room = outlen - 1 - (quote ? 4 : 0);
	if (quote)
		out[o++] = '"';
	for (size_t i = 0; i < len;) {
		uint32_t cp = 0;
		size_t n = utf8_decode(p + i, len - i, &cp);
		char esc[8];
		const char *src = esc;
		size_t w;

		if (!n) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[p[i] >> 4];
			esc[3] = hex[p[i] & 15];
			w = 4;
			n = 1;
		} else if (unsafe_cp(cp)) {
			esc[0] = '\\';
			if (cp == '\n' || cp == '\r' || cp == '\t') {
				esc[1] = cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't';
				w = 2;
			} else if (cp < 0x80) {
				esc[1] = 'x';
				esc[2] = hex[cp >> 4];
				esc[3] = hex[cp & 15];
				w = 4;
			} else {
				esc[1] = 'u';
				for (int k = 0; k < 4; k++)
					esc[2 + k] = hex[(cp >> (12 - 4 * k)) & 15];
				w = 6;
			}
		} else if (quote && (cp == '"' || cp == '\\')) {
			esc[0] = '\\';
			esc[1] = (char)cp;
			w = 2;
		} else {
			src = (const char *)p + i;
			w = n;
		}
		if (o + w > room) {
			cut = true;
			break;
		}
		memcpy(out + o, src, w);
		o += w;
		i += n;
	}
	if (quote) {
		if (cut) {
			memcpy(out + o, "...", 3);
			o += 3;
		}
		out[o++] = '"';
	}
	out[o] = 0;
	return o;
}
