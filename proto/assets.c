#include "core/common.h"

#include <dirent.h>
#include <sys/stat.h>

#include <openssl/sha.h>

#include "proto/assets.h"

const struct rs_asset_table *rs_assets_embedded(void)
{
	static struct rs_asset_table t;

	if (!t.items) {
		t.items = rs_assets;
		t.n = rs_assets_count;
	}
	return &t;
}

static int cmp_path(const char *a, const char *b, size_t blen)
{
	size_t alen = strlen(a);
	int c = memcmp(a, b, RS_MIN(alen, blen));

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

const struct rs_asset *rs_asset_find_in(const struct rs_asset_table *t, const char *path,
					size_t len)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = cmp_path(t->items[mid].path, path, len);

		if (!c)
			return &t->items[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct rs_asset *rs_asset_find(const char *path, size_t len)
{
	return rs_asset_find_in(rs_assets_embedded(), path, len);
}

/* --- development override --- */

struct builder {
	struct rs_asset *items;
	size_t n, cap;
};

static const char *type_of(const char *name)
{
	const char *dot = strrchr(name, '.');

	if (!dot)
		return "application/octet-stream";
	if (!strcmp(dot, ".html"))
		return "text/html; charset=utf-8";
	if (!strcmp(dot, ".js") || !strcmp(dot, ".mjs"))
		return "text/javascript; charset=utf-8";
	if (!strcmp(dot, ".css"))
		return "text/css; charset=utf-8";
	if (!strcmp(dot, ".svg"))
		return "image/svg+xml";
	if (!strcmp(dot, ".png"))
		return "image/png";
	return "application/octet-stream";
}

static int add(struct builder *b, const char *path, unsigned char *data, size_t len,
	       const char *type)
{
	struct rs_asset *a;
	uint8_t d[SHA256_DIGEST_LENGTH];
	char *etag = malloc(19);

	if (!etag)
		return -ENOMEM;
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 64;
		struct rs_asset *ni = realloc(b->items, cap * sizeof(*ni));

		if (!ni) {
			free(etag);
			return -ENOMEM;
		}
		b->items = ni;
		b->cap = cap;
	}
	SHA256(data, len, d);
	etag[0] = '"';
	for (int i = 0; i < 8; i++)
		snprintf(etag + 1 + 2 * i, 3, "%02x", d[i]);
	etag[17] = '"';
	etag[18] = 0;
	a = &b->items[b->n++];
	a->path = rs_xstrdup(path);
	a->type = type;
	a->data = data;
	a->len = len;
	a->etag = etag;
	return 0;
}

static int load_tree(struct builder *b, const char *dir, const char *prefix, char *err,
		     size_t errlen)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int ret = 0;

	if (!d)
		return 0; /* a missing folder simply adds nothing */
	while (!ret && (e = readdir(d))) {
		char full[4096], url[4096];
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		snprintf(full, sizeof(full), "%s/%s", dir, e->d_name);
		snprintf(url, sizeof(url), "%s%s", prefix, e->d_name);
		if (stat(full, &st))
			continue;
		if (S_ISDIR(st.st_mode)) {
			strncat(url, "/", sizeof(url) - strlen(url) - 1);
			ret = load_tree(b, full, url, err, errlen);
		} else if (S_ISREG(st.st_mode) && st.st_size < (16 << 20)) {
			FILE *f = fopen(full, "rb");
			unsigned char *data = malloc((size_t)st.st_size + 1);

			if (!f || !data || fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
				snprintf(err, errlen, "www_dir: cannot read '%s'", full);
				free(data);
				ret = -EIO;
			} else {
				ret = add(b, url, data, (size_t)st.st_size, type_of(e->d_name));
				if (ret)
					free(data);
			}
			if (f)
				fclose(f);
		}
	}
	closedir(d);
	return ret;
}

static int by_path(const void *a, const void *b)
{
	return strcmp(((const struct rs_asset *)a)->path, ((const struct rs_asset *)b)->path);
}

struct rs_asset_table *rs_assets_load_dir(const char *dir, char *err, size_t errlen)
{
	struct builder b = {0};
	struct rs_asset_table *t;
	char sub[4096];

	snprintf(sub, sizeof(sub), "%s/pages", dir);
	if (load_tree(&b, sub, "/pages/", err, errlen))
		goto out_fail;
	snprintf(sub, sizeof(sub), "%s/static", dir);
	if (load_tree(&b, sub, "/static/", err, errlen))
		goto out_fail;
	/* Vendor modules still come from the build. */
	for (size_t i = 0; i < rs_assets_count; i++) {
		const struct rs_asset *a = &rs_assets[i];
		unsigned char *copy;

		if (strncmp(a->path, "/static/novnc/", 14) && strncmp(a->path, "/static/xterm/", 14))
			continue;
		copy = malloc(a->len + 1);
		if (!copy || add(&b, a->path, copy, a->len, a->type)) {
			free(copy);
			snprintf(err, errlen, "www_dir: out of memory");
			goto out_fail;
		}
		memcpy(copy, a->data, a->len);
	}
	qsort(b.items, b.n, sizeof(*b.items), by_path);
	t = rs_xcalloc(1, sizeof(*t));
	t->items = b.items;
	t->n = b.n;
	return t;

out_fail:
	t = rs_xcalloc(1, sizeof(*t));
	t->items = b.items;
	t->n = b.n;
	rs_assets_free(t);
	return NULL;
}

void rs_assets_free(struct rs_asset_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		free((void *)t->items[i].path);
		free((void *)t->items[i].data);
		free((void *)t->items[i].etag);
	}
	free((void *)t->items);
	free(t);
}

/* --- the page's language --- */

/* An Accept-Language weight "q=0.8" in thousandths; -1 when malformed. */
static int qvalue(const char *p, const char *end)
{
	int q, scale = 100;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (end - p < 3 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' ||
	    (p[2] != '0' && p[2] != '1'))
		return -1;
	q = (p[2] - '0') * 1000;
	p += 3;
	if (p < end && *p == '.') {
		for (p++; p < end && *p >= '0' && *p <= '9' && scale; p++, scale /= 10)
			q += (*p - '0') * scale;
	}
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p == end && q <= 1000 ? q : -1;
}

const char *rs_page_language(const char *value, size_t len)
{
	static const char *const langs[] = {"en", "de"};
	const char *p = value, *end = value + len, *best = "en";
	int best_q = 0;

	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end, *item = p, *tag_end, *semi;
		int q = 1000;

		while (item < stop && (*item == ' ' || *item == '\t'))
			item++;
		for (semi = item; semi < stop && *semi != ';'; semi++)
			;
		tag_end = semi;
		if (semi == stop)
			semi = NULL;
		while (tag_end > item && (tag_end[-1] == ' ' || tag_end[-1] == '\t'))
			tag_end--;
		if (semi)
			q = qvalue(semi + 1, stop);
		/* "de", "de-AT", "DE-ch": the primary subtag decides. */
		if (q > best_q && tag_end - item >= 2 && (tag_end - item == 2 || item[2] == '-')) {
			for (size_t i = 0; i < RS_ARRAY_SIZE(langs); i++) {
				if (!strncasecmp(item, langs[i], 2)) {
					best = langs[i];
					best_q = q;
				}
			}
		}
		p = stop + 1;
	}
	return best;
}
