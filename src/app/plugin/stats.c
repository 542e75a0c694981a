/*
 * stats.c - a JSON document about this weir on a path: version, process,
 * uptime, memory, workers, client connections, and each upstream's
 * backends (healthy, in flight). For a dashboard or a quick look; the
 * numbers to alert on are in /metrics (the admin listener).
 *
 *     [plugins.stats]
 *     category = "stats"
 *     path = "/stats"
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/app_int.h"
#include "app/plugin/plugins.h"

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static json_t *upstreams_json(const weir_config *cfg)
{
    json_t *arr = json_array();
    weir_backend_info info[256];
    for (size_t i = 0; arr && i < cfg->n_upstreams; i++) {
        const weir_cfg_upstream *u = &cfg->upstreams[i];
        size_t n = u->lb ? weir_upstream_info(u->lb, info, 256) : 0;
        size_t shown = n < 256 ? n : 256, healthy = 0;
        uint64_t in_flight = 0;
        for (size_t k = 0; k < shown; k++) {
            healthy += info[k].healthy && !info[k].draining && info[k].breaker != WEIR_BREAKER_OPEN;
            in_flight += info[k].in_flight;
        }
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I}", "name", u->name, "backends",
                                             (json_int_t)n, "healthy", (json_int_t)healthy,
                                             "in_flight", (json_int_t)in_flight));
    }
    return arr ? arr : json_array();
}

static weir_phase_result stats_request(weir_plugin_call *c)
{
    const char *want = c->plugin->conf;
    weir_str path = weir_session_path(c->s);
    if (path.len != strlen(want) || memcmp(path.ptr, want, path.len) != 0)
        return WEIR_PHASE_CONTINUE;
    req_ctx *rc = c->req;
    weir_app *app = rc->sa->app;
    weir_server_stats st = {0};
    if (app->srv)
        weir_server_get_stats(app->srv, &st);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    time_t now = time(NULL);
    json_t *doc = json_pack(
        "{s:s, s:I, s:s, s:I, s:I, s:I, s:i, s:{s:I, s:I}, s:I, s:o}", "version", weir_version(),
        "pid", (json_int_t)getpid(), "hostname", host, "start_time", (json_int_t)app->started_at,
        "uptime_s", (json_int_t)(now - app->started_at), "memory_rss_bytes",
        (json_int_t)rss_bytes(), "workers", st.workers, "client_connections", "http1",
        (json_int_t)st.client_connections, "http2", (json_int_t)st.client_connections_h2,
        "upstream_pool_idle", (json_int_t)st.pool_idle, "upstreams", upstreams_json(rc->cfg));
    char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    json_decref(doc);
    if (!text)
        return WEIR_PHASE_ERROR;
    weir_header h[2] = {{WEIR_STR("Content-Type"), WEIR_STR("application/json")},
                        {WEIR_STR("Cache-Control"), WEIR_STR("no-store")}};
    int rc2 = weir_session_respond(c->s, 200, h, 2, text, strlen(text));
    free(text);
    return rc2 == WEIR_OK ? WEIR_PHASE_ANSWERED : WEIR_PHASE_ERROR;
}

const weir_plugin_def weir__plugin_stats = {
    .category = "stats",
    .keys = (const weir_cfg_key[]){{"path", WEIR_CT_STRING, NULL}, {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = weir__plugin_parse_path,
    .free = free,
    .request = stats_request,
};
