/* The fleet store's pieces: sealing (proto/store.c), the `fleet` config
 * section, hiredis' reply reading, and the Redis client on a real engine
 * against a scripted peer (pipelining, deadlines, cancel, bounds, AUTH). */
#include "engine_harness.h"

#include <pthread.h>
#include <stdatomic.h>

#include "core/config.h"
#include "proto/redis.h"
#include "proto/store.h"

static const uint8_t TOK[RS_TOKEN_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static struct rs_console_spec *sample_spec(void)
{
	struct rs_console_spec *s = rs_spec_new();

	assert_non_null(s);
	s->kind = RS_CONSOLE_PVE_VNC;
	s->host = strdup("10.9.8.7");
	s->port = 5901;
	s->password = strdup("Sup3r-Secret-Pw");
	s->label = strdup("ticket 4711");
	s->api_key_name = strdup("panel");
	s->created_s = 1700000000;
	s->expires_s = 1700000060;
	s->ttl_s = 60;
	s->cluster = strdup("fra1");
	s->node = strdup("pve-node-2");
	s->user = strdup("root@pam");
	s->vmid = 4242;
	s->pve_type = strdup("qemu");
	s->max_consoles = 3;
	s->bind_ip = true;
	{
		struct sockaddr_in *sin = (struct sockaddr_in *)&s->client_ip;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(0xc0000201);
	}
	return s;
}

static bool contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
	for (size_t i = 0; m && i + m <= n; i++)
		if (!memcmp(hay + i, needle, m))
			return true;
	return false;
}

static void test_seal_round_trip(void **state)
{
	struct rs_console_spec *s = sample_spec(), *o = NULL;
	char key[160];
	uint8_t *blob;
	size_t len;

	(void)state;
	rs_store_key("rs:", TOK, key, sizeof(key));
	assert_int_equal(strlen(key), 3 + 4 + 64);
	assert_int_equal(strncmp(key, "rs:tok:", 7), 0);
	assert_int_equal(rs_store_seal(TOK, key, s, &blob, &len), 0);
	assert_int_equal(rs_store_open(TOK, key, blob, len, &o), 0);
	assert_int_equal(o->kind, s->kind);
	assert_string_equal(o->host, s->host);
	assert_int_equal(o->port, s->port);
	assert_string_equal(o->password, s->password);
	assert_string_equal(o->label, s->label);
	assert_string_equal(o->api_key_name, s->api_key_name);
	assert_string_equal(o->cluster, s->cluster);
	assert_string_equal(o->node, s->node);
	assert_string_equal(o->user, s->user);
	assert_string_equal(o->pve_type, s->pve_type);
	assert_int_equal(o->vmid, 4242);
	assert_int_equal(o->created_s, s->created_s);
	assert_int_equal(o->expires_s, s->expires_s);
	assert_int_equal(o->ttl_s, 60);
	assert_int_equal(o->max_consoles, 3);
	assert_true(o->bind_ip);
	assert_memory_equal(&o->client_ip, &s->client_ip, sizeof(s->client_ip));
	assert_null(o->usage);
	rs_spec_free(o);
	free(blob);
	rs_spec_free(s);
}

static void test_seal_wrong_token_key_or_tamper_fails(void **state)
{
	struct rs_console_spec *s = sample_spec(), *o = NULL;
	uint8_t other[RS_TOKEN_BYTES], *blob;
	char key[160], key2[160];
	size_t len;

	(void)state;
	memcpy(other, TOK, sizeof(other));
	other[15] ^= 1;
	rs_store_key("rs:", TOK, key, sizeof(key));
	rs_store_key("rs:", other, key2, sizeof(key2));
	assert_string_not_equal(key, key2);
	assert_int_equal(rs_store_seal(TOK, key, s, &blob, &len), 0);
	assert_int_equal(rs_store_open(other, key, blob, len, &o), -EBADMSG);
	assert_null(o);
	/* A value moved under another key name does not open either. */
	assert_int_equal(rs_store_open(TOK, key2, blob, len, &o), -EBADMSG);
	for (size_t i = 0; i < len; i += 7) {
		blob[i] ^= 0x40;
		assert_int_equal(rs_store_open(TOK, key, blob, len, &o), -EBADMSG);
		blob[i] ^= 0x40;
	}
	assert_int_equal(rs_store_open(TOK, key, blob, 5, &o), -EBADMSG);
	assert_int_equal(rs_store_open(TOK, key, blob, len, &o), 0);
	rs_spec_free(o);
	free(blob);
	rs_spec_free(s);
}

static void test_seal_leaves_no_plaintext(void **state)
{
	struct rs_console_spec *s = sample_spec();
	uint8_t *blob, *blob2;
	size_t len, len2;
	char key[160], tokhex[33];

	(void)state;
	rs_store_key("rs:", TOK, key, sizeof(key));
	assert_int_equal(rs_store_seal(TOK, key, s, &blob, &len), 0);
	for (size_t i = 0; i < 16; i++)
		snprintf(tokhex + 2 * i, 3, "%02x", TOK[i]);
	assert_false(contains(blob, len, TOK, sizeof(TOK)));
	assert_false(contains(blob, len, tokhex, 32));
	assert_false(contains((const uint8_t *)key, strlen(key), tokhex, 32));
	assert_false(contains(blob, len, "Sup3r", 5));
	assert_false(contains(blob, len, "10.9.8.7", 8));
	assert_false(contains(blob, len, "pve-node", 8));
	assert_false(contains(blob, len, "fra1", 4));
	assert_false(contains(blob, len, "ticket", 6));
	assert_false(contains(blob, len, "root@pam", 8));
	/* A fresh nonce each time: the same spec never seals the same way. */
	assert_int_equal(rs_store_seal(TOK, key, s, &blob2, &len2), 0);
	assert_int_equal(len, len2);
	assert_memory_not_equal(blob, blob2, len);
	free(blob);
	free(blob2);
	rs_spec_free(s);
}

static void test_fleet_config(void **state)
{
	struct rs_config c;
	char err[300];

	(void)state;
	rs_config_init(&c);
	assert_int_equal(rs_config_validate(&c, err, sizeof(err)), 0);
	assert_false(c.fleet.enabled); /* absent: the embedded table */
	assert_int_equal(
	    rs_config_load_string(&c,
				  "{\"fleet\":{\"node\":\"box-a\",\"redis\":{\"address\":"
				  "\"127.0.0.1:6379\",\"username\":\"rs\",\"password\":"
				  "\"pw\",\"db\":2,\"consume_replicas\":1}}}",
				  err, sizeof(err)),
	    0);
	assert_int_equal(rs_config_validate(&c, err, sizeof(err)), 0);
	assert_true(c.fleet.enabled);
	assert_string_equal(c.fleet.node, "box-a");
	assert_string_equal(c.fleet.key_prefix, "rs:");
	assert_int_equal(c.fleet.timeout_ms, 500);
	assert_int_equal(c.fleet.db, 2);
	assert_int_equal(c.fleet.consume_replicas, 1);
	assert_true(c.fleet.consume_wait_ms < c.fleet.timeout_ms);
	rs_config_release(&c);

	rs_config_init(&c);
	assert_int_equal(
	    rs_config_load_string(&c,
				  "{\"fleet\":{\"sentinel\":{\"addresses\":[\"127.0.0.1:"
				  "26379\"],\"master\":\"ringside\"}}}",
				  err, sizeof(err)),
	    0);
	assert_int_equal(rs_config_validate(&c, err, sizeof(err)), 0);
	assert_int_equal(c.fleet.n_sentinels, 1);
	rs_config_release(&c);

	static const char *const bad[] = {
	    "{\"fleet\":{}}",
	    "{\"fleet\":{\"redis\":{\"address\":\"redis.example:6379\"}}}",
	    "{\"fleet\":{\"redis\":{\"adress\":\"127.0.0.1:6379\"}}}",
	    "{\"fleet\":{\"sentinel\":{\"addresses\":[\"127.0.0.1:26379\"]}}}",
	    "{\"fleet\":{\"redis\":{\"address\":\"127.0.0.1:6379\",\"timeout_ms\":100,"
	    "\"consume_wait_ms\":100}}}",
	    "{\"fleet\":{\"redis\":{\"address\":\"127.0.0.1:6379\",\"username\":\"x\"}}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret;

		rs_config_init(&c);
		ret = rs_config_load_string(&c, bad[i], err, sizeof(err));
		if (!ret)
			ret = rs_config_validate(&c, err, sizeof(err));
		assert_int_equal(ret, -EINVAL);
		assert_non_null(strstr(err, "fleet"));
		rs_config_release(&c);
	}
}

static void test_reply_parsing(void **state)
{
	static const char ok[] = "+OK\r\n$5\r\nhel\0o\r\n$-1\r\n:42\r\n*2\r\n$1\r\na\r\n:1\r\n"
				 "-READONLY You can't write against a read only replica.\r\n";
	size_t n;

	(void)state;
	assert_int_equal(rs_redis_parse_count((const uint8_t *)ok, sizeof(ok) - 1, &n), 0);
	assert_int_equal(n, 6);
	/* A partial reply is no reply yet. */
	assert_int_equal(rs_redis_parse_count((const uint8_t *)"$5\r\nhel", 7, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(rs_redis_parse_count((const uint8_t *)"?what\r\n", 7, &n), -EPROTO);
	assert_int_equal(rs_redis_parse_count((const uint8_t *)"$-7\r\n", 5, &n), -EPROTO);
}

/* ---- the client on a real engine, against a scripted peer --------------- */

struct results {
	_Atomic int n;
	int err[16];
	int type[16];
	char str[16][32];
	long long integer[16];
};

struct cmd_ctx {
	struct rs_redis_pool *p;
	struct results *res;
	const char *argv[4];
	int argc;
	int ret;
	struct rs_redis_req *req;
	bool cancel;
};

static void on_reply(void *arg, const redisReply *reply, int err)
{
	struct results *res = arg;
	int i = atomic_load(&res->n);

	res->err[i] = err;
	res->type[i] = reply ? reply->type : -1;
	if (reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS ||
		      reply->type == REDIS_REPLY_ERROR))
		snprintf(res->str[i], sizeof(res->str[i]), "%s", reply->str);
	if (reply && reply->type == REDIS_REPLY_INTEGER)
		res->integer[i] = reply->integer;
	atomic_store(&res->n, i + 1);
}

static void start_on_worker(struct rs_worker *w, void *arg)
{
	rs_redis_worker_start(arg, w);
}

static void stop_on_worker(struct rs_worker *w, void *arg)
{
	rs_redis_worker_stop(arg, w);
}

static void cmd_on_worker(struct rs_worker *w, void *arg)
{
	struct cmd_ctx *c = arg;

	c->ret =
	    rs_redis_cmd(rs_redis_of(c->p, w), on_reply, c->res, c->argc, c->argv, NULL, &c->req);
	if (!c->ret && c->cancel)
		rs_redis_cancel(c->req);
}

static int send_cmd(struct harness *h, struct rs_redis_pool *p, struct results *res, bool cancel,
		    int argc, ...)
{
	struct cmd_ctx c = {.p = p, .res = res, .argc = argc, .cancel = cancel};
	va_list ap;

	va_start(ap, argc);
	for (int i = 0; i < argc; i++)
		c.argv[i] = va_arg(ap, const char *);
	va_end(ap);
	assert_int_equal(rs_worker_call(h->w, cmd_on_worker, &c), 0);
	return c.ret;
}

static bool wait_results(struct results *res, int n, int ms)
{
	for (int i = 0; i < ms; i++) {
		if (atomic_load(&res->n) >= n)
			return true;
		usleep(1000);
	}
	return atomic_load(&res->n) >= n;
}

/* Read exactly <want> bytes from the peer side (2 s at most). */
static void peer_expect(int fd, const char *want)
{
	size_t n = strlen(want), got = 0;
	char buf[1024];

	assert_true(n < sizeof(buf));
	while (got < n) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		assert_int_equal(poll(&pfd, 1, 2000), 1);
		r = read(fd, buf + got, n - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
	buf[n] = 0;
	assert_string_equal(buf, want);
}

static int peer_accept(int lfd)
{
	struct pollfd pfd = {.fd = lfd, .events = POLLIN};

	assert_int_equal(poll(&pfd, 1, 3000), 1);
	return accept(lfd, NULL, NULL);
}

static struct rs_redis_pool *client_for(struct sockaddr_in *addr, const char *user, const char *pw,
					unsigned db, unsigned max_pending)
{
	struct rs_redis_pool *p = NULL;
	char hp[64], err[200];
	struct rs_redis_opts o = {.address = hp,
				  .username = user,
				  .password = pw,
				  .db = db,
				  .timeout_ms = 150,
				  .max_pending = max_pending,
				  .conns = 1};

	snprintf(hp, sizeof(hp), "127.0.0.1:%u", ntohs(addr->sin_port));
	assert_int_equal(rs_redis_pool_new(&p, &o, 1, err, sizeof(err)), 0);
	return p;
}

static void test_client_pipelines_in_order(void **state)
{
	struct harness h = {0};
	struct sockaddr_in addr;
	struct results res = {0};
	struct rs_redis_pool *p;
	int lfd, fd;

	(void)state;
	if (!h_start(&h, (struct rs_engine_opts){.buf_size = 4096, .buf_count = 64}))
		skip();
	lfd = h_listen(&addr, 8, 0);
	p = client_for(&addr, NULL, NULL, 0, 0);
	assert_int_equal(rs_worker_call(h.w, start_on_worker, p), 0);
	fd = peer_accept(lfd);
	assert_true(fd >= 0);
	assert_int_equal(send_cmd(&h, p, &res, false, 2, "GET", "a"), 0);
	assert_int_equal(send_cmd(&h, p, &res, false, 2, "GET", "b"), 0);
	assert_int_equal(send_cmd(&h, p, &res, false, 3, "SET", "c", "v w"), 0);
	/* All three go out before any answer: a pipeline. */
	peer_expect(fd, "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
			"*3\r\n$3\r\nSET\r\n$1\r\nc\r\n$3\r\nv w\r\n");
	/* Answers split across writes, mid-reply. */
	assert_int_equal(write(fd, "$1\r\nA\r\n$-", 9), 9);
	usleep(20000);
	assert_int_equal(write(fd, "1\r\n+OK\r\n", 8), 8);
	assert_true(wait_results(&res, 3, 2000));
	assert_int_equal(res.err[0], 0);
	assert_int_equal(res.err[1], 0);
	assert_int_equal(res.err[2], 0);
	assert_int_equal(res.type[0], REDIS_REPLY_STRING);
	assert_string_equal(res.str[0], "A");
	assert_int_equal(res.type[1], REDIS_REPLY_NIL);
	assert_int_equal(res.type[2], REDIS_REPLY_STATUS);
	assert_string_equal(res.str[2], "OK");
	assert_int_equal(rs_worker_call(h.w, stop_on_worker, p), 0);
	close(fd);
	close(lfd);
	h_stop(&h);
	rs_redis_pool_free(p);
}

static void test_client_timeout_recycles_and_reconnects(void **state)
{
	struct harness h = {0};
	struct sockaddr_in addr;
	struct results res = {0};
	struct rs_redis_stats st;
	struct rs_redis_pool *p;
	char buf[64];
	int lfd, fd, fd2;

	(void)state;
	if (!h_start(&h, (struct rs_engine_opts){.buf_size = 4096, .buf_count = 64}))
		skip();
	lfd = h_listen(&addr, 8, 0);
	p = client_for(&addr, NULL, NULL, 0, 0);
	assert_int_equal(rs_worker_call(h.w, start_on_worker, p), 0);
	fd = peer_accept(lfd);
	assert_int_equal(send_cmd(&h, p, &res, false, 2, "GETDEL", "k"), 0);
	assert_int_equal(send_cmd(&h, p, &res, false, 2, "GET", "j"), 0);
	peer_expect(fd, "*2\r\n$6\r\nGETDEL\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nj\r\n");
	/* No answer: the first fails with its deadline, the one behind it
	 * with the recycled connection; neither hangs. */
	assert_true(wait_results(&res, 2, 2000));
	assert_int_equal(res.err[0], -ETIMEDOUT);
	assert_int_equal(res.err[1], -ECONNRESET);
	{
		struct pollfd pfd = {.fd = fd, .events = POLLIN};

		assert_int_equal(poll(&pfd, 1, 2000), 1);
		assert_int_equal(read(fd, buf, sizeof(buf)), 0); /* closed by the client */
	}
	/* A late answer on the old connection can never be taken for a new
	 * command's: the client reconnects on a fresh connection. */
	fd2 = peer_accept(lfd);
	assert_true(fd2 >= 0);
	usleep(20000);
	assert_int_equal(send_cmd(&h, p, &res, false, 2, "GET", "z"), 0);
	peer_expect(fd2, "*2\r\n$3\r\nGET\r\n$1\r\nz\r\n");
	assert_int_equal(write(fd2, ":7\r\n", 4), 4);
	assert_true(wait_results(&res, 3, 2000));
	assert_int_equal(res.err[2], 0);
	assert_int_equal(res.integer[2], 7);
	rs_redis_stats_get(p, &st);
	assert_int_equal(st.errors[RS_REDIS_E_TIMEOUT], 1);
	assert_int_equal(st.errors[RS_REDIS_E_CONN_LOST], 1);
	assert_true(st.reconnects >= 1);
	assert_int_equal(rs_worker_call(h.w, stop_on_worker, p), 0);
	close(fd);
	close(fd2);
	close(lfd);
	h_stop(&h);
	rs_redis_pool_free(p);
}

static void test_client_cancel_bound_and_auth(void **state)
{
	struct harness h = {0};
	struct sockaddr_in addr;
	struct results res = {0};
	struct rs_redis_pool *p;
	int lfd, fd;

	(void)state;
	if (!h_start(&h, (struct rs_engine_opts){.buf_size = 4096, .buf_count = 64}))
		skip();
	lfd = h_listen(&addr, 8, 0);
	p = client_for(&addr, "ringside", "pw", 3, 2);
	assert_int_equal(rs_worker_call(h.w, start_on_worker, p), 0);
	fd = peer_accept(lfd);
	/* The handshake comes first: AUTH user pass, SELECT db. */
	peer_expect(fd, "*3\r\n$4\r\nAUTH\r\n$8\r\nringside\r\n$2\r\npw\r\n"
			"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n");
	assert_int_equal(write(fd, "+OK\r\n+OK\r\n", 10), 10);
	assert_int_equal(send_cmd(&h, p, &res, true, 2, "GET", "gone"), 0); /* cancelled */
	assert_int_equal(send_cmd(&h, p, &res, false, 2, "GET", "kept"), 0);
	/* max_pending 2: a third waits nowhere, it is refused at once. */
	assert_int_equal(send_cmd(&h, p, &res, false, 2, "GET", "more"), -EAGAIN);
	peer_expect(fd, "*2\r\n$3\r\nGET\r\n$4\r\ngone\r\n*2\r\n$3\r\nGET\r\n$4\r\nkept\r\n");
	assert_int_equal(write(fd, "$4\r\nGONE\r\n$4\r\nKEPT\r\n", 20), 20);
	assert_true(wait_results(&res, 1, 2000));
	usleep(50000);
	/* The cancelled command's answer was consumed in order, never delivered. */
	assert_int_equal(atomic_load(&res.n), 1);
	assert_string_equal(res.str[0], "KEPT");
	assert_int_equal(rs_worker_call(h.w, stop_on_worker, p), 0);
	close(fd);
	close(lfd);
	h_stop(&h);
	rs_redis_pool_free(p);
}

static void test_client_refuses_when_unreachable(void **state)
{
	struct harness h = {0};
	struct sockaddr_in addr;
	struct results res = {0};
	struct rs_redis_pool *p;
	int lfd, ret = 0;

	(void)state;
	if (!h_start(&h, (struct rs_engine_opts){.buf_size = 4096, .buf_count = 64}))
		skip();
	lfd = h_listen(&addr, 8, 0);
	close(lfd); /* nothing listens there any more: connects are refused */
	p = client_for(&addr, NULL, NULL, 0, 0);
	assert_int_equal(rs_worker_call(h.w, start_on_worker, p), 0);
	/* Within moments the client is backing off and says so at once, or a
	 * command queued on the attempt fails with it: never a hang. */
	for (int i = 0; i < 100 && ret != -ENOTCONN; i++) {
		ret = send_cmd(&h, p, &res, false, 2, "GET", "x");
		usleep(10000);
	}
	assert_int_equal(ret, -ENOTCONN);
	for (int i = 0; i < atomic_load(&res.n); i++)
		assert_int_equal(res.err[i], -ENOTCONN);
	assert_int_equal(rs_worker_call(h.w, stop_on_worker, p), 0);
	h_stop(&h);
	rs_redis_pool_free(p);
}

struct sub_seen {
	_Atomic int n;
	char channel[32], msg[32];
	bool on_worker0;
};

static void on_message(void *arg, const char *channel, const char *msg, size_t len)
{
	struct sub_seen *seen = arg;

	snprintf(seen->channel, sizeof(seen->channel), "%s", channel);
	snprintf(seen->msg, sizeof(seen->msg), "%.*s", (int)len, msg);
	atomic_fetch_add(&seen->n, 1);
}

/* Read what is there within 2 s (at least one byte) into <buf>. */
static size_t peer_read(int fd, char *buf, size_t cap)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	ssize_t r;

	assert_int_equal(poll(&pfd, 1, 2000), 1);
	r = read(fd, buf, cap - 1);
	assert_true(r > 0);
	buf[r] = 0;
	return (size_t)r;
}

static void test_client_subscriber_delivers_messages(void **state)
{
	static const char sub_cmd[] = "*3\r\n$9\r\nSUBSCRIBE\r\n$4\r\nkill\r\n$5\r\nother\r\n";
	struct harness h = {0};
	struct sockaddr_in addr;
	struct sub_seen seen = {0}, other = {0};
	struct rs_redis_pool *p;
	char buf[512];
	int lfd, fd[2], sub = -1;

	(void)state;
	if (!h_start(&h, (struct rs_engine_opts){.buf_size = 4096, .buf_count = 64}))
		skip();
	lfd = h_listen(&addr, 8, 0);
	p = client_for(&addr, NULL, NULL, 0, 0);
	assert_int_equal(rs_redis_subscribe(p, "kill", on_message, &seen), 0);
	assert_int_equal(rs_redis_subscribe(p, "other", on_message, &other), 0);
	assert_int_equal(rs_worker_call(h.w, start_on_worker, p), 0);
	/* Worker 0 opens its command connection and the subscriber. */
	fd[0] = peer_accept(lfd);
	fd[1] = peer_accept(lfd);
	for (int i = 0; i < 2 && sub < 0; i++) {
		struct pollfd pfd = {.fd = fd[i], .events = POLLIN};

		if (poll(&pfd, 1, 500) == 1) {
			peer_read(fd[i], buf, sizeof(buf));
			assert_string_equal(buf, sub_cmd);
			sub = fd[i];
		}
	}
	assert_true(sub >= 0);
	{
		static const char confirm[] =
		    "*3\r\n$9\r\nsubscribe\r\n$4\r\nkill\r\n:1\r\n"
		    "*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:2\r\n"
		    "*3\r\n$7\r\nmessage\r\n$4\r\nkill\r\n$9\r\nbox-a 42\0\r\n";
		static const char msg2[] = "*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$2\r\nhi\r\n";

		assert_int_equal(write(sub, confirm, sizeof(confirm) - 1),
				 (ssize_t)sizeof(confirm) - 1);
		for (int i = 0; i < 2000 && atomic_load(&seen.n) < 1; i++)
			usleep(1000);
		assert_int_equal(atomic_load(&seen.n), 1);
		assert_string_equal(seen.channel, "kill");
		assert_string_equal(seen.msg, "box-a 42");
		assert_int_equal(write(sub, msg2, sizeof(msg2) - 1), (ssize_t)sizeof(msg2) - 1);
		for (int i = 0; i < 2000 && atomic_load(&other.n) < 1; i++)
			usleep(1000);
		assert_int_equal(atomic_load(&other.n), 1);
		assert_string_equal(other.msg, "hi");
		assert_int_equal(atomic_load(&seen.n), 1);
	}
	assert_int_equal(rs_worker_call(h.w, stop_on_worker, p), 0);
	close(fd[0]);
	close(fd[1]);
	close(lfd);
	h_stop(&h);
	rs_redis_pool_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_seal_round_trip),
	    cmocka_unit_test(test_seal_wrong_token_key_or_tamper_fails),
	    cmocka_unit_test(test_seal_leaves_no_plaintext),
	    cmocka_unit_test(test_fleet_config),
	    cmocka_unit_test(test_reply_parsing),
	    cmocka_unit_test(test_client_pipelines_in_order),
	    cmocka_unit_test(test_client_timeout_recycles_and_reconnects),
	    cmocka_unit_test(test_client_cancel_bound_and_auth),
	    cmocka_unit_test(test_client_refuses_when_unreachable),
	    cmocka_unit_test(test_client_subscriber_delivers_messages),
	};

	rs_log_set_level(RS_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
