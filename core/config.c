#include "core/common.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/addr.h"
#include "core/config.h"

struct uint_field {
	const char *key; /* JSON path "section.name" */
	size_t off;
	unsigned min, max, def;
	bool pow2;
};

#define F(k, field, mn, mx, d) {k, offsetof(struct rs_config, field), mn, mx, d, false}
static const struct uint_field uint_fields[] = {
	F("workers", workers, 0, 256, 0),
	F("drain_timeout_s", drain_timeout_s, 0, 3600, 10),
	F("tokens.capacity", token_capacity, 16, 10000000, 100000),
	F("tokens.ttl_s", token_ttl_s, 1, 86400, 60),
	F("tokens.max_ttl_s", token_max_ttl_s, 1, 604800, 3600),
	F("api.rate_limit_per_s", api_rate_per_s, 0, 10000000, 50),
	F("api.rate_limit_burst", api_rate_burst, 1, 10000000, 100),
	F("api.max_pending_per_key", api_max_pending_per_key, 0, 10000000, 10000),
	F("api.max_consoles_per_key", api_max_consoles_per_key, 0, 10000000, 0),
	F("api.auth_failures_per_window", api_auth_fail_limit, 0, 1000000, 10),
	F("api.auth_failure_window_s", api_auth_fail_window_s, 1, 86400, 60),
	F("limits.max_request_line", max_request_line, 256, 65536, 8192),
	F("limits.max_header_bytes", max_header_bytes, 1024, 1048576, 16384),
	F("limits.max_headers", max_headers, 8, 1024, 64),
	F("limits.max_body", max_body, 1024, 67108864, 65536),
	F("limits.header_timeout_ms", header_timeout_ms, 100, 600000, 10000),
	F("limits.keepalive_timeout_ms", keepalive_timeout_ms, 100, 3600000, 60000),
	F("limits.ws_max_frame", ws_max_frame, 1024, 67108864, 1048576),
	F("limits.ws_max_message", ws_max_message, 1024, 268435456, 4194304),
	F("limits.rfb_max_cut_text", rfb_max_cut_text, 1024, 67108864, 1048576),
	F("limits.rfb_max_encodings", rfb_max_encodings, 32, 65535, 64),
	F("limits.session_buffer_bytes", session_buffer_bytes, 16384, 67108864, 262144),
	F("limits.connect_timeout_ms", connect_timeout_ms, 100, 120000, 10000),
	F("limits.handshake_timeout_ms", handshake_timeout_ms, 100, 120000, 15000),
	F("limits.upstream_upgrade_timeout_ms", upstream_upgrade_timeout_ms, 100, 120000, 5000),
	F("limits.session_idle_timeout_s", session_idle_timeout_s, 0, 604800, 0),
	F("console.resume_grace_s", resume_grace_s, 0, 3600, 30),
	F("limits.max_conns", max_conns, 0, 1048576, 0),
	F("limits.max_conns_per_client", max_conns_per_client, 0, 1048576, 0),
	{"buffers.size", offsetof(struct rs_config, buf_size), 4096, 65536, 16384, true},
	{"buffers.count", offsetof(struct rs_config, buf_count), 16, 32768, 1024, true},
	{"engine.ring_entries", offsetof(struct rs_config, ring_entries), 8, 32768, 4096, true},
	F("engine.socket_sndbuf", socket_sndbuf, 0, 67108864, 0),
	F("engine.socket_rcvbuf", socket_rcvbuf, 0, 67108864, 0),
	F("port_pool.port_min", port_min, 1024, 65535, 10000),
	F("port_pool.port_max", port_max, 1024, 65535, 32767),
	F("admin_socket_mode", admin_socket_mode, 0, 0777, 0660),
	F("tls.ticket_key_rotation_s", tls_ticket_rotation_s, 0, 604800, 3600),
};
#undef F

static int errf(char *err, size_t len, const char *fmt, ...) RS_PRINTF(3, 4);
static int errf(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static unsigned *uint_at(struct rs_config *c, const struct uint_field *f)
{
	return (unsigned *)((char *)c + f->off);
}

static void free_list(char ***list, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*list)[i]);
	free(*list);
	*list = NULL;
	*n = 0;
}

static void free_keys(struct rs_config *c)
{
	for (size_t i = 0; i < c->n_api_keys; i++) {
		free(c->api_keys[i].name);
		free_list(&c->api_keys[i].allowed_targets, &c->api_keys[i].n_allowed_targets);
		free_list(&c->api_keys[i].clusters, &c->api_keys[i].n_clusters);
		if (c->api_keys[i].key) {
			explicit_bzero(c->api_keys[i].key, strlen(c->api_keys[i].key));
			free(c->api_keys[i].key);
		}
	}
	free(c->api_keys);
	c->api_keys = NULL;
	c->n_api_keys = 0;
}

static void free_tls_certs(struct rs_config *c)
{
	for (size_t i = 0; i < c->n_tls_certs; i++) {
		free(c->tls_certs[i].cert);
		free(c->tls_certs[i].key);
	}
	free(c->tls_certs);
	c->tls_certs = NULL;
	c->n_tls_certs = 0;
}

static void wipe_free(char *p)
{
	if (p) {
		explicit_bzero(p, strlen(p));
		free(p);
	}
}

static void free_cluster(struct rs_cluster_conf *k)
{
	free(k->name);
	free_list(&k->endpoints, &k->n_endpoints);
	wipe_free(k->token);
	free(k->user);
	wipe_free(k->password);
	free(k->ca_file);
	free_list(&k->fingerprints, &k->n_fingerprints);
	free_list(&k->source_addresses, &k->n_source_addresses);
}

static void free_inline(struct rs_config *c)
{
	if (c->inline_upstreams) {
		free_cluster(c->inline_upstreams);
		free(c->inline_upstreams);
		c->inline_upstreams = NULL;
	}
}

static void free_clusters(struct rs_config *c)
{
	for (size_t i = 0; i < c->n_clusters; i++)
		free_cluster(&c->clusters[i]);
	free(c->clusters);
	c->clusters = NULL;
	c->n_clusters = 0;
}

const struct rs_cluster_conf *rs_config_cluster(const struct rs_config *c, const char *name)
{
	for (size_t i = 0; i < c->n_clusters; i++)
		if (!strcmp(c->clusters[i].name, name))
			return &c->clusters[i];
	return NULL;
}

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = v ? rs_xstrdup(v) : NULL;
}

void rs_config_init(struct rs_config *c)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < RS_ARRAY_SIZE(uint_fields); i++)
		*uint_at(c, &uint_fields[i]) = uint_fields[i].def;
	c->listen = rs_xcalloc(1, sizeof(char *));
	c->listen[0] = rs_xstrdup("127.0.0.1:8080");
	c->n_listen = 1;
	c->log_level = rs_xstrdup("info");
	c->log_target = rs_xstrdup("stderr");
	c->state_dir = rs_xstrdup("/var/lib/ringside");
	c->metrics_listen = rs_xstrdup("127.0.0.1:9180");
	c->audit_log = rs_xstrdup("");
	c->admin_socket = rs_xstrdup("");
	c->console_language = rs_xstrdup("auto");
}

static void free_fleet(struct rs_fleet_conf *f)
{
	free(f->node);
	free(f->address);
	free(f->username);
	wipe_free(f->password);
	free(f->tls_ca_file);
	free(f->key_prefix);
	free_list(&f->sentinels, &f->n_sentinels);
	free(f->master);
	memset(f, 0, sizeof(*f));
}

void rs_config_release(struct rs_config *c)
{
	free_list(&c->listen, &c->n_listen);
	free_list(&c->allowed_origins, &c->n_allowed_origins);
	free_list(&c->allowed_targets, &c->n_allowed_targets);
	free_list(&c->source_addresses, &c->n_source_addresses);
	free_list(&c->tls_listen, &c->n_tls_listen);
	free_list(&c->trusted_proxies, &c->n_trusted_proxies);
	free_tls_certs(c);
	free_clusters(c);
	free_inline(c);
	free_keys(c);
	free(c->public_url);
	free(c->log_level);
	free(c->log_target);
	free(c->www_dir);
	free_list(&c->console_frame_ancestors, &c->n_console_frame_ancestors);
	free(c->console_title);
	free(c->console_logo);
	free(c->console_accent);
	free(c->console_language);
	free(c->console_support_url);
	free(c->state_dir);
	free(c->metrics_listen);
	free(c->audit_log);
	free(c->admin_socket);
	free(c->admin_socket_owner);
	free(c->admin_socket_group);
	if (c->metrics_token) {
		explicit_bzero(c->metrics_token, strlen(c->metrics_token));
		free(c->metrics_token);
	}
	free(c->config_path);
	free(c->_pvnc_public_ip);
	free_fleet(&c->fleet);
	memset(c, 0, sizeof(*c));
}

int rs_parse_hostport(const char *s, struct sockaddr_storage *out, socklen_t *len)
{
	char host[256];
	const char *colon;
	char *end;
	unsigned long port;
	struct sockaddr_in *s4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;

	memset(out, 0, sizeof(*out));
	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = 0;
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host) || memchr(s, ':', (size_t)(colon - s)))
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
	}
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || port > 65535)
		return -EINVAL;
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	if (rs_parse_ip(host, strlen(host), out))
		return -EINVAL;
	if (out->ss_family == AF_INET) {
		s4->sin_port = htons((uint16_t)port);
		*len = sizeof(*s4);
	} else {
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*s6);
	}
	return 0;
}

static int get_string_list(json_t *v, const char *key, char ***out, size_t *n, char *err,
			   size_t errlen)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return errf(err, errlen, "config: '%s': must be an array of strings", key);
	json_array_foreach(v, i, item)
	{
		if (!json_is_string(item))
			return errf(err, errlen, "config: '%s[%zu]': must be a string", key, i);
	}
	free_list(out, n);
	*out = rs_xcalloc(json_array_size(v) + 1, sizeof(char *));
	json_array_foreach(v, i, item)(*out)[i] = rs_xstrdup(json_string_value(item));
	*n = json_array_size(v);
	return 0;
}

static int set_uint(struct rs_config *c, const char *path, json_t *v, char *err, size_t errlen)
{
	for (size_t i = 0; i < RS_ARRAY_SIZE(uint_fields); i++) {
		const struct uint_field *f = &uint_fields[i];
		json_int_t x;

		if (strcmp(f->key, path))
			continue;
		if (!json_is_integer(v))
			return errf(err, errlen, "config: '%s': must be an integer", path);
		x = json_integer_value(v);
		if (x < (json_int_t)f->min || x > (json_int_t)f->max)
			return errf(err, errlen,
				    "config: '%s': must be an integer between %u and %u", path,
				    f->min, f->max);
		if (f->pow2 && (x & (x - 1)))
			return errf(err, errlen, "config: '%s': must be a power of two", path);
		*uint_at(c, f) = (unsigned)x;
		return 0;
	}
	return 1; /* not a numeric key */
}

static bool valid_key_name(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 64)
		return false;
	for (; *s; s++)
		if (!(*s == '.' || *s == '_' || *s == '-' || (*s >= '0' && *s <= '9') ||
		      (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
			return false;
	return true;
}

static struct rs_api_key *add_key(struct rs_config *c, const char *name, const char *key)
{
	struct rs_api_key *k = realloc(c->api_keys, (c->n_api_keys + 1) * sizeof(*k));

	if (!k)
		abort();
	c->api_keys = k;
	k += c->n_api_keys++;
	memset(k, 0, sizeof(*k));
	k->name = rs_xstrdup(name);
	k->key = rs_xstrdup(key);
	return k;
}

/* Keys copied from documentation and tutorials, the first an attacker tries:
 * one containing a placeholder phrase (case-insensitive), one whose letters
 * are a weak word repeated ("Password1234567890", "secretsecret..."), or one
 * character repeated. A random key of 16+ characters is none of these. */
static const char *placeholder_key(const char *key)
{
	static const char *const phrases[] = {"change-me",  "changeme",    "change_me", "replace-me",
					      "replaceme",  "replace_me",  "example",   "placeholder",
					      "your-key",   "your_key",    "yourkey",   "your-api-key"};
	static const char *const words[] = {"secret", "password", "passwd", "apikey", "token",
					    "default"};
	char letters[513];
	size_t n = 0, len = strlen(key);

	for (size_t i = 0; i < RS_ARRAY_SIZE(phrases); i++)
		if (strcasestr(key, phrases[i]))
			return phrases[i];
	if (len && strspn(key, (char[]){key[0], 0}) == len)
		return "one character repeated";
	for (const char *p = key; *p && n < sizeof(letters) - 1; p++)
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
			letters[n++] = (char)(*p | 0x20);
	letters[n] = 0;
	for (size_t i = 0; i < RS_ARRAY_SIZE(words); i++) {
		size_t wl = strlen(words[i]);

		if (!n || n % wl)
			continue;
		for (size_t j = 0; j < n && !strncmp(letters + j, words[i], wl); j += wl)
			if (j + wl == n)
				return words[i];
	}
	return NULL;
}

/* 0 when <key> may be used as an API key, otherwise the reason in <err>. */
static int check_key(const char *path, const char *key, char *err, size_t errlen)
{
	const char *word = placeholder_key(key);

	if (strlen(key) < 16)
		return errf(err, errlen,
			    "config: '%s': must be at least 16 characters (generate one with: "
			    "openssl rand -base64 24)",
			    path);
	if (strlen(key) > 512)
		return errf(err, errlen, "config: '%s': must be at most 512 characters", path);
	if (word)
		return errf(err, errlen,
			    "config: '%s': looks like a placeholder (%s); generate a real key "
			    "with: openssl rand -base64 24",
			    path, word);
	return 0;
}

static int check_cidrs(const char *path, char **list, size_t n, char *err, size_t errlen)
{
	struct rs_cidr cidr;

	for (size_t i = 0; i < n; i++)
		if (rs_parse_cidr(list[i], &cidr))
			return errf(err, errlen,
				    "config: '%s[%zu]': '%s' is not an address or CIDR range (e.g. "
				    "10.0.0.0/8)",
				    path, i, list[i]);
	return 0;
}

static int set_key_limit(json_t *v, const char *path, unsigned *out, bool *set, char *err,
			 size_t errlen)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 10000000)
		return errf(err, errlen, "config: '%s': must be an integer between 0 and 10000000",
			    path);
	*out = (unsigned)json_integer_value(v);
	*set = true;
	return 0;
}

/* A key's scope fields (api_keys[i].clusters, kinds, max_ttl_s,
 * view_only_only). Cluster names and max_ttl_s are checked against the
 * rest of the file in rs_config_validate (clusters may come later). */
static int set_key_scope(struct rs_api_key *k, const char *field, json_t *f, const char *path,
			 char *err, size_t errlen)
{
	static const char *const kind_names[] = {"vnc", "pve-vnc", "pve-term"};
	size_t i;
	json_t *item;
	int ret;

	if (!strcmp(field, "view_only_only")) {
		if (!json_is_boolean(f))
			return errf(err, errlen, "config: '%s': must be true or false", path);
		k->view_only_only = json_is_true(f);
		return 0;
	}
	if (!strcmp(field, "max_ttl_s")) {
		if (!json_is_integer(f) || json_integer_value(f) < 1 ||
		    json_integer_value(f) > 10000000)
			return errf(err, errlen,
				    "config: '%s': must be an integer of seconds from 1 to 10000000",
				    path);
		k->max_ttl_s = (unsigned)json_integer_value(f);
		return 0;
	}
	if (!strcmp(field, "clusters")) {
		ret = get_string_list(f, path, &k->clusters, &k->n_clusters, err, errlen);
		if (!ret && !k->n_clusters)
			ret = errf(err, errlen,
				   "config: '%s': must name at least one cluster (leave it out to "
				   "allow every cluster)",
				   path);
		k->clusters_set = true;
		return ret;
	}
	/* kinds */
	if (!json_is_array(f) || !json_array_size(f))
		return errf(err, errlen,
			    "config: '%s': must be a non-empty list of \"vnc\", \"pve-vnc\", "
			    "\"pve-term\" (leave it out to allow every kind)",
			    path);
	json_array_foreach(f, i, item)
	{
		unsigned bit = 0;

		for (unsigned j = 0; j < RS_ARRAY_SIZE(kind_names); j++)
			if (json_is_string(item) && !strcmp(json_string_value(item), kind_names[j]))
				bit = 1u << j;
		if (!bit)
			return errf(err, errlen,
				    "config: '%s[%zu]': must be \"vnc\", \"pve-vnc\" or \"pve-term\"",
				    path, i);
		k->kinds |= bit;
	}
	return 0;
}

static int set_api_keys(struct rs_config *c, json_t *v, char *err, size_t errlen)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return errf(err, errlen, "config: 'api_keys': must be an array of {name, key}");
	json_array_foreach(v, i, item)
	{
		json_t *name = json_object_get(item, "name"), *key = json_object_get(item, "key"), *f;
		struct rs_api_key *k;
		const char *field;
		char path[96];
		int ret;

		if (!json_is_object(item) || !json_is_string(name) || !json_is_string(key))
			return errf(err, errlen,
				    "config: 'api_keys[%zu]': must be an object with the string "
				    "fields name and key",
				    i);
		if (!valid_key_name(json_string_value(name)))
			return errf(err, errlen,
				    "config: 'api_keys[%zu].name': 1-64 characters of A-Z a-z 0-9 . _ -",
				    i);
		snprintf(path, sizeof(path), "api_keys[%zu].key", i);
		ret = check_key(path, json_string_value(key), err, errlen);
		if (ret)
			return ret;
		for (size_t j = 0; j < c->n_api_keys; j++)
			if (!strcmp(c->api_keys[j].name, json_string_value(name)))
				return errf(err, errlen,
					    "config: 'api_keys[%zu].name': duplicate name '%s'", i,
					    json_string_value(name));
		k = add_key(c, json_string_value(name), json_string_value(key));
		json_object_foreach(item, field, f)
		{
			snprintf(path, sizeof(path), "api_keys[%zu].%s", i, field);
			if (!strcmp(field, "name") || !strcmp(field, "key"))
				ret = 0;
			else if (!strcmp(field, "max_pending"))
				ret = set_key_limit(f, path, &k->max_pending, &k->max_pending_set, err,
						    errlen);
			else if (!strcmp(field, "max_consoles"))
				ret = set_key_limit(f, path, &k->max_consoles, &k->max_consoles_set,
						    err, errlen);
			else if (!strcmp(field, "admin")) {
				ret = json_is_boolean(f) ? 0
							 : errf(err, errlen,
								"config: '%s': must be true or false",
								path);
				k->admin = json_is_true(f);
			} else if (!strcmp(field, "allowed_targets")) {
				ret = get_string_list(f, path, &k->allowed_targets,
						      &k->n_allowed_targets, err, errlen);
				if (!ret)
					ret = check_cidrs(path, k->allowed_targets,
							  k->n_allowed_targets, err, errlen);
				k->allowed_targets_set = true;
			} else if (!strcmp(field, "clusters") || !strcmp(field, "kinds") ||
				   !strcmp(field, "max_ttl_s") || !strcmp(field, "view_only_only"))
				ret = set_key_scope(k, field, f, path, err, errlen);
			else
				ret = errf(err, errlen, "config: '%s': unknown key", path);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static int set_tls_certs(struct rs_config *c, const char *path, json_t *v, char *err,
			 size_t errlen)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return errf(err, errlen, "config: '%s': must be an array of {cert, key}", path);
	json_array_foreach(v, i, item)
	{
		json_t *cert = json_object_get(item, "cert"), *key = json_object_get(item, "key");

		if (!json_is_object(item) || json_object_size(item) != 2 || !json_is_string(cert) ||
		    !json_is_string(key) || !json_string_length(cert) || !json_string_length(key))
			return errf(err, errlen,
				    "config: '%s[%zu]': must be an object with exactly the string "
				    "fields cert and key (PEM file paths)",
				    path, i);
	}
	free_tls_certs(c);
	c->tls_certs = rs_xcalloc(json_array_size(v) + 1, sizeof(*c->tls_certs));
	json_array_foreach(v, i, item)
	{
		c->tls_certs[i].cert = rs_xstrdup(json_string_value(json_object_get(item, "cert")));
		c->tls_certs[i].key = rs_xstrdup(json_string_value(json_object_get(item, "key")));
	}
	c->n_tls_certs = json_array_size(v);
	return 0;
}

static bool valid_token(const char *t)
{
	const char *bang = strchr(t, '!'), *eq = strrchr(t, '=');

	/* user@realm!tokenid=secret, split at the last '=' as Proxmox does. */
	return bang && eq && eq > bang + 1 && strchr(t, '@') && strchr(t, '@') < bang && eq[1] &&
	       !strpbrk(t, "\r\n ");
}

/* Every entry an IP literal, none twice: a doubled address would get two
 * shares of the port range and two workers the same ports. */
static int check_source_addresses(const char *path, char **list, size_t n, char *err,
				  size_t errlen)
{
	struct sockaddr_storage a, b;

	for (size_t i = 0; i < n; i++) {
		if (rs_parse_ip(list[i], strlen(list[i]), &a))
			return errf(err, errlen, "config: '%s[%zu]': not an IP address", path, i);
		for (size_t j = 0; j < i; j++) {
			rs_parse_ip(list[j], strlen(list[j]), &b);
			if (a.ss_family == b.ss_family &&
			    !memcmp(&a, &b, a.ss_family == AF_INET ? sizeof(struct sockaddr_in)
								  : sizeof(struct sockaddr_in6)))
				return errf(err, errlen,
					    "config: '%s[%zu]': '%s' is listed twice (also [%zu])",
					    path, i, list[i], j);
		}
	}
	return 0;
}

/* <inline_only>: the 'inline_upstreams' object, which has only the
 * verification keys (hosts and credentials come with each console). */
static int set_cluster(struct rs_cluster_conf *k, const char *name, json_t *obj, char *err,
		       size_t errlen, bool inline_only)
{
	static const char *const known[] = {"endpoints", "token",	"user",
					    "password",	 "source_addresses", "ca_file",
					    "fingerprints", "verify"};
	char path[200];
	const char *key;
	json_t *v;
	int ret;

	k->name = rs_xstrdup(name);
	if (!json_is_object(obj))
		return errf(err, errlen, "config: 'clusters.%s': must be an object", name);
	json_object_foreach(obj, key, v)
	{
		bool ok = false;

		for (size_t i = inline_only ? 5 : 0; i < RS_ARRAY_SIZE(known); i++)
			ok |= !strcmp(key, known[i]);
		if (inline_only)
			snprintf(path, sizeof(path), "inline_upstreams.%s", key);
		else
			snprintf(path, sizeof(path), "clusters.%s.%s", name, key);
		if (!ok)
			return errf(err, errlen, "config: '%s': unknown key", path);
		if (!strcmp(key, "source_addresses")) {
			ret = get_string_list(v, path, &k->source_addresses,
					      &k->n_source_addresses, err, errlen);
			if (ret)
				return ret;
			ret = check_source_addresses(path, k->source_addresses,
						     k->n_source_addresses, err, errlen);
			if (ret)
				return ret;
			continue;
		}
		if (!strcmp(key, "endpoints") || !strcmp(key, "fingerprints")) {
			ret = get_string_list(v, path,
					      !strcmp(key, "endpoints") ? &k->endpoints : &k->fingerprints,
					      !strcmp(key, "endpoints") ? &k->n_endpoints
									: &k->n_fingerprints,
					      err, errlen);
			if (ret)
				return ret;
			continue;
		}
		if (!json_is_string(v) || !json_string_length(v))
			return errf(err, errlen, "config: '%s': must be a non-empty string", path);
		if (!strcmp(key, "verify")) {
			const char *m = json_string_value(v);

			if (!strcmp(m, "insecure"))
				k->insecure = true;
			else if (!strcmp(m, "system"))
				k->system_ca = true;
			else if (strcmp(m, "strict"))
				return errf(err, errlen,
					    "config: '%s': 'strict' (ca_file or fingerprints), 'system' "
					    "or 'insecure'",
					    path);
			continue;
		}
		set_str(!strcmp(key, "token")	     ? &k->token
			: !strcmp(key, "user")	     ? &k->user
			: !strcmp(key, "password") ? &k->password
						   : &k->ca_file,
			json_string_value(v));
	}
	if (inline_only) {
		if (!k->ca_file && !k->n_fingerprints && !k->system_ca && !k->insecure)
			return errf(err, errlen,
				    "config: 'inline_upstreams': say how to verify Proxmox certificates: "
				    "'ca_file', 'fingerprints', or \"verify\": \"system\" / \"insecure\"");
		return 0;
	}
	if (!k->n_endpoints)
		return errf(err, errlen, "config: 'clusters.%s.endpoints': needs at least one host:port",
			    name);
	for (size_t i = 0; i < k->n_endpoints; i++) {
		const char *e = k->endpoints[i], *colon = strrchr(e, ':');

		if (!colon || colon == e || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		    atoi(colon + 1) < 1 || atoi(colon + 1) > 65535 || strpbrk(e, " /\r\n"))
			return errf(err, errlen,
				    "config: 'clusters.%s.endpoints[%zu]': '%s' is not host:port "
				    "(e.g. 10.0.0.5:8006)",
				    name, i, e);
	}
	/* Both may be given: VNC consoles then use the token, terminals the
	 * login (termproxy before the April 2026 update refuses tokens). */
	if (!k->token && !k->user)
		return errf(err, errlen,
			    "config: 'clusters.%s': give either 'token' (an API token, recommended) "
			    "or 'user' and 'password' (or both: terminals then use the login)",
			    name);
	if (k->token && !valid_token(k->token))
		return errf(err, errlen,
			    "config: 'clusters.%s.token': must look like user@realm!tokenid=secret",
			    name);
	if (k->user && (!k->password || !strchr(k->user, '@')))
		return errf(err, errlen,
			    "config: 'clusters.%s': 'user' must be user@realm and needs 'password'",
			    name);
	if (!k->ca_file && !k->n_fingerprints && !k->system_ca && !k->insecure)
		return errf(err, errlen,
			    "config: 'clusters.%s': say how to verify its TLS certificates: 'ca_file' "
			    "(the cluster CA, /etc/pve/pve-root-ca.pem), 'fingerprints' (SHA-256 of "
			    "the node certificates), or \"verify\": \"system\" / \"insecure\"",
			    name);
	return 0;
}

static int set_clusters(struct rs_config *c, json_t *v, char *err, size_t errlen)
{
	const char *name;
	json_t *obj;
	size_t i = 0;

	if (!json_is_object(v))
		return errf(err, errlen, "config: 'clusters': must be an object of named clusters");
	free_clusters(c);
	c->clusters = rs_xcalloc(json_object_size(v) + 1, sizeof(*c->clusters));
	json_object_foreach(v, name, obj)
	{
		int ret;

		if (!valid_key_name(name))
			return errf(err, errlen,
				    "config: 'clusters': name '%s' must be 1-64 characters of A-Z "
				    "a-z 0-9 . _ -",
				    name);
		c->n_clusters = ++i;
		ret = set_cluster(&c->clusters[i - 1], name, obj, err, errlen, false);
		if (ret)
			return ret;
	}
	return 0;
}

static int need_string(json_t *v, const char *key, char *err, size_t errlen)
{
	if (!json_is_string(v))
		return errf(err, errlen, "config: '%s': must be a string", key);
	return 0;
}

static int set_section(struct rs_config *c, const char *section, json_t *obj, char *err,
		       size_t errlen)
{
	const char *k;
	json_t *v;
	char path[128];

	if (!json_is_object(obj))
		return errf(err, errlen, "config: '%s': must be an object", section);
	json_object_foreach(obj, k, v)
	{
		int ret;

		snprintf(path, sizeof(path), "%s.%s", section, k);
		if (!strcmp(path, "tokens.bind_client_ip")) {
			if (!json_is_boolean(v))
				return errf(err, errlen, "config: '%s': must be true or false", path);
			c->token_bind_ip = json_is_true(v);
			continue;
		}
		if (!strcmp(path, "engine.pin_workers")) {
			if (!json_is_boolean(v))
				return errf(err, errlen, "config: '%s': must be true or false", path);
			c->pin_workers = json_is_true(v);
			continue;
		}
		if (!strcmp(path, "tls.certificates")) {
			ret = set_tls_certs(c, path, v, err, errlen);
			if (ret)
				return ret;
			continue;
		}
		if (!strcmp(path, "console.frame_ancestors")) {
			ret = get_string_list(v, path, &c->console_frame_ancestors,
					      &c->n_console_frame_ancestors, err, errlen);
			if (ret)
				return ret;
			continue;
		}
		if (!strcmp(path, "console.title") || !strcmp(path, "console.logo") ||
		    !strcmp(path, "console.accent_colour") || !strcmp(path, "console.language") ||
		    !strcmp(path, "console.support_url")) {
			ret = need_string(v, path, err, errlen);
			if (ret)
				return ret;
			set_str(!strcmp(path, "console.title")		 ? &c->console_title
				: !strcmp(path, "console.logo")		 ? &c->console_logo
				: !strcmp(path, "console.accent_colour") ? &c->console_accent
				: !strcmp(path, "console.language")	 ? &c->console_language
									 : &c->console_support_url,
				json_string_value(v));
			continue;
		}
		if (!strcmp(path, "port_pool.source_addresses")) {
			ret = get_string_list(v, path, &c->source_addresses, &c->n_source_addresses,
					      err, errlen);
			if (ret)
				return ret;
			continue;
		}
		ret = set_uint(c, path, v, err, errlen);
		if (ret < 0)
			return ret;
		if (ret > 0)
			return errf(err, errlen, "config: '%s': unknown key", path);
	}
	return 0;
}

static int fleet_uint(json_t *v, const char *path, unsigned mn, unsigned mx, unsigned *out,
		      char *err, size_t errlen)
{
	if (!json_is_integer(v) || json_integer_value(v) < mn || json_integer_value(v) > mx)
		return errf(err, errlen, "config: '%s': must be an integer from %u to %u", path, mn,
			    mx);
	*out = (unsigned)json_integer_value(v);
	return 0;
}

static int fleet_str(json_t *v, const char *path, char **out, char *err, size_t errlen)
{
	if (!json_is_string(v))
		return errf(err, errlen, "config: '%s': must be a string", path);
	if (out == NULL)
		return 0;
	free(*out);
	*out = rs_xstrdup(json_string_value(v));
	return 0;
}

static int fleet_bool(json_t *v, const char *path, bool *out, char *err, size_t errlen)
{
	if (!json_is_boolean(v))
		return errf(err, errlen, "config: '%s': must be true or false", path);
	*out = json_is_true(v);
	return 0;
}

/* fleet: {"node", "redis": {...}, "sentinel": {"addresses", "master"}} */
static int set_fleet(struct rs_config *c, json_t *obj, char *err, size_t errlen)
{
	struct rs_fleet_conf *f = &c->fleet;
	const char *k;
	json_t *v;
	int ret = 0;

	if (!json_is_object(obj))
		return errf(err, errlen, "config: 'fleet': must be an object");
	f->enabled = true;
	json_object_foreach(obj, k, v)
	{
		if (!strcmp(k, "node")) {
			ret = fleet_str(v, "fleet.node", &f->node, err, errlen);
		} else if (!strcmp(k, "redis") || !strcmp(k, "sentinel")) {
			const char *k2;
			json_t *v2;
			char path[128];

			if (!json_is_object(v))
				return errf(err, errlen, "config: 'fleet.%s': must be an object", k);
			json_object_foreach(v, k2, v2)
			{
				snprintf(path, sizeof(path), "fleet.%s.%s", k, k2);
				if (!strcmp(path, "fleet.redis.address"))
					ret = fleet_str(v2, path, &f->address, err, errlen);
				else if (!strcmp(path, "fleet.redis.username"))
					ret = fleet_str(v2, path, &f->username, err, errlen);
				else if (!strcmp(path, "fleet.redis.password")) {
					ret = fleet_str(v2, path, NULL, err, errlen);
					if (!ret) {
						wipe_free(f->password);
						f->password = rs_xstrdup(json_string_value(v2));
					}
				} else if (!strcmp(path, "fleet.redis.db"))
					ret = fleet_uint(v2, path, 0, 65535, &f->db, err, errlen);
				else if (!strcmp(path, "fleet.redis.tls"))
					ret = fleet_bool(v2, path, &f->tls, err, errlen);
				else if (!strcmp(path, "fleet.redis.tls_insecure"))
					ret = fleet_bool(v2, path, &f->tls_insecure, err, errlen);
				else if (!strcmp(path, "fleet.redis.tls_ca_file"))
					ret = fleet_str(v2, path, &f->tls_ca_file, err, errlen);
				else if (!strcmp(path, "fleet.redis.key_prefix"))
					ret = fleet_str(v2, path, &f->key_prefix, err, errlen);
				else if (!strcmp(path, "fleet.redis.timeout_ms"))
					ret = fleet_uint(v2, path, 10, 60000, &f->timeout_ms, err,
							 errlen);
				else if (!strcmp(path, "fleet.redis.connect_timeout_ms"))
					ret = fleet_uint(v2, path, 10, 60000, &f->connect_timeout_ms,
							 err, errlen);
				else if (!strcmp(path, "fleet.redis.max_pending"))
					ret = fleet_uint(v2, path, 1, 1000000, &f->max_pending, err,
							 errlen);
				else if (!strcmp(path, "fleet.redis.consume_replicas"))
					ret = fleet_uint(v2, path, 0, 16, &f->consume_replicas, err,
							 errlen);
				else if (!strcmp(path, "fleet.redis.consume_wait_ms"))
					ret = fleet_uint(v2, path, 1, 60000, &f->consume_wait_ms, err,
							 errlen);
				else if (!strcmp(path, "fleet.sentinel.addresses"))
					ret = get_string_list(v2, path, &f->sentinels, &f->n_sentinels,
							      err, errlen);
				else if (!strcmp(path, "fleet.sentinel.master"))
					ret = fleet_str(v2, path, &f->master, err, errlen);
				else
					return errf(err, errlen, "config: '%s': unknown key", path);
				if (ret)
					return ret;
			}
		} else {
			return errf(err, errlen, "config: 'fleet.%s': unknown key", k);
		}
		if (ret)
			return ret;
	}
	return 0;
}

static int validate_fleet(struct rs_fleet_conf *f, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char host[256];

	if (!f->enabled)
		return 0;
	if (!f->key_prefix)
		f->key_prefix = rs_xstrdup("rs:");
	if (!f->timeout_ms)
		f->timeout_ms = 500;
	if (!f->connect_timeout_ms)
		f->connect_timeout_ms = 1000;
	if (!f->max_pending)
		f->max_pending = 1024;
	if (!f->consume_wait_ms)
		f->consume_wait_ms = f->timeout_ms / 2;
	if (!f->node) {
		if (gethostname(host, sizeof(host)))
			snprintf(host, sizeof(host), "ringside");
		host[sizeof(host) - 1] = 0;
		f->node = rs_xstrdup(host);
	}
	if (f->address && f->n_sentinels)
		return errf(err, errlen,
			    "config: 'fleet': give either 'redis.address' or 'sentinel', not both");
	if (!f->address && !f->n_sentinels)
		return errf(err, errlen,
			    "config: 'fleet': needs 'redis.address' or 'sentinel.addresses'");
	if (f->address && rs_parse_hostport(f->address, &ss, &len))
		return errf(err, errlen,
			    "config: 'fleet.redis.address': '%s' is not host:port with a numeric "
			    "address",
			    f->address);
	for (size_t i = 0; i < f->n_sentinels; i++)
		if (rs_parse_hostport(f->sentinels[i], &ss, &len))
			return errf(err, errlen,
				    "config: 'fleet.sentinel.addresses[%zu]': '%s' is not host:port "
				    "with a numeric address",
				    i, f->sentinels[i]);
	if (f->n_sentinels && (!f->master || !*f->master))
		return errf(err, errlen, "config: 'fleet.sentinel.master': needed with sentinels");
	if (f->username && !f->password)
		return errf(err, errlen, "config: 'fleet.redis.username': needs a password");
	if (f->consume_wait_ms >= f->timeout_ms)
		return errf(err, errlen,
			    "config: 'fleet.redis.consume_wait_ms': must be below timeout_ms (%u)",
			    f->timeout_ms);
	if (strlen(f->key_prefix) > 64)
		return errf(err, errlen, "config: 'fleet.redis.key_prefix': at most 64 characters");
	return 0;
}

static int apply(struct rs_config *c, json_t *root, char *err, size_t errlen)
{
	const char *k;
	json_t *v;
	int ret = 0;

	if (!json_is_object(root))
		return errf(err, errlen, "config: the top level must be a JSON object");
	json_object_foreach(root, k, v)
	{
		if (!strcmp(k, "tokens") || !strcmp(k, "api") || !strcmp(k, "limits") ||
		    !strcmp(k, "buffers") || !strcmp(k, "engine") || !strcmp(k, "port_pool") ||
		    !strcmp(k, "tls") || !strcmp(k, "console")) {
			ret = set_section(c, k, v, err, errlen);
		} else if (!strcmp(k, "listen")) {
			ret = get_string_list(v, k, &c->listen, &c->n_listen, err, errlen);
			c->_listen_set = true;
		} else if (!strcmp(k, "clusters")) {
			ret = set_clusters(c, v, err, errlen);
		} else if (!strcmp(k, "fleet")) {
			ret = set_fleet(c, v, err, errlen);
		} else if (!strcmp(k, "inline_upstreams")) {
			free_inline(c);
			c->inline_upstreams = rs_xcalloc(1, sizeof(*c->inline_upstreams));
			ret = set_cluster(c->inline_upstreams, "_inline", v, err, errlen, true);
		} else if (!strcmp(k, "tls_listen")) {
			ret = get_string_list(v, k, &c->tls_listen, &c->n_tls_listen, err, errlen);
		} else if (!strcmp(k, "trusted_proxies")) {
			ret = get_string_list(v, k, &c->trusted_proxies, &c->n_trusted_proxies, err,
					      errlen);
		} else if (!strcmp(k, "allowed_targets")) {
			ret = get_string_list(v, k, &c->allowed_targets, &c->n_allowed_targets, err,
					      errlen);
		} else if (!strcmp(k, "allowed_origins")) {
			ret = get_string_list(v, k, &c->allowed_origins, &c->n_allowed_origins, err,
					      errlen);
		} else if (!strcmp(k, "api_keys")) {
			ret = set_api_keys(c, v, err, errlen);
		} else if (!strcmp(k, "public_url") || !strcmp(k, "log_level") ||
			   !strcmp(k, "log_target") || !strcmp(k, "www_dir") ||
			   !strcmp(k, "state_dir") || !strcmp(k, "metrics_listen") ||
			   !strcmp(k, "metrics_token") || !strcmp(k, "audit_log") ||
			   !strcmp(k, "admin_socket") || !strcmp(k, "admin_socket_group") ||
			   !strcmp(k, "admin_socket_owner")) {
			ret = need_string(v, k, err, errlen);
			if (ret)
				break;
			set_str(!strcmp(k, "public_url")       ? &c->public_url
				: !strcmp(k, "log_level")      ? &c->log_level
				: !strcmp(k, "log_target")     ? &c->log_target
				: !strcmp(k, "www_dir")        ? &c->www_dir
				: !strcmp(k, "metrics_listen") ? &c->metrics_listen
				: !strcmp(k, "metrics_token")  ? &c->metrics_token
				: !strcmp(k, "audit_log")      ? &c->audit_log
				: !strcmp(k, "admin_socket")   ? &c->admin_socket
				: !strcmp(k, "admin_socket_group") ? &c->admin_socket_group
				: !strcmp(k, "admin_socket_owner") ? &c->admin_socket_owner
							       : &c->state_dir,
				json_string_value(v));
			if (!strcmp(k, "public_url"))
				c->_public_url_set = true;
		/* ProxmoxVNC's config.json keys, so its users can switch unchanged. */
		} else if (!strcmp(k, "authorization")) {
			ret = need_string(v, k, err, errlen);
			if (!ret)
				ret = check_key(k, json_string_value(v), err, errlen);
			if (!ret)
				add_key(c, "default", json_string_value(v));
		} else if (!strcmp(k, "logging_enabled")) {
			if (!json_is_boolean(v))
				ret = errf(err, errlen, "config: '%s': must be true or false", k);
			else if (json_is_false(v))
				set_str(&c->log_level, "error");
		} else if (!strcmp(k, "logging_level")) {
			ret = need_string(v, k, err, errlen);
			if (!ret)
				set_str(&c->log_level, json_string_value(v));
		} else if (!strcmp(k, "log_file")) {
			ret = need_string(v, k, err, errlen);
			if (!ret && json_string_length(v))
				set_str(&c->log_target, json_string_value(v));
		} else if (!strcmp(k, "novnc_path")) {
			/* ProxmoxVNC serves its own noVNC copy from here; ringside's pages are
			 * built in, so the path is accepted and not used. */
			ret = need_string(v, k, err, errlen);
		} else if (!strcmp(k, "public_ip")) {
			ret = need_string(v, k, err, errlen);
			if (!ret)
				set_str(&c->_pvnc_public_ip, json_string_value(v));
		} else if (!strcmp(k, "router_ip") || !strcmp(k, "router_port")) {
			/* resolved together below */
		} else {
			ret = set_uint(c, k, v, err, errlen);
			if (ret > 0)
				ret = errf(err, errlen, "config: '%s': unknown key", k);
		}
		if (ret)
			return ret;
	}
	v = json_object_get(root, "router_port");
	if (v || json_object_get(root, "router_ip")) {
		json_t *ip = json_object_get(root, "router_ip");
		char hp[300];
		json_int_t port = 8080;

		if (ip && !json_is_string(ip))
			return errf(err, errlen, "config: 'router_ip': must be a string");
		if (v && (!json_is_integer(v) || json_integer_value(v) < 1 ||
			  json_integer_value(v) > 65535))
			return errf(err, errlen,
				    "config: 'router_port': must be an integer between 1 and 65535");
		if (v)
			port = json_integer_value(v);
		snprintf(hp, sizeof(hp), strchr(ip ? json_string_value(ip) : "", ':') ? "[%s]:%d" : "%s:%d",
			 ip ? json_string_value(ip) : "127.0.0.1", (int)port);
		free_list(&c->listen, &c->n_listen);
		c->listen = rs_xcalloc(1, sizeof(char *));
		c->listen[0] = rs_xstrdup(hp);
		c->n_listen = 1;
		c->_pvnc_port = (unsigned)port;
	}
	return 0;
}

int rs_config_load_string(struct rs_config *c, const char *json, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
	int ret;

	if (!root)
		return errf(err, errlen, "config: invalid JSON at line %d, column %d: %s", je.line,
			    je.column, je.text);
	ret = apply(c, root, err, errlen);
	json_decref(root);
	return ret;
}

int rs_config_load_file(struct rs_config *c, const char *path, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	int ret;

	if (!root) {
		if (je.line < 0)
			return errf(err, errlen, "config: cannot read '%s': %s", path, je.text);
		return errf(err, errlen, "config: '%s': invalid JSON at line %d, column %d: %s",
			    path, je.line, je.column, je.text);
	}
	ret = apply(c, root, err, errlen);
	json_decref(root);
	if (!ret)
		set_str(&c->config_path, path);
	return ret;
}

/* An origin exactly as a browser serialises it: scheme "://" host
 * [":" port], no path, no trailing slash, no wildcard — the CSP source and
 * the postMessage target must match the parent page's origin byte for byte. */
static bool valid_origin(const char *o)
{
	const char *h;
	size_t n;

	if (!strncmp(o, "https://", 8))
		h = o + 8;
	else if (!strncmp(o, "http://", 7))
		h = o + 7;
	else
		return false;
	if (*h == '[') { /* IPv6 literal */
		n = strspn(h + 1, "0123456789abcdefABCDEF:.");
		if (!n || h[1 + n] != ']')
			return false;
		h += n + 2;
	} else {
		n = strspn(h, "abcdefghijklmnopqrstuvwxyz0123456789.-");
		if (!n || h[0] == '.' || h[0] == '-' || h[n - 1] == '.')
			return false;
		h += n;
	}
	if (*h == ':') {
		char *end;
		unsigned long port;

		if (h[1] < '1' || h[1] > '9')
			return false;
		port = strtoul(h + 1, &end, 10);
		if (*end || port > 65535)
			return false;
		return true;
	}
	return *h == 0;
}

/* Text that ends up in a page attribute: printable, no control bytes. */
static bool plain_text(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

static int check_console(struct rs_config *c, char *err, size_t errlen)
{
	struct stat st;

	/* The list goes into one response header (a 2 KiB head). */
	if (c->n_console_frame_ancestors > 10)
		return errf(err, errlen, "config: 'console.frame_ancestors': at most 10 origins");
	for (size_t i = 0; i < c->n_console_frame_ancestors; i++)
		if (strlen(c->console_frame_ancestors[i]) > 100 ||
		    !valid_origin(c->console_frame_ancestors[i]))
			return errf(err, errlen,
				    "config: 'console.frame_ancestors[%zu]': '%s' is not an origin "
				    "scheme://host[:port] (lower-case, no path, e.g. "
				    "https://panel.example.com)",
				    i, c->console_frame_ancestors[i]);
	if (c->console_title && (!*c->console_title || !plain_text(c->console_title, 100)))
		return errf(err, errlen,
			    "config: 'console.title': must be 1 to 100 characters without control "
			    "characters");
	if (c->console_accent) {
		const char *a = c->console_accent;

		if (strlen(a) != 7 || a[0] != '#' || strspn(a + 1, "0123456789abcdefABCDEF") != 6)
			return errf(
			    err, errlen,
			    "config: 'console.accent_colour': must be #rrggbb (e.g. #2f6fd6)");
	}
	if (strcmp(c->console_language, "en") && strcmp(c->console_language, "de") &&
	    strcmp(c->console_language, "auto"))
		return errf(err, errlen,
			    "config: 'console.language': must be \"en\", \"de\" or \"auto\" (the "
			    "browser's Accept-Language)");
	if (c->console_support_url &&
	    ((strncmp(c->console_support_url, "https://", 8) &&
	      strncmp(c->console_support_url, "http://", 7)) ||
	     !plain_text(c->console_support_url, 1000) || strchr(c->console_support_url, ' ')))
		return errf(err, errlen,
			    "config: 'console.support_url': must be an http:// or https:// URL "
			    "without spaces (at most 1000 characters)");
	if (c->console_logo) {
		if (!rs_console_logo_type(c->console_logo))
			return errf(err, errlen,
				    "config: 'console.logo': '%s' must end in .png, .svg, .jpg, "
				    ".jpeg, .webp or .gif",
				    c->console_logo);
		if (stat(c->console_logo, &st) || !S_ISREG(st.st_mode))
			return errf(err, errlen, "config: 'console.logo': cannot read '%s'",
				    c->console_logo);
		if (st.st_size > RS_CONSOLE_LOGO_MAX)
			return errf(err, errlen,
				    "config: 'console.logo': '%s' is larger than %d KiB",
				    c->console_logo, RS_CONSOLE_LOGO_MAX / 1024);
	}
	return 0;
}

const char *rs_console_logo_type(const char *path)
{
	static const char *const types[][2] = {
	    {".png", "image/png"},   {".svg", "image/svg+xml"}, {".jpg", "image/jpeg"},
	    {".jpeg", "image/jpeg"}, {".webp", "image/webp"},	{".gif", "image/gif"},
	};
	const char *dot = strrchr(path, '.');

	for (size_t i = 0; dot && i < RS_ARRAY_SIZE(types); i++)
		if (!strcasecmp(dot, types[i][0]))
			return types[i][1];
	return NULL;
}

int rs_config_validate(struct rs_config *c, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	static const char *const levels[] = {"debug", "info", "warn", "warning", "error"};
	bool level_ok = false;
	int ret;

	if (!c->n_listen && !c->n_tls_listen)
		return errf(err, errlen,
			    "config: 'listen': needs at least one address (or one in 'tls_listen')");
	ret = validate_fleet(&c->fleet, err, errlen);
	if (ret)
		return ret;
	for (size_t i = 0; i < c->n_listen; i++)
		if (rs_parse_hostport(c->listen[i], &ss, &len))
			return errf(err, errlen,
				    "config: 'listen[%zu]': '%s' is not host:port with a numeric "
				    "address (e.g. 127.0.0.1:8080 or [::1]:8080)",
				    i, c->listen[i]);
	for (size_t i = 0; i < c->n_tls_listen; i++)
		if (rs_parse_hostport(c->tls_listen[i], &ss, &len))
			return errf(err, errlen,
				    "config: 'tls_listen[%zu]': '%s' is not host:port with a numeric "
				    "address (e.g. 0.0.0.0:8443 or [::]:443)",
				    i, c->tls_listen[i]);
	for (size_t i = 0; i < c->n_trusted_proxies; i++) {
		struct rs_cidr cidr;

		if (rs_parse_cidr(c->trusted_proxies[i], &cidr))
			return errf(err, errlen,
				    "config: 'trusted_proxies[%zu]': '%s' is not an address or CIDR "
				    "range (e.g. 10.0.0.0/8)",
				    i, c->trusted_proxies[i]);
	}
	if (*c->metrics_listen && rs_parse_hostport(c->metrics_listen, &ss, &len))
		return errf(err, errlen,
			    "config: 'metrics_listen': '%s' is not host:port with a numeric address "
			    "(\"\" disables metrics)",
			    c->metrics_listen);
	if (c->metrics_token) {
		ret = check_key("metrics_token", c->metrics_token, err, errlen);
		if (ret)
			return ret;
	}
	for (size_t i = 0; i < RS_ARRAY_SIZE(levels); i++)
		level_ok |= !strcasecmp(c->log_level, levels[i]);
	if (!level_ok)
		return errf(err, errlen,
			    "config: 'log_level': must be one of debug, info, warn, error");
	ret = check_source_addresses("port_pool.source_addresses", c->source_addresses,
				     c->n_source_addresses, err, errlen);
	if (ret)
		return ret;
	ret = check_cidrs("allowed_targets", c->allowed_targets, c->n_allowed_targets, err,
			  errlen);
	if (ret)
		return ret;
	for (size_t i = 0; i < c->n_api_keys; i++) {
		const struct rs_api_key *k = &c->api_keys[i];

		for (size_t j = 0; j < k->n_clusters; j++)
			if (!rs_config_cluster(c, k->clusters[j]))
				return errf(err, errlen,
					    "config: 'api_keys[%zu].clusters[%zu]': '%s' is not a "
					    "configured cluster",
					    i, j, k->clusters[j]);
		if (k->max_ttl_s > c->token_max_ttl_s)
			return errf(err, errlen,
				    "config: 'api_keys[%zu].max_ttl_s': %u exceeds tokens.max_ttl_s "
				    "(%u), which bounds every key",
				    i, k->max_ttl_s, c->token_max_ttl_s);
	}
	ret = check_console(c, err, errlen);
	if (ret)
		return ret;
	if (c->port_min > c->port_max)
		return errf(err, errlen, "config: 'port_pool.port_min': must not exceed port_max");
	if (c->token_ttl_s > c->token_max_ttl_s)
		return errf(err, errlen, "config: 'tokens.ttl_s': must not exceed tokens.max_ttl_s");
	if (c->ws_max_frame > c->ws_max_message)
		return errf(err, errlen,
			    "config: 'limits.ws_max_frame': must not exceed limits.ws_max_message");
	if (c->public_url) {
		size_t n = strlen(c->public_url);

		if (strncmp(c->public_url, "http://", 7) && strncmp(c->public_url, "https://", 8))
			return errf(err, errlen,
				    "config: 'public_url': must start with http:// or https://");
		while (n && c->public_url[n - 1] == '/')
			c->public_url[--n] = 0;
	} else {
		char url[300];

		if (c->_pvnc_public_ip)
			snprintf(url, sizeof(url), "http://%s:%u", c->_pvnc_public_ip,
				 c->_pvnc_port ? c->_pvnc_port : 8080);
		else if (c->n_tls_listen)
			snprintf(url, sizeof(url), "https://%s", c->tls_listen[0]);
		else
			snprintf(url, sizeof(url), "http://%s", c->listen[0]);
		set_str(&c->public_url, url);
	}
	return 0;
}

void rs_cli_usage(FILE *out)
{
	fputs("usage: ringside [options]\n"
	      "  -config FILE, --config FILE  JSON configuration (ProxmoxVNC's config.json works)\n"
	      "  -port N, --port N            override the port of every listen address\n"
	      "  --listen HOST:PORT           override the listen address\n"
	      "  --workers N                  worker threads (default: one per CPU)\n"
	      "  --log-level LEVEL            debug, info, warn or error\n"
	      "  --check-config               validate the configuration and exit\n"
	      "  --version                    print the version and exit\n"
	      "  -h, --help                   this help\n",
	      out);
}

int rs_cli_parse(int argc, char **argv, struct rs_cli *cli, char *err, size_t errlen)
{
	memset(cli, 0, sizeof(*cli));
	cli->port = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL, *eq;
		char name[64];

		if (a[0] != '-')
			return errf(err, errlen, "unexpected argument '%s'", a);
		a += a[1] == '-' ? 2 : 1; /* Go-style single dash accepted, like ProxmoxVNC */
		eq = strchr(a, '=');
		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
		if (eq)
			val = eq + 1;
		if (!strcmp(name, "h") || !strcmp(name, "help")) {
			cli->help = true;
			continue;
		}
		if (!strcmp(name, "version")) {
			cli->version = true;
			continue;
		}
		if (!strcmp(name, "check-config")) {
			cli->check_config = true;
			continue;
		}
		if (strcmp(name, "config") && strcmp(name, "port") && strcmp(name, "workers") &&
		    strcmp(name, "listen") && strcmp(name, "log-level"))
			return errf(err, errlen, "unknown option '%s'", argv[i]);
		if (!val) {
			if (i + 1 >= argc)
				return errf(err, errlen, "option '%s' needs a value", argv[i]);
			val = argv[++i];
		}
		if (!strcmp(name, "config")) {
			cli->config_path = val;
		} else if (!strcmp(name, "listen")) {
			cli->listen = val;
		} else if (!strcmp(name, "log-level")) {
			cli->log_level = val;
		} else {
			char *end;
			long n;

			errno = 0;
			n = strtol(val, &end, 10);
			if (!*val || *end || errno || n < (strcmp(name, "port") ? 0 : 1) ||
			    n > (strcmp(name, "port") ? 256 : 65535))
				return errf(err, errlen, "option '--%s': invalid value '%s'", name, val);
			if (!strcmp(name, "port"))
				cli->port = (int)n;
			else {
				cli->workers = (unsigned)n;
				cli->workers_set = true;
			}
		}
	}
	return 0;
}

int rs_config_apply_cli(struct rs_config *c, const struct rs_cli *cli, char *err, size_t errlen)
{
	if (cli->listen) {
		free_list(&c->listen, &c->n_listen);
		c->listen = rs_xcalloc(1, sizeof(char *));
		c->listen[0] = rs_xstrdup(cli->listen);
		c->n_listen = 1;
	}
	if (cli->port >= 0) {
		for (size_t i = 0; i < c->n_listen; i++) {
			char *colon = strrchr(c->listen[i], ':');
			char buf[300];

			if (!colon)
				return errf(err, errlen, "config: 'listen[%zu]': no port to override", i);
			snprintf(buf, sizeof(buf), "%.*s:%d", (int)(colon - c->listen[i]),
				 c->listen[i], cli->port);
			set_str(&c->listen[i], buf);
		}
		if (c->_pvnc_port)
			c->_pvnc_port = (unsigned)cli->port;
	}
	if (cli->workers_set)
		c->workers = cli->workers;
	if (cli->log_level)
		set_str(&c->log_level, cli->log_level);
	return 0;
}
