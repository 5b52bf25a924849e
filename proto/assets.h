/* proto/assets.h — the console pages and static files, embedded at build
 * time by scripts/embed-www (sorted by path), or loaded from a directory
 * with the same layout for development (config "www_dir"). */
#ifndef RS_ASSETS_H
#define RS_ASSETS_H

#include "core/common.h"

struct rs_asset {
	const char *path; /* "/pages/console-vnc.html", "/static/..." */
	const char *type; /* Content-Type */
	const unsigned char *data;
	size_t len;
	const char *etag; /* quoted */
};

extern const struct rs_asset rs_assets[];
extern const size_t rs_assets_count;

struct rs_asset_table {
	const struct rs_asset *items;
	size_t n;
};

/* The embedded table. */
const struct rs_asset_table *rs_assets_embedded(void);

/* Binary search in <t>; NULL when absent. */
const struct rs_asset *rs_asset_find_in(const struct rs_asset_table *t, const char *path,
					size_t len);
const struct rs_asset *rs_asset_find(const char *path, size_t len);

/* Load pages/ and static/ of <dir> (plus the embedded vendor modules) into a
 * new table for development. NULL with <err> filled on failure. */
struct rs_asset_table *rs_assets_load_dir(const char *dir, char *err, size_t errlen);
void rs_assets_free(struct rs_asset_table *t);

/* The language of the console pages for an Accept-Language value (untrusted
 * header bytes, not NUL-terminated): of the shipped languages ("en", "de"),
 * the one the browser rates highest (q=0 means "not this one"; equal q: the
 * first listed); "en" when it names neither or the value is malformed. Pure:
 * no allocation, no locale. */
const char *rs_page_language(const char *value, size_t len);

#endif
