/* admin/metrics.h — Prometheus text exposition on a listener of its own.
 *
 * Every figure comes from per-worker counters summed at scrape time; label
 * sets are bounded (kinds, causes, stages, directions, routes, status
 * classes). GET /metrics, with an optional bearer token (metrics_token).
 */
#ifndef RS_METRICS_H
#define RS_METRICS_H

#include "core/common.h"
#include "proto/http_server.h"

struct rs_app;

/* Render the exposition into a malloc'd string (*out, caller frees).
 * Returns its length, or -ENOMEM. */
long rs_metrics_render(struct rs_app *app, char **out);

/* rs_http_handler for the metrics listener; <arg> is the struct rs_app. */
void rs_metrics_route(struct rs_http_conn *hc, const struct rs_http_req *req, void *arg);

#endif
