#include "core/common.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "admin/audit.h"
#include "core/log.h"

#define QUEUE_MAX 65536

struct line {
	struct line *next;
	size_t len;
	char text[];
};

struct rs_audit {
	char *path; /* NULL: syslog */
	int fd;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct line *head, *tail;
	size_t queued;
	bool on, stop, reopen;
	_Atomic uint64_t dropped, written;
};

static int open_file(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

static void *writer(void *arg)
{
	struct rs_audit *a = arg;

	pthread_setname_np(pthread_self(), "rs-audit");
	pthread_mutex_lock(&a->lock);
	for (;;) {
		struct line *batch;

		while (!a->head && !a->stop && !a->reopen)
			pthread_cond_wait(&a->cond, &a->lock);
		if (a->reopen && a->path) {
			int fd = open_file(a->path);

			if (fd >= 0) {
				close(a->fd);
				a->fd = fd;
			} else {
				rs_error("audit", "cannot reopen '%s': %s", a->path, strerror(errno));
			}
		}
		a->reopen = false;
		batch = a->head;
		a->head = a->tail = NULL;
		a->queued = 0;
		if (!batch && a->stop)
			break;
		pthread_mutex_unlock(&a->lock);
		while (batch) {
			struct line *l = batch;

			batch = l->next;
			if (!a->path)
				syslog(LOG_INFO | LOG_AUTH, "%.*s", (int)l->len - 1, l->text);
			else if (write(a->fd, l->text, l->len) != (ssize_t)l->len)
				atomic_fetch_add(&a->dropped, 1);
			atomic_fetch_add(&a->written, 1);
			free(l);
		}
		pthread_mutex_lock(&a->lock);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

struct rs_audit *rs_audit_open(const char *target, char *err, size_t errlen)
{
	struct rs_audit *a = rs_xcalloc(1, sizeof(*a));

	a->fd = -1;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	if (!target || !*target)
		return a; /* disabled */
	if (strcmp(target, "syslog")) {
		a->path = rs_xstrdup(target);
		a->fd = open_file(target);
		if (a->fd < 0) {
			snprintf(err, errlen, "cannot open the audit log '%s': %s", target,
				 strerror(errno));
			free(a->path);
			free(a);
			return NULL;
		}
	} else {
		openlog("ringside", LOG_PID | LOG_NDELAY, LOG_AUTH);
	}
	pthread_create(&a->thread, NULL, writer, a);
	a->on = true;
	return a;
}

static bool enabled(const struct rs_audit *a)
{
	return a && a->on;
}

void rs_audit_close(struct rs_audit *a)
{
	if (!a)
		return;
	if (a->on) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_signal(&a->cond);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
	}
	if (a->fd >= 0)
		close(a->fd);
	if (a->on && !a->path)
		closelog();
	free(a->path);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free(a);
}

void rs_audit_reopen(struct rs_audit *a)
{
	if (!enabled(a))
		return;
	pthread_mutex_lock(&a->lock);
	a->reopen = true;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

void rs_audit_emit(struct rs_audit *a, const char *event, json_t *fields)
{
	struct timespec ts;
	struct tm tm;
	char stamp[96];
	json_t *o;
	char *text;
	struct line *l;
	size_t n;

	if (!enabled(a)) {
		json_decref(fields);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	o = json_pack("{s:s, s:s}", "ts", stamp, "event", event);
	if (o && fields)
		json_object_update(o, fields);
	json_decref(fields);
	text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
	json_decref(o);
	if (!text) {
		atomic_fetch_add(&a->dropped, 1);
		return;
	}
	n = strlen(text);
	l = malloc(sizeof(*l) + n + 1);
	if (l) {
		memcpy(l->text, text, n);
		l->text[n] = '\n';
		l->len = n + 1;
		l->next = NULL;
	}
	free(text);
	pthread_mutex_lock(&a->lock);
	if (!l || a->queued >= QUEUE_MAX) {
		pthread_mutex_unlock(&a->lock);
		free(l);
		atomic_fetch_add(&a->dropped, 1);
		return;
	}
	if (a->tail)
		a->tail->next = l;
	else
		a->head = l;
	a->tail = l;
	a->queued++;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

uint64_t rs_audit_dropped(const struct rs_audit *a)
{
	return a ? atomic_load(&((struct rs_audit *)a)->dropped) : 0;
}

uint64_t rs_audit_written(const struct rs_audit *a)
{
	return a ? atomic_load(&((struct rs_audit *)a)->written) : 0;
}
