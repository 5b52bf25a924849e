/* The configuration loader: arbitrary JSON text, then validation. */
#include "core/common.h"

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_config c;
	char err[512], *s = malloc(size + 1);

	memcpy(s, data, size);
	s[size] = 0;
	rs_config_init(&c);
	if (!rs_config_load_string(&c, s, err, sizeof(err)))
		rs_config_validate(&c, err, sizeof(err));
	rs_config_release(&c);
	free(s);
	return 0;
}
