/*
 * phases.c - the weir program's phases: route each request to a location
 * of its server and run the location's plugin chains at each step (its
 * own rules, made plugins by the loader, first: echo, body limit,
 * rewrite, headers both ways; a server's redirect_https before routing),
 * then log it. Choosing the backend is in balance.c.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/access_log.h"
#include "app/acme/manager.h"
#include "app/admin/metrics.h"
#include "app/app_int.h"
#include "app/otel/request.h"
#include "app/plugin/plugin.h"
#include "app/plugin/plugins.h"
#include "app/route.h"

weir_phase_result weir__app_answer(weir_session *s, int status, const char *text)
{
    if (status >= 500) {
        /* Every 5xx weir makes itself leaves a line to find it by. */
        weir_str id = weir_session_request_id(s), ip = weir_session_client_ip(s);
        weir_str m = weir_session_method(s), t = weir_session_target(s);
        weir_log(WEIR_LEVEL_WARN, "client %.*s: \"%.*s %.*s\": %d %s (request %.*s)", (int)ip.len,
                 ip.ptr, (int)m.len, m.ptr, (int)(t.len > 200 ? 200 : t.len), t.ptr, status, text,
                 (int)id.len, id.ptr);
    }
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, text);
    weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("text/plain")};
    if (weir_session_respond(s, status, &h, 1, body, (size_t)n) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

/* The server sa's requests get in snapshot cfg; NULL if a reload removed
 * it (its last connections finish). */
weir_cfg_server *weir__app_find_server(weir_config *cfg, server_app *sa)
{
    size_t k = (size_t)(sa - sa->app->servers);
    if (k >= atomic_load_explicit(&cfg->n_app_servers, memory_order_acquire) ||
        cfg->app_server[k] < 0)
        return NULL;
    return &cfg->servers[cfg->app_server[k]];
}

static void *new_ctx(weir_session *s, void *app)
{
    server_app *sa = app;
    req_ctx *c = weir_session_alloc(s, sizeof(*c));
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->sa = sa;
    c->cfg = weir__config_ref(atomic_load_explicit(&sa->app->current, memory_order_acquire));
    c->srv = weir__app_find_server(c->cfg, sa);
    return c;
}

static void free_ctx(void *app, void *ctx)
{
    req_ctx *c = ctx;
    if (!c)
        return;
    if (c->backend) /* logging did not run (cannot happen) or failed early */
        weir_backend_done(c->backend, WEIR_BACKEND_NOT_RELEVANT);
    if (c->next)
        weir_backend_done(c->next, WEIR_BACKEND_NOT_RELEVANT);
    weir__config_unref(c->cfg);
}

/* ---- plugin chains ---- */

/* Its per-request memory (ctx_size bytes, zeroed) for the slot'th plugin of
 * the location, made on first use. */
static void *plugin_ctx(weir_session *s, req_ctx *c, const weir_plugin_ref *r)
{
    size_t size = r->p->def->ctx_size;
    if (!size)
        return NULL;
    if (!c->pctx) {
        c->pctx = weir_session_alloc(s, c->loc->n_plugins * sizeof(*c->pctx));
        if (!c->pctx)
            return NULL;
        memset(c->pctx, 0, c->loc->n_plugins * sizeof(*c->pctx));
    }
    if (!c->pctx[r->slot] && (c->pctx[r->slot] = weir_session_alloc(s, size)))
        memset(c->pctx[r->slot], 0, size);
    return c->pctx[r->slot];
}

/* Runs chain k of the location from its from'th plugin: CONTINUE when all
 * went on, else what stopped it (PENDING parks it: weir__plugin_resume). */
static weir_phase_result run_chain(weir_session *s, req_ctx *c, int k, size_t from)
{
    const weir_plugin_chain *ch = &c->loc->chains[k];
    if (from >= ch->n)
        return WEIR_PHASE_CONTINUE;
    weir_headers *h = k == WEIR_STEP_UPSTREAM_RESPONSE || k == WEIR_STEP_RESPONSE
                          ? weir_session_resp_headers(s)
                          : weir_session_req_headers(s);
    for (size_t i = from; i < ch->n; i++) {
        const weir_plugin_ref *r = &ch->v[i];
        weir_plugin_call call = {s, r->p, r->ctx ? plugin_ctx(s, c, r) : NULL, c, h, false, false};
        weir_phase_result res = r->hook(&call);
        if (res == WEIR_PHASE_CONTINUE)
            continue;
        if (res == WEIR_PHASE_PENDING) {
            weir__trace_plugin_wait(s, c, r->p->name, r->p->def->category);
            c->park_chain = (uint8_t)k;
            c->park_pos = (uint16_t)(i + 1);
            c->parked = r->p;
            c->parked_ctx = call.ctx;
        }
        return res;
    }
    return WEIR_PHASE_CONTINUE;
}

void weir__plugin_resume(weir_session *s, weir_phase_result result)
{
    req_ctx *c = weir_session_ctx(s);
    if (!c || !c->parked) {
        weir_session_resume(s, WEIR_PHASE_ERROR);
        return;
    }
    if (result == WEIR_PHASE_PENDING)
        return; /* the hook waits again (a timer, a sub-request): still parked */
    c->parked = NULL;
    weir__trace_plugin_done(s, c, result);
    if (result == WEIR_PHASE_CONTINUE)
        result = run_chain(s, c, c->park_chain, c->park_pos);
    if (result != WEIR_PHASE_PENDING)
        weir_session_resume(s, result);
}

const weir_plugin *weir__plugin_parked(weir_session *s)
{
    req_ctx *c = weir_session_ctx(s);
    return c ? c->parked : NULL;
}

void *weir__plugin_parked_ctx(weir_session *s)
{
    req_ctx *c = weir_session_ctx(s);
    return c && c->parked ? c->parked_ctx : NULL;
}

#define ACME_PREFIX "/.well-known/acme-challenge/"
#define ACME_PREFIX_LEN (sizeof(ACME_PREFIX) - 1)

/* Runs a server's plugin (redirect_https) before routing. */
static weir_phase_result run_one(weir_session *s, req_ctx *c, const weir_plugin *p)
{
    weir_plugin_call call = {s, p, NULL, c, weir_session_req_headers(s), false, false};
    return p->def->request(&call);
}

/* The metrics text, for clients of the allow-list (403 for others). */
static weir_phase_result metrics(weir_session *s, req_ctx *c)
{
    if (!weir__plugin_ip_in(c->srv->prometheus_allow, c->srv->n_prometheus_allow,
                            weir_session_client_ip(s)))
        return weir__app_answer(s, 403, "Forbidden");
    weir_app *app = c->sa->app;
    size_t len = 0;
    char *text =
        weir__metrics_render(c->cfg, weir__app_server(app), weir__app_log_dropped(app), &len);
    if (!text)
        return weir__app_answer(s, 500, "Internal Server Error");
    weir_header h[] = {{WEIR_STR("Content-Type"), WEIR_STR("text/plain; version=0.0.4")},
                       {WEIR_STR("Cache-Control"), WEIR_STR("no-store")}};
    int rc = weir_session_respond(s, 200, h, 2, text, len);
    free(text);
    return rc == WEIR_OK ? WEIR_PHASE_ANSWERED : WEIR_PHASE_ERROR;
}

static weir_phase_result early_request_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (!c)
        return WEIR_PHASE_ERROR;
    if (!c->srv)
        return weir__app_answer(s, 503, "Service Unavailable"); /* server removed by a reload */
    weir__trace_begin(s, c);
    /* ACME HTTP-01 answers come before anything a server or location
     * does (a redirect to https included), as the CA asks on port 80. */
    weir_str path = weir_session_path(s);
    if (path.len > ACME_PREFIX_LEN && memcmp(path.ptr, ACME_PREFIX, ACME_PREFIX_LEN) == 0) {
        char ka[256];
        if (weir__acme_http01(path.ptr + ACME_PREFIX_LEN, path.len - ACME_PREFIX_LEN, ka,
                              sizeof(ka))) {
            weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("application/octet-stream")};
            return weir_session_respond(s, 200, &h, 1, ka, strlen(ka)) == WEIR_OK
                       ? WEIR_PHASE_ANSWERED
                       : WEIR_PHASE_ERROR;
        }
    }
    /* prometheus_metrics: before the server's own rules too (a redirect
     * to https would lose a scraper that does not follow it). */
    if (c->srv->prometheus_path && path.len == strlen(c->srv->prometheus_path) &&
        memcmp(path.ptr, c->srv->prometheus_path, path.len) == 0)
        return metrics(s, c);
    if (c->srv->redirect) {
        weir_phase_result r = run_one(s, c, c->srv->redirect);
        if (r != WEIR_PHASE_CONTINUE)
            return r;
    }
    weir_str host = weir_headers_get(weir_session_req_headers(s), "host");
    c->loc = weir__router_match(c->srv->router, host, weir_session_path(s));
    if (!c->loc)
        return weir__app_answer(s, 404, "Not Found");
    return run_chain(s, c, WEIR_STEP_EARLY_REQUEST, 0);
}

static weir_phase_result request_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (!c || !c->loc)
        return WEIR_PHASE_ERROR;
    if (!c->loc->chains[WEIR_CFG_CHAIN_REQUEST_BODY].n)
        weir_session_skip_request_body_filter(s);
    /* For retry_timeout (whichever upstream a plugin may choose). */
    c->start_ms = weir__app_mono_ms();
    if (c->loc->has_added)
        weir_session_set_added_headers(s, c->loc->added);
    if (c->loc->grpc_idle_timeout_ms) {
        weir_str ct = weir_headers_get(weir_session_req_headers(s), "content-type");
        c->grpc = ct.len >= 16 && strncasecmp(ct.ptr, "application/grpc", 16) == 0;
        if (c->grpc) /* a stream may be quiet for long: not the HTTP limits */
            weir_session_set_client_timeout(s, c->loc->grpc_idle_timeout_ms);
    }
    if (c->loc->request_buffer_bytes) {
        /* Streams (gRPC) must flow as they come; everything else is read
         * first, so a slow client holds no backend connection. */
        weir_str ct = weir_headers_get(weir_session_req_headers(s), "content-type");
        if (!(ct.len >= 16 && strncasecmp(ct.ptr, "application/grpc", 16) == 0)) {
            weir_session_buffer_body(s, (size_t)c->loc->request_buffer_bytes);
            if (c->loc->request_buffer_file_bytes)
                weir_session_buffer_to_file(s, c->loc->request_buffer_file_bytes,
                                            c->cfg->basic.temp_dir);
        }
    }
    /* The location's own rules (echo, body limit, rewrite), then its
     * plugins at this step. */
    return run_chain(s, c, WEIR_STEP_REQUEST, 0);
}

static weir_phase_result upstream_request_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (c)
        weir__trace_upstream_request(s, c);
    return c && c->loc ? run_chain(s, c, WEIR_STEP_PROXY_UPSTREAM, 0) : WEIR_PHASE_CONTINUE;
}

static weir_phase_result upstream_response_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (c)
        weir__trace_upstream_response(s, c);
    return c && c->loc ? run_chain(s, c, WEIR_STEP_UPSTREAM_RESPONSE, 0) : WEIR_PHASE_CONTINUE;
}

static weir_phase_result response_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    weir_headers *h = weir_session_resp_headers(s);
    if (c && c->set_sticky && c->backend && c->loc && h) {
        char cookie[256];
        snprintf(cookie, sizeof(cookie), "%s=%016llx; Path=/; HttpOnly",
                 weir__app_upstream(c)->sticky_cookie,
                 (unsigned long long)weir_backend_id(c->backend));
        weir_headers_add(h, "Set-Cookie", cookie);
    }
    if (c)
        weir__trace_response(s, c);
    if (!c || !c->loc || !c->loc->chains[WEIR_CFG_CHAIN_RESPONSE_BODY].n)
        weir_session_skip_response_body_filter(s);
    return c && c->loc && h ? run_chain(s, c, WEIR_STEP_RESPONSE, 0) : WEIR_PHASE_CONTINUE;
}

/* Runs a body chain (k: WEIR_CFG_CHAIN_REQUEST_BODY or _RESPONSE_BODY)
 * over one piece: each plugin sees what the one before made of it. */
static weir_phase_result run_body_chain(weir_session *s, req_ctx *c, int k, weir_str *chunk,
                                        bool end)
{
    const weir_plugin_chain *ch = &c->loc->chains[k];
    bool restart = false, flush = false;
    if (k == WEIR_CFG_CHAIN_RESPONSE_BODY)
        flush = weir_session_body_flushing(s);
    if (k == WEIR_CFG_CHAIN_REQUEST_BODY) {
        restart = c->body_restart;
        c->body_restart = false;
        c->body_started = true;
    }
    for (size_t i = 0; i < ch->n; i++) {
        const weir_plugin_def *d = ch->v[i].p->def;
        weir_plugin_call call = {s,       ch->v[i].p, plugin_ctx(s, c, &ch->v[i]), c, NULL,
                                 restart, flush};
        weir_phase_result r = k == WEIR_CFG_CHAIN_REQUEST_BODY
                                  ? d->request_body(&call, chunk, end)
                                  : d->response_body(&call, chunk, end);
        if (r != WEIR_PHASE_CONTINUE)
            return r;
    }
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result request_body_filter(weir_session *s, void *ctx, weir_str *chunk, bool end)
{
    req_ctx *c = ctx;
    return c && c->loc ? run_body_chain(s, c, WEIR_CFG_CHAIN_REQUEST_BODY, chunk, end)
                       : WEIR_PHASE_CONTINUE;
}

static weir_phase_result response_body_filter(weir_session *s, void *ctx, weir_str *chunk, bool end)
{
    req_ctx *c = ctx;
    return c && c->loc ? run_body_chain(s, c, WEIR_CFG_CHAIN_RESPONSE_BODY, chunk, end)
                       : WEIR_PHASE_CONTINUE;
}

static void logging(weir_session *s, void *ctx, const weir_session_stats *st)
{
    req_ctx *c = ctx;
    if (c && c->backend) {
        /* Passive health: 5xx answers and upstream errors count as failures;
         * a client that left says nothing about the backend. */
        bool upstream_fault = st->termination[0] == 'S' || st->termination[0] == 's';
        weir_backend_outcome o = st->client_aborted                    ? WEIR_BACKEND_NOT_RELEVANT
                                 : st->status >= 500 || upstream_fault ? WEIR_BACKEND_FAILED
                                                                       : WEIR_BACKEND_OK;
        weir_backend_done(c->backend, o);
        c->backend = NULL;
    }
    if (c && c->loc) {
        const weir_plugin_chain *ch = &c->loc->chains[WEIR_CFG_CHAIN_LOGGING];
        for (size_t i = 0; i < ch->n; i++) {
            weir_plugin_call call = {s,     ch->v[i].p, plugin_ctx(s, c, &ch->v[i]), c, NULL,
                                     false, false};
            ch->v[i].p->def->logging(&call, st);
        }
    }
    if (c && c->srv)
        weir__metrics_request(s, c->srv, c->loc, st);
    if (c)
        weir__trace_end(s, c, st);
    if (!c || !c->srv || !c->srv->access_log || !c->sa->logger)
        return;
    char line[4096], trace_id[33], span_id[17];
    bool traced = weir__trace_ids(c, trace_id, span_id);
    size_t n = weir__access_log_render(c->srv->access_log, s, st, c->loc ? c->loc->name : NULL,
                                       traced ? trace_id : NULL, traced ? span_id : NULL, line,
                                       sizeof(line));
    weir_logger_write(c->sa->logger, line, n);
}

static size_t cache_key(weir_session *s, void *ctx, char *out, size_t cap)
{
    req_ctx *c = ctx;
    return weir__plugin_cache_key(s, c ? c->cache_conf : NULL, out, cap);
}

const weir_proxy_ops weir__app_ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .early_request_filter = early_request_filter,
    .request_filter = request_filter,
    .request_body_filter = request_body_filter,
    .upstream_peer = weir__app_upstream_peer,
    .fail_to_connect = weir__app_fail_to_connect,
    .connected_to_upstream = weir__app_connected_to_upstream,
    .upstream_request_filter = upstream_request_filter,
    .upstream_response_filter = upstream_response_filter,
    .response_filter = response_filter,
    .response_body_filter = response_body_filter,
    .logging = logging,
    .cache_key = cache_key,
};
