/* The console API request body parser (JSON into a console spec). */
#include "core/common.h"

#include "admin/api.h"
#include "core/config.h"
#include "core/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rs_config cfg;
	static bool init;
	struct rs_console_spec *spec = NULL;
	struct rs_api_error e;

	if (!init) {
		char err[256];

		rs_config_init(&cfg);
		rs_config_validate(&cfg, err, sizeof(err));
		init = true;
	}
	if (!rs_api_parse_console(&cfg, data, size, &spec, &e))
		rs_spec_free(spec);
	return 0;
}
