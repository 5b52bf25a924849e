/* core/config.h — configuration: embedded defaults, a JSON file (jansson),
 * ProxmoxVNC's config.json keys, and command-line overrides.
 *
 * Every invalid value is reported as "'<key>': <reason>" and the daemon
 * refuses to start. Unknown keys are errors (typo protection), except the
 * ProxmoxVNC keys, which are mapped. Strings are owned by the struct and freed
 * by rs_config_release(); API keys are wiped first.
 */
#ifndef RS_CONFIG_H
#define RS_CONFIG_H

#include "core/common.h"

#include <sys/socket.h>

struct rs_api_key {
	char *name;
	char *key;
	/* Per-key limits; unset: the api.*_per_key defaults. 0: unlimited. */
	unsigned max_pending, max_consoles;
	bool max_pending_set, max_consoles_set;
	bool admin; /* ProxmoxVNC's /status shows every key's consoles */
	/* CIDRs this key's plain targets and inline hosts must fall in; when set
	 * (allowed_targets_set) they replace the global 'allowed_targets'. */
	char **allowed_targets;
	size_t n_allowed_targets;
	bool allowed_targets_set;
	/* Scope: what this key may open (all optional; unset: anything the
	 * appliance allows). A request outside it is refused with 403
	 * out_of_scope naming the field. <clusters>: Proxmox consoles only on
	 * these configured clusters (inline Proxmox hosts refused);
	 * <kinds>: bit (1u << enum rs_console_kind), 0: every kind;
	 * <max_ttl_s>: 0: token.max_ttl_s; <view_only_only>: view-only links only. */
	char **clusters;
	size_t n_clusters;
	bool clusters_set;
	unsigned kinds;
	unsigned max_ttl_s;
	bool view_only_only;
};

/* A Proxmox VE cluster ringside opens consoles on. Secrets are wiped on release. */
struct rs_cluster_conf {
	char *name;
	char **endpoints; /* "host:port", tried in order (failover) */
	size_t n_endpoints;
	char *token;              /* API token "user@realm!id=secret" (recommended), or */
	char *user, *password;    /* a login (tickets cached and renewed) */
	char *ca_file;            /* verification: the cluster CA, or */
	char **fingerprints;      /* SHA-256 pins of the node certificates, or */
	size_t n_fingerprints;
	bool system_ca;           /* the system store, or */
	bool insecure;            /* nothing (explicit) */
	char **source_addresses;  /* local addresses for this cluster's connections */
	size_t n_source_addresses;
};

/* The `fleet` section: links shared by several boxes through Redis (absent:
 * the embedded token table). The password is wiped on release. */
struct rs_fleet_conf {
	bool enabled;   /* the section is present */
	char *node;     /* this box's name in the fleet (default: the host name) */
	char *address;  /* redis.address "host:port" (numeric), or sentinels below */
	char *username, *password;
	unsigned db;
	bool tls, tls_insecure;
	char *tls_ca_file;
	char *key_prefix; /* "rs:" */
	unsigned timeout_ms, connect_timeout_ms, max_pending;
	unsigned consume_replicas, consume_wait_ms;
	char **sentinels; /* sentinel.addresses */
	size_t n_sentinels;
	char *master;     /* sentinel.master */
};

struct rs_config {
	char **listen; /* "host:port" entries */
	size_t n_listen;
	char **tls_listen; /* "host:port" entries served over TLS */
	size_t n_tls_listen;
	struct rs_tls_cert_conf {
		char *cert, *key; /* PEM paths */
	} *tls_certs;
	size_t n_tls_certs;     /* 0: self-signed certificate in state_dir */
	unsigned tls_ticket_rotation_s;
	char **trusted_proxies; /* CIDRs whose X-Forwarded-For is believed */
	size_t n_trusted_proxies;
	struct rs_cluster_conf *clusters;
	size_t n_clusters;
	/* Verification for Proxmox hosts given inline (ProxmoxVNC's /create);
	 * NULL: inline details are refused. Only its TLS fields are used. */
	struct rs_cluster_conf *inline_upstreams;
	char *public_url; /* base of console links, no trailing slash */
	unsigned workers; /* 0: one per online CPU */
	char *log_level;
	char *log_target;
	struct rs_api_key *api_keys;
	size_t n_api_keys;
	/* CIDRs plain VNC targets and inline Proxmox hosts must fall in (see
	 * rs_addr_allowed); empty: no such console may be issued. Configured
	 * clusters are the operator's and are not checked. */
	char **allowed_targets;
	size_t n_allowed_targets;
	char **allowed_origins; /* empty: any origin */
	size_t n_allowed_origins;
	char *www_dir; /* serve pages from here instead of the embedded copy */
	/* console.*: the page as customers meet it (README "The console page").
	 * frame_ancestors: origins "scheme://host[:port]" that may frame the page
	 * (and exchange postMessage with it); empty: no framing. */
	char **console_frame_ancestors;
	size_t n_console_frame_ancestors;
	char *console_title;	   /* NULL: the built-in "Console"/"Terminal" */
	char *console_logo;	   /* file path, read once at start; NULL: none */
	char *console_accent;	   /* "#rrggbb"; NULL: the built-in colour */
	char *console_language;	   /* "en", "de" or "auto" (Accept-Language) */
	char *console_support_url; /* http(s) link on error screens; NULL: none */
	char *metrics_listen; /* Prometheus listener "host:port"; "" disables */
	char *audit_log;      /* file path, "syslog", or "" for none */
	char *admin_socket;   /* Unix socket path, "" for none */
	char *admin_socket_owner, *admin_socket_group;
	unsigned admin_socket_mode;
	char *metrics_token;  /* optional bearer token for /metrics; wiped on release */
	char *state_dir;
	unsigned token_capacity, token_ttl_s, token_max_ttl_s;
	bool token_bind_ip;
	unsigned api_rate_per_s, api_rate_burst;
	unsigned api_max_pending_per_key, api_max_consoles_per_key; /* 0: unlimited */
	unsigned api_auth_fail_limit, api_auth_fail_window_s; /* 0: no throttling */
	unsigned max_request_line, max_header_bytes, max_headers, max_body;
	unsigned header_timeout_ms, keepalive_timeout_ms;
	unsigned ws_max_frame, ws_max_message;
	unsigned rfb_max_cut_text, rfb_max_encodings; /* browser→target RFB messages */
	unsigned session_buffer_bytes;
	unsigned connect_timeout_ms, handshake_timeout_ms, session_idle_timeout_s;
	/* A console whose browser leg dropped waits this long for the same
	 * browser (its resume secret) to take it up again; 0: not resumable. */
	unsigned resume_grace_s;
	/* Proxmox: from the vncwebsocket request to its 101 (pveproxy never
	 * answers when its connect to the console port fails). */
	unsigned upstream_upgrade_timeout_ms;
	unsigned max_conns;
	unsigned max_conns_per_client; /* 0: half of a worker's max_conns */
	unsigned buf_size, buf_count;
	unsigned ring_entries, socket_sndbuf, socket_rcvbuf; /* engine.* */
	bool pin_workers;				     /* engine.pin_workers */
	char **source_addresses;
	size_t n_source_addresses;
	unsigned port_min, port_max;
	unsigned drain_timeout_s;
	struct rs_fleet_conf fleet;
	char *config_path;
	/* ProxmoxVNC compatibility, resolved by rs_config_validate(). */
	char *_pvnc_public_ip;
	unsigned _pvnc_port;
	bool _listen_set, _public_url_set;
};

struct rs_cli {
	const char *config_path;
	int port; /* -1: unset */
	unsigned workers;
	bool workers_set, check_config, help, version;
	const char *log_level;
	const char *listen;
};

/* Embedded defaults: ringside runs on 127.0.0.1:8080 with no file at all. */
void rs_config_init(struct rs_config *c);

/* Merge a JSON file / string over <c>. 0 or -EINVAL with <err> filled. */
int rs_config_load_file(struct rs_config *c, const char *path, char *err, size_t errlen);
int rs_config_load_string(struct rs_config *c, const char *json, char *err, size_t errlen);

/* Cross-field checks and derived defaults (public_url). 0 or -EINVAL. */
int rs_config_validate(struct rs_config *c, char *err, size_t errlen);

/* Free the contents (API keys wiped); <c> may be initialised again. */
void rs_config_release(struct rs_config *c);

int rs_cli_parse(int argc, char **argv, struct rs_cli *cli, char *err, size_t errlen);
int rs_config_apply_cli(struct rs_config *c, const struct rs_cli *cli, char *err, size_t errlen);
void rs_cli_usage(FILE *out);

/* console.logo: at most this many bytes; its Content-Type from the file
 * name's extension, NULL when not an image type the page may show. */
#define RS_CONSOLE_LOGO_MAX (256 * 1024)
const char *rs_console_logo_type(const char *path);

/* The cluster named <name>, or NULL. */
const struct rs_cluster_conf *rs_config_cluster(const struct rs_config *c, const char *name);

/* Parse "1.2.3.4:80", "[::1]:80" or "localhost:80". 0 or -EINVAL. */
int rs_parse_hostport(const char *s, struct sockaddr_storage *out, socklen_t *len);

#endif
