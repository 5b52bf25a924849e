#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>
#include <unistd.h>

#include "core/addr.h"
#include "core/config.h"

static char err[512];

static int load(struct rs_config *c, const char *json)
{
	rs_config_init(c);
	if (rs_config_load_string(c, json, err, sizeof(err)))
		return -1;
	return rs_config_validate(c, err, sizeof(err));
}

static void test_defaults(void **st)
{
	struct rs_config c;

	(void)st;
	rs_config_init(&c);
	assert_int_equal(rs_config_validate(&c, err, sizeof(err)), 0);
	assert_string_equal(c.listen[0], "127.0.0.1:8080");
	assert_string_equal(c.public_url, "http://127.0.0.1:8080");
	assert_int_equal(c.token_ttl_s, 60);
	assert_int_equal(c.max_body, 65536);
	assert_int_equal(c.buf_size, 16384);
	assert_int_equal(c.resume_grace_s, 30);
	rs_config_release(&c);
	assert_int_equal(load(&c, "{\"console\": {\"resume_grace_s\": 0}}"), 0);
	assert_int_equal(c.resume_grace_s, 0); /* consoles are not resumable */
	rs_config_release(&c);
	/* Workers float unless pinned on purpose (a shared box's tail latency). */
	rs_config_init(&c);
	assert_false(c.pin_workers);
	rs_config_release(&c);
	assert_int_equal(load(&c, "{\"engine\": {\"pin_workers\": true}}"), 0);
	assert_true(c.pin_workers);
	rs_config_release(&c);
}

static void expect_error(const char *json, const char *needle)
{
	struct rs_config c;

	assert_int_not_equal(load(&c, json), 0);
	if (!strstr(err, needle))
		fail_msg("error '%s' does not mention '%s'", err, needle);
	rs_config_release(&c);
}

static void test_every_bad_value_names_its_key(void **st)
{
	(void)st;
	expect_error("{\"limits\": {\"max_body\": -1}}", "'limits.max_body'");
	expect_error("{\"limits\": {\"max_body\": \"big\"}}", "'limits.max_body': must be an integer");
	expect_error("{\"listne\": []}", "'listne': unknown key");
	expect_error("{\"limits\": {\"nope\": 1}}", "'limits.nope': unknown key");
	expect_error("{\"buffers\": {\"count\": 1000}}", "power of two");
	expect_error("{\"listen\": [\"nowhere\"]}", "'listen[0]'");
	expect_error("{\"listen\": \"127.0.0.1:1\"}", "'listen': must be an array");
	expect_error("{\"log_level\": \"loud\"}", "'log_level'");
	expect_error("{\"public_url\": \"ftp://x\"}", "'public_url'");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"short\"}]}", "'api_keys[0].key'");
	expect_error("{\"api_keys\": [{\"name\": \"a b\", \"key\": \"0123456789abcdef\"}]}",
		     "'api_keys[0].name'");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\"},"
		     "{\"name\": \"a\", \"key\": \"0123456789abcdeg\"}]}",
		     "duplicate");
	expect_error("{\"tokens\": {\"ttl_s\": 100, \"max_ttl_s\": 50}}", "'tokens.ttl_s'");
	expect_error("{\"port_pool\": {\"source_addresses\": [\"host\"]}}",
		     "'port_pool.source_addresses[0]'");
	expect_error("{\"workers\": 1000}", "'workers'");
	expect_error("{\"console\": {\"resume_grace_s\": 3601}}", "'console.resume_grace_s'");
	expect_error("{\"console\": {\"resume_grace\": 5}}", "'console.resume_grace': unknown key");
	expect_error("{\"router_port\": 70000}", "'router_port'");
	expect_error("{\"engine\": {\"pin_workers\": 1}}", "'engine.pin_workers': must be true");
	expect_error("[1]", "top level");
	expect_error("{\"a\": 1, \"a\": 2}", "invalid JSON");
	expect_error("{\n  \"listen\": [\n", "line");
}

static void test_tls_and_proxies(void **st)
{
	struct rs_config c;

	(void)st;
	assert_int_equal(load(&c, "{\"tls_listen\": [\"127.0.0.1:8443\"], \"listen\": [],"
				  "\"tls\": {\"certificates\": [{\"cert\": \"a.pem\", \"key\": \"a.key\"}],"
				  "\"ticket_key_rotation_s\": 600},"
				  "\"trusted_proxies\": [\"10.0.0.0/8\", \"::1\"]}"),
			 0);
	assert_string_equal(c.public_url, "https://127.0.0.1:8443");
	assert_int_equal(c.n_tls_certs, 1);
	assert_string_equal(c.tls_certs[0].key, "a.key");
	assert_int_equal(c.tls_ticket_rotation_s, 600);
	assert_int_equal(c.n_trusted_proxies, 2);
	rs_config_release(&c);
	expect_error("{\"listen\": []}", "'listen': needs at least one address");
	expect_error("{\"tls_listen\": [\"x\"]}", "'tls_listen[0]'");
	expect_error("{\"tls\": {\"certificates\": [{\"cert\": \"a\"}]}}",
		     "'tls.certificates[0]'");
	expect_error("{\"tls\": {\"ticket_key_rotation_s\": -1}}", "'tls.ticket_key_rotation_s'");
	expect_error("{\"trusted_proxies\": [\"10.0.0.0/33\"]}", "'trusted_proxies[0]'");
	expect_error("{\"trusted_proxies\": [\"lb.example\"]}", "'trusted_proxies[0]'");
}

static void test_clusters(void **st)
{
	struct rs_config c;
	const struct rs_cluster_conf *k;

	(void)st;
	assert_int_equal(load(&c, "{\"clusters\": {\"fra1\": {\"endpoints\": [\"10.0.0.5:8006\","
				  "\"pve2.example:8006\"], \"token\": \"root@pam!ringside=abc-123\","
				  "\"ca_file\": \"/etc/pve-ca.pem\"}, \"ams\": {\"endpoints\": "
				  "[\"[fd00::1]:8006\"], \"user\": \"relay@pve\", \"password\": \"pw\","
				  "\"fingerprints\": [\"AB:CD\"]}}}"),
			 0);
	k = rs_config_cluster(&c, "fra1");
	assert_non_null(k);
	assert_int_equal(k->n_endpoints, 2);
	assert_string_equal(k->token, "root@pam!ringside=abc-123");
	k = rs_config_cluster(&c, "ams");
	assert_non_null(k);
	assert_string_equal(k->user, "relay@pve");
	assert_null(rs_config_cluster(&c, "nope"));
	rs_config_release(&c);
	expect_error("{\"clusters\": {\"a\": {\"token\": \"u@pam!t=s\", \"verify\": \"system\"}}}",
		     "'clusters.a.endpoints'");
	expect_error("{\"clusters\": {\"a\": {\"endpoints\": [\"h\"], \"token\": \"u@pam!t=s\","
		     "\"verify\": \"system\"}}}",
		     "'clusters.a.endpoints[0]'");
	expect_error("{\"clusters\": {\"a\": {\"endpoints\": [\"h:1\"], \"verify\": \"system\"}}}",
		     "either 'token'");
	expect_error("{\"clusters\": {\"a\": {\"endpoints\": [\"h:1\"], \"token\": \"nobang=s\","
		     "\"verify\": \"system\"}}}",
		     "'clusters.a.token'");
	expect_error("{\"clusters\": {\"a\": {\"endpoints\": [\"h:1\"], \"token\": \"u@pam!t=s\"}}}",
		     "say how to verify");
	expect_error("{\"clusters\": {\"a\": {\"endpoints\": [\"h:1\"], \"token\": \"u@pam!t=s\","
		     "\"verify\": \"maybe\"}}}",
		     "'clusters.a.verify'");
	expect_error("{\"clusters\": {\"a\": {\"endpoints\": [\"h:1\"], \"user\": \"relay\","
		     "\"password\": \"x\", \"verify\": \"system\"}}}",
		     "user@realm");
	expect_error("{\"clusters\": {\"a b\": {}}}", "name 'a b'");
	expect_error("{\"clusters\": {\"a\": {\"endpoints\": [\"h:1\"], \"tokn\": 1}}}",
		     "'clusters.a.tokn': unknown key");
	/* A secret is never echoed in an error. */
	assert_int_not_equal(load(&c, "{\"clusters\": {\"a\": {\"endpoints\": [\"h:1\"], "
				      "\"token\": \"u@pam!t=topsecret\"}}}"),
			     0);
	assert_null(strstr(err, "topsecret"));
	rs_config_release(&c);
}

/* Item 17: placeholder and short keys are refused with a message saying how
 * to make a real one; ProxmoxVNC's 'authorization' needs 16 characters too. */
static void test_weak_keys_refused(void **st)
{
	(void)st;
	expect_error("{\"api_keys\": [{\"name\": \"panel\", \"key\": "
		     "\"change-me-to-a-long-random-string\"}]}",
		     "'api_keys[0].key': looks like a placeholder");
	expect_error("{\"api_keys\": [{\"name\": \"panel\", \"key\": \"CHANGEME0123456789\"}]}",
		     "openssl rand -base64 24");
	expect_error("{\"api_keys\": [{\"name\": \"p\", \"key\": \"SecretSecret-Secret!\"}]}",
		     "placeholder (secret)");
	expect_error("{\"api_keys\": [{\"name\": \"p\", \"key\": \"xxxxxxxxxxxxxxxxxxxx\"}]}",
		     "placeholder (one character repeated)");
	expect_error("{\"api_keys\": [{\"name\": \"p\", \"key\": \"examplekeyexamplekey\"}]}",
		     "placeholder");
	expect_error("{\"api_keys\": [{\"name\": \"p\", \"key\": \"Password1234567890\"}]}",
		     "placeholder");
	expect_error("{\"api_keys\": [{\"name\": \"p\", \"key\": \"short\"}]}",
		     "at least 16 characters (generate one with: openssl rand -base64 24)");
	expect_error("{\"authorization\": \"12345678\"}",
		     "'authorization': must be at least 16 characters");
	expect_error("{\"authorization\": \"changeme-changeme-changeme\"}",
		     "'authorization': looks like a placeholder");
	expect_error("{\"metrics_token\": \"replace-me-with-a-token\"}",
		     "'metrics_token': looks like a placeholder");
	expect_error("{\"metrics_token\": \"short\"}", "'metrics_token': must be at least 16");
}

/* Item 11 and 12's keys, and item 18's duplicate source addresses. */
static void test_key_limits_targets_and_sources(void **st)
{
	struct rs_config c;

	(void)st;
	assert_int_equal(load(&c, "{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
				  "\"max_pending\": 5, \"max_consoles\": 0, \"admin\": true,"
				  "\"allowed_targets\": [\"10.0.0.0/8\", \"::1\"]},"
				  "{\"name\": \"b\", \"key\": \"0123456789abcdeg\"}],"
				  "\"allowed_targets\": [\"127.0.0.0/8\"],"
				  "\"api\": {\"max_pending_per_key\": 7, \"max_consoles_per_key\": 3}}"),
			 0);
	assert_true(c.api_keys[0].max_pending_set);
	assert_int_equal(c.api_keys[0].max_pending, 5);
	assert_true(c.api_keys[0].max_consoles_set);
	assert_true(c.api_keys[0].admin);
	assert_int_equal(c.api_keys[0].n_allowed_targets, 2);
	assert_false(c.api_keys[1].max_pending_set);
	assert_false(c.api_keys[1].allowed_targets_set);
	assert_false(c.api_keys[1].admin);
	assert_int_equal(c.n_allowed_targets, 1);
	assert_int_equal(c.api_max_pending_per_key, 7);
	assert_int_equal(c.api_max_consoles_per_key, 3);
	rs_config_release(&c);
	assert_int_equal(load(&c, "{}"), 0);
	assert_int_equal(c.n_allowed_targets, 0); /* secure default: nothing */
	assert_int_equal(c.api_max_pending_per_key, 10000);
	rs_config_release(&c);
	expect_error("{\"allowed_targets\": [\"10.0.0.0/33\"]}", "'allowed_targets[0]'");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"allowed_targets\": [\"x\"]}]}",
		     "'api_keys[0].allowed_targets[0]'");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"max_pending\": -1}]}",
		     "'api_keys[0].max_pending'");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"admin\": 1}]}",
		     "'api_keys[0].admin'");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"colour\": 1}]}",
		     "'api_keys[0].colour': unknown key");
	expect_error("{\"port_pool\": {\"source_addresses\": [\"127.0.0.2\", \"127.0.0.3\","
		     "\"127.0.0.2\"]}}",
		     "'port_pool.source_addresses[2]': '127.0.0.2' is listed twice");
	expect_error("{\"port_pool\": {\"source_addresses\": [\"::1\", \"0:0::1\"]}}",
		     "listed twice");
	expect_error("{\"clusters\": {\"c\": {\"endpoints\": [\"10.0.0.5:8006\"], \"verify\":"
		     "\"insecure\", \"token\": \"a@pam!b=c\", \"source_addresses\":"
		     "[\"10.0.0.1\", \"10.0.0.1\"]}}}",
		     "'clusters.c.source_addresses[1]'");
}

/* Scoped keys (issue 17): clusters, kinds, max_ttl_s, view_only_only. */
static void test_key_scope(void **st)
{
	static const char cl[] = "\"clusters\": {\"fra1\": {\"endpoints\": [\"10.0.0.5:8006\"],"
				 "\"verify\": \"insecure\", \"token\": \"a@pam!b=c\"}},";
	char json[1024];
	struct rs_config c;

	(void)st;
	snprintf(json, sizeof(json),
		 "{%s\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		 "\"clusters\": [\"fra1\"], \"kinds\": [\"pve-term\", \"vnc\"],"
		 "\"max_ttl_s\": 120, \"view_only_only\": true},"
		 "{\"name\": \"b\", \"key\": \"0123456789abcdeg\"}]}",
		 cl);
	assert_int_equal(load(&c, json), 0);
	assert_true(c.api_keys[0].clusters_set);
	assert_int_equal(c.api_keys[0].n_clusters, 1);
	assert_string_equal(c.api_keys[0].clusters[0], "fra1");
	assert_int_equal(c.api_keys[0].kinds, (1u << 2) | (1u << 0)); /* enum rs_console_kind */
	assert_int_equal(c.api_keys[0].max_ttl_s, 120);
	assert_true(c.api_keys[0].view_only_only);
	assert_false(c.api_keys[1].clusters_set);
	assert_int_equal(c.api_keys[1].kinds, 0);
	assert_int_equal(c.api_keys[1].max_ttl_s, 0);
	assert_false(c.api_keys[1].view_only_only);
	rs_config_release(&c);
	/* A cluster named before "clusters" in the file is still checked. */
	snprintf(json, sizeof(json),
		 "{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		 "\"clusters\": [\"ams1\"]}], %s \"workers\": 1}",
		 cl);
	expect_error(json, "'api_keys[0].clusters[0]': 'ams1' is not a configured cluster");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"kinds\": [\"vnc\", 3]}]}",
		     "'api_keys[0].kinds[1]'");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"kinds\": \"vnc\"}]}",
		     "'api_keys[0].kinds': must be a non-empty list");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"max_ttl_s\": 4000}]}",
		     "'api_keys[0].max_ttl_s': 4000 exceeds tokens.max_ttl_s (3600)");
	expect_error("{\"api_keys\": [{\"name\": \"a\", \"key\": \"0123456789abcdef\","
		     "\"view_only_only\": 1}]}",
		     "'api_keys[0].view_only_only': must be true or false");
}

static bool allowed(const char *const *list, size_t n, const char *ip)
{
	struct rs_cidr c[8];
	struct sockaddr_storage ss;

	for (size_t i = 0; i < n; i++)
		assert_int_equal(rs_parse_cidr(list[i], &c[i]), 0);
	assert_int_equal(rs_parse_ip(ip, strlen(ip), &ss), 0);
	return rs_addr_allowed(c, n, (struct sockaddr *)&ss);
}

/* Item 12: targets inside the list pass; unspecified, broadcast, multicast
 * and link-local addresses pass only when listed explicitly. */
static void test_allowed_targets(void **st)
{
	static const char *const lan[] = {"10.0.0.0/8", "127.0.0.0/8", "2001:db8::/32"};
	static const char *const any[] = {"0.0.0.0/0", "::/0"};
	static const char *const meta[] = {"169.254.169.254/32", "fe80::/10", "0.0.0.0"};

	(void)st;
	assert_false(allowed(lan, 0, "10.0.0.1")); /* empty list: nothing */
	assert_true(allowed(lan, 3, "10.1.2.3"));
	assert_true(allowed(lan, 3, "127.0.0.1"));
	assert_true(allowed(lan, 3, "::ffff:10.1.2.3")); /* mapped: judged as IPv4 */
	assert_true(allowed(lan, 3, "2001:db8::5"));
	assert_false(allowed(lan, 3, "192.168.1.1"));
	assert_false(allowed(lan, 3, "::1"));
	assert_true(allowed(any, 2, "192.168.1.1"));
	assert_true(allowed(any, 2, "2001:db8::1"));
	assert_false(allowed(any, 2, "0.0.0.0"));
	assert_false(allowed(any, 2, "::"));
	assert_false(allowed(any, 2, "169.254.169.254"));
	assert_false(allowed(any, 2, "::ffff:169.254.169.254"));
	assert_false(allowed(any, 2, "224.0.0.1"));
	assert_false(allowed(any, 2, "239.255.255.250"));
	assert_false(allowed(any, 2, "255.255.255.255"));
	assert_false(allowed(any, 2, "ff02::1"));
	assert_false(allowed(any, 2, "fe80::1"));
	assert_true(allowed(meta, 3, "169.254.169.254"));
	assert_false(allowed(meta, 3, "169.254.169.253"));
	assert_true(allowed(meta, 3, "fe80::1"));
	assert_true(allowed(meta, 3, "0.0.0.0"));
}

static void test_secret_never_in_error(void **st)
{
	struct rs_config c;

	(void)st;
	assert_int_not_equal(load(&c, "{\"api_keys\": [{\"name\": \"n\", \"key\": \"s3cr3t\"}]}"), 0);
	assert_null(strstr(err, "s3cr3t"));
	rs_config_release(&c);
}

static void test_proxmoxvnc_config_maps(void **st)
{
	struct rs_config c;

	(void)st;
	assert_int_equal(load(&c, "{\"authorization\": \"pvnc-secret-token\", \"logging_enabled\": true,"
				  "\"logging_level\": \"debug\", \"log_file\": \"/tmp/pvnc.log\","
				  "\"public_ip\": \"203.0.113.7\", \"router_ip\": \"127.0.0.1\","
				  "\"router_port\": 8081, \"novnc_path\": \"/usr/share/novnc\"}"),
			 0);
	assert_int_equal(c.n_api_keys, 1);
	assert_string_equal(c.api_keys[0].name, "default");
	assert_string_equal(c.api_keys[0].key, "pvnc-secret-token");
	assert_string_equal(c.listen[0], "127.0.0.1:8081");
	assert_string_equal(c.public_url, "http://203.0.113.7:8081");
	assert_string_equal(c.log_level, "debug");
	assert_string_equal(c.log_target, "/tmp/pvnc.log");
	rs_config_release(&c);
	assert_int_equal(load(&c, "{\"logging_enabled\": false}"), 0);
	assert_string_equal(c.log_level, "error");
	rs_config_release(&c);
}

static void test_cli_overrides(void **st)
{
	struct rs_config c;
	struct rs_cli cli;
	char *argv1[] = {"ringside", "-port", "9000", "--workers=3", "--log-level", "warn", NULL};
	char *argv2[] = {"ringside", "--bogus", NULL};
	char *argv3[] = {"ringside", "--port", "0", NULL};
	char *argv4[] = {"ringside", "--config", NULL};

	(void)st;
	assert_int_equal(rs_cli_parse(6, argv1, &cli, err, sizeof(err)), 0);
	rs_config_init(&c);
	assert_int_equal(rs_config_apply_cli(&c, &cli, err, sizeof(err)), 0);
	assert_int_equal(rs_config_validate(&c, err, sizeof(err)), 0);
	assert_string_equal(c.listen[0], "127.0.0.1:9000");
	assert_int_equal(c.workers, 3);
	assert_string_equal(c.log_level, "warn");
	rs_config_release(&c);
	assert_int_not_equal(rs_cli_parse(2, argv2, &cli, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "--bogus"));
	assert_int_not_equal(rs_cli_parse(3, argv3, &cli, err, sizeof(err)), 0);
	assert_int_not_equal(rs_cli_parse(2, argv4, &cli, err, sizeof(err)), 0);
}

static void test_hostport(void **st)
{
	struct sockaddr_storage ss;
	socklen_t len;

	(void)st;
	assert_int_equal(rs_parse_hostport("127.0.0.1:80", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(rs_parse_hostport("[::1]:8443", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(rs_parse_hostport("localhost:1", &ss, &len), 0);
	assert_int_not_equal(rs_parse_hostport("::1:80", &ss, &len), 0);
	assert_int_not_equal(rs_parse_hostport("1.2.3.4:", &ss, &len), 0);
	assert_int_not_equal(rs_parse_hostport("1.2.3.4:70000", &ss, &len), 0);
	assert_int_not_equal(rs_parse_hostport("[::1]80", &ss, &len), 0);
}

static void test_load_file(void **st)
{
	struct rs_config c;
	char path[] = "/tmp/rs-config-XXXXXX";
	int fd = mkstemp(path);

	(void)st;
	assert_true(fd >= 0);
	assert_true(write(fd, "{\"workers\": 2}", 14) == 14);
	close(fd);
	rs_config_init(&c);
	assert_int_equal(rs_config_load_file(&c, path, err, sizeof(err)), 0);
	assert_int_equal(c.workers, 2);
	assert_string_equal(c.config_path, path);
	rs_config_release(&c);
	unlink(path);
	rs_config_init(&c);
	assert_int_not_equal(rs_config_load_file(&c, "/nonexistent/x.json", err, sizeof(err)), 0);
	assert_non_null(strstr(err, "cannot read"));
	rs_config_release(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_bad_value_names_its_key),
		cmocka_unit_test(test_secret_never_in_error),
		cmocka_unit_test(test_tls_and_proxies),
		cmocka_unit_test(test_clusters),
		cmocka_unit_test(test_proxmoxvnc_config_maps),
		cmocka_unit_test(test_cli_overrides),
		cmocka_unit_test(test_hostport),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_weak_keys_refused),
		cmocka_unit_test(test_key_limits_targets_and_sources),
		cmocka_unit_test(test_key_scope),
		cmocka_unit_test(test_allowed_targets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
