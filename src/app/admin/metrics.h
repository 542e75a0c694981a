/*
 * metrics.h - request metrics in the Prometheus text format.
 *
 * Each worker thread counts into its own block (plain loads and stores on
 * memory no other thread writes: no shared atomic or lock on the request
 * path); a scrape sums the blocks. Series are keyed by the configuration
 * objects a request used and carry their label text, so a reload simply
 * starts new series, which the scrape merges by label.
 */
#ifndef WEIR_APP_METRICS_H
#define WEIR_APP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/config/config.h"
#include "weir/weir.h"

/* Counts one finished request (logging phase; the worker's thread). */
void weir__metrics_request(weir_session *s, const weir_cfg_server *srv,
                           const weir_cfg_location *loc, const weir_session_stats *st);

/* Counts one finished TCP session, with the backend it used (NULL if
 * none), and one failed connect of a TCP session. Worker threads. */
void weir__metrics_tcp(const weir_cfg_server *srv, const char *backend, uint64_t backend_id,
                       const weir_l4_stats *st);
void weir__metrics_tcp_connect_failed(const weir_cfg_server *srv, const char *backend,
                                      uint64_t backend_id);

/* Counts one command of a RESP (ring) server, and the keys it answered
 * with a backend and with nil. Worker threads. */
typedef enum weir_metrics_resp_cmd {
    WEIR_METRICS_RESP_GET,
    WEIR_METRICS_RESP_MGET,
    WEIR_METRICS_RESP_INFO,
    WEIR_METRICS_RESP_OTHER,
} weir_metrics_resp_cmd;
void weir__metrics_resp(const weir_cfg_server *srv, weir_metrics_resp_cmd cmd, uint64_t owned,
                        uint64_t unowned);

/* Counts one question of a location's router and how it went. Worker
 * threads. */
typedef enum weir_metrics_router_result {
    WEIR_METRICS_ROUTER_ROUTED,  /* it named a backend */
    WEIR_METRICS_ROUTER_NIL,     /* it knew none */
    WEIR_METRICS_ROUTER_TIMEOUT, /* no answer within router_timeout */
    WEIR_METRICS_ROUTER_ERROR,   /* down, refused, busy, or a bad answer */
} weir_metrics_router_result;
void weir__metrics_router(const weir_cfg_location *loc, weir_metrics_router_result r);

/* Counts one retry of a request on another backend, by what failed.
 * Worker threads. */
void weir__metrics_retry(const weir_cfg_upstream *u, weir_failure cause);

/* Counts a reload and its outcome. Any thread. */
void weir__metrics_reload(bool ok);

/*
 * Renders every metric: request counters and latency histograms, backend
 * state from the upstreams of cfg, server figures from srv, reloads, and
 * the process (CPU, RSS, open files), access-log lines dropped. Returns a malloc'd NUL-terminated
 * text (*len its length) or NULL. Any thread.
 */
char *weir__metrics_render(const weir_config *cfg, weir_server *srv, uint64_t log_dropped,
                           size_t *len);

#endif
