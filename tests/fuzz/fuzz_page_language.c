/* The console page's language from an Accept-Language header (untrusted
 * bytes, no terminator): never reads outside them, always a shipped language. */
#include "core/common.h"

#include "proto/assets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *l = rs_page_language((const char *)data, size);

	if (strcmp(l, "en") && strcmp(l, "de"))
		__builtin_trap();
	return 0;
}
