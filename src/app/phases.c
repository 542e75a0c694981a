/*
 * phases.c - the weir program's phases: route each request to a location
 * of its server, apply the location's rules (redirect, echo, body limit,
 * rewrite, headers both ways), and log it. Choosing the backend is in
 * balance.c.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/access_log.h"
#include "app/admin/metrics.h"
#include "app/app_int.h"
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

/* The server of sa in snapshot cfg: by position when nothing moved, else
 * by name; NULL if a reload removed it (its last connections finish). */
static weir_cfg_server *find_server(weir_config *cfg, server_app *sa)
{
    if (sa->index < cfg->n_servers && strcmp(cfg->servers[sa->index].name, sa->name) == 0)
        return &cfg->servers[sa->index];
    for (size_t i = 0; i < cfg->n_servers; i++) {
        if (strcmp(cfg->servers[i].name, sa->name) == 0)
            return &cfg->servers[i];
    }
    return NULL;
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
    c->srv = find_server(c->cfg, sa);
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

static weir_phase_result echo(weir_session *s, req_ctx *c)
{
    char body[600];
    weir_str m = weir_session_method(s), t = weir_session_target(s);
    const char *addr = c->srv->n_addrs ? c->srv->addrs[0] : "-";
    int n = snprintf(body, sizeof(body), "echo from %s: %.*s %.*s\n", addr, (int)m.len, m.ptr,
                     (int)(t.len > 256 ? 256 : t.len), t.ptr);
    weir_header h[] = {{WEIR_STR("Content-Type"), WEIR_STR("text/plain")},
                       {WEIR_STR("X-Echo-Upstream"), {addr, strlen(addr)}}};
    if (weir_session_respond(s, 200, h, 2, body, (size_t)n) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

/* Applies the location's rewrite to the normalised path; the query is
 * kept. The result is normalised again by weir_session_set_target, so a
 * capture cannot climb out of the rewritten prefix. Returns WEIR_OK,
 * WEIR_ERR_NOMEM for a result over 8 KiB, or WEIR_ERR_INVAL. */
static int rewrite(weir_session *s, const weir_cfg_location *l)
{
    weir_str path = weir_session_path(s), query = weir_session_query(s);
    char out[8192];
    PCRE2_SIZE out_len = sizeof(out);
    /* UNSET_EMPTY: an optional group that did not match is "" (as nginx). */
    int rc = pcre2_substitute(l->rewrite_re, (PCRE2_SPTR)path.ptr, path.len, 0,
                              PCRE2_SUBSTITUTE_UNSET_EMPTY, weir__thread_match_data(), NULL,
                              (PCRE2_SPTR)l->rewrite_repl, PCRE2_ZERO_TERMINATED,
                              (PCRE2_UCHAR *)out, &out_len);
    if (rc == 0)
        return WEIR_OK; /* no match: path unchanged */
    if (rc == PCRE2_ERROR_NOMEMORY || (rc > 0 && out_len + 1 + query.len >= sizeof(out)))
        return WEIR_ERR_NOMEM;
    if (rc < 0)
        return WEIR_ERR_INVAL;
    weir_str target = weir_session_target(s);
    if (memchr(target.ptr, '?', target.len)) { /* "?" alone is kept too */
        out[out_len++] = '?';
        memcpy(out + out_len, query.ptr, query.len);
        out_len += query.len;
    }
    if (out_len == 0 || out[0] != '/')
        return WEIR_ERR_INVAL;
    return weir_session_set_target(s, out, out_len);
}

/* 301 to the same host and target over https (the Host's port replaced
 * by https_port, omitted when 443). */
static weir_phase_result redirect_https(weir_session *s, weir_str host, uint32_t port)
{
    if (host.len == 0 || host.len > 255)
        return weir__app_answer(s, 400, "Bad Request");
    size_t hl = host.len;
    if (host.ptr[0] == '[') { /* [v6]:port */
        const char *e = memchr(host.ptr, ']', host.len);
        if (e)
            hl = (size_t)(e - host.ptr) + 1;
    } else {
        const char *colon = memchr(host.ptr, ':', host.len);
        if (colon)
            hl = (size_t)(colon - host.ptr);
    }
    weir_str target = weir_session_target(s);
    size_t cap = hl + target.len + 32;
    char *loc = weir_session_alloc(s, cap);
    if (!loc)
        return WEIR_PHASE_ERROR;
    int n = port == 443 ? snprintf(loc, cap, "https://%.*s", (int)hl, host.ptr)
                        : snprintf(loc, cap, "https://%.*s:%u", (int)hl, host.ptr, port);
    memcpy(loc + n, target.ptr, target.len);
    weir_header h[2] = {{WEIR_STR("Location"), {loc, (size_t)n + target.len}},
                        {WEIR_STR("Content-Type"), WEIR_STR("text/plain")}};
    static const char body[] = "301 Moved Permanently\n";
    if (weir_session_respond(s, 301, h, 2, body, sizeof(body) - 1) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static weir_phase_result request_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (!c)
        return WEIR_PHASE_ERROR;
    if (!c->srv)
        return weir__app_answer(s, 503, "Service Unavailable"); /* server removed by a reload */
    weir_str host = weir_headers_get(weir_session_req_headers(s), "host");
    if (c->srv->redirect_https)
        return redirect_https(s, host, c->srv->https_port);
    c->loc = weir__router_match(c->srv->router, host, weir_session_path(s));
    if (!c->loc)
        return weir__app_answer(s, 404, "Not Found");
    if (c->loc->echo)
        return echo(s, c);
    if (c->loc->has_max_body)
        weir_session_set_body_limit(s, c->loc->client_max_body_size);
    if (c->loc->upstream && c->loc->upstream->retry_timeout_ms)
        c->start_ms = weir__app_mono_ms();
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
    if (c->loc->rewrite_re) {
        int rc = rewrite(s, c->loc);
        weir_str id = weir_session_request_id(s);
        if (rc == WEIR_ERR_NOMEM) {
            weir_log(WEIR_LEVEL_WARN, "location %s: rewritten target over 8 KiB (request %.*s)",
                     c->loc->name, (int)id.len, id.ptr);
            return weir__app_answer(s, 414, "URI Too Long");
        }
        if (rc != WEIR_OK) {
            /* The captures come from the client's path: its request. */
            weir_log(WEIR_LEVEL_WARN,
                     "location %s: the rewritten target is not a safe path (request %.*s)",
                     c->loc->name, (int)id.len, id.ptr);
            return weir__app_answer(s, 400, "Bad Request");
        }
    }
    return WEIR_PHASE_CONTINUE;
}

static void apply_headers(weir_headers *h, const weir_cfg_location *l, bool request)
{
    const weir_cfg_headers *rm = request ? &l->proxy_remove : &l->resp_remove;
    const weir_cfg_headers *set = request ? &l->proxy_set : &l->resp_set;
    const weir_cfg_headers *add = request ? &l->proxy_add : &l->resp_add;
    for (size_t i = 0; i < rm->n; i++)
        weir_headers_remove(h, rm->v[i].name);
    for (size_t i = 0; i < set->n; i++)
        weir_headers_set(h, set->v[i].name, set->v[i].value);
    for (size_t i = 0; i < add->n; i++)
        weir_headers_add(h, add->v[i].name, add->v[i].value);
}

static weir_phase_result upstream_request_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (c->loc)
        apply_headers(weir_session_req_headers(s), c->loc, true);
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result response_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    weir_headers *h = weir_session_resp_headers(s);
    if (c && c->loc && h && !c->loc->echo)
        apply_headers(h, c->loc, false);
    if (c && c->set_sticky && c->backend && c->loc && h) {
        char cookie[256];
        snprintf(cookie, sizeof(cookie), "%s=%016llx; Path=/; HttpOnly",
                 c->loc->upstream->sticky_cookie, (unsigned long long)weir_backend_id(c->backend));
        weir_headers_add(h, "Set-Cookie", cookie);
    }
    return WEIR_PHASE_CONTINUE;
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
    if (c && c->srv)
        weir__metrics_request(s, c->srv, c->loc, st);
    if (!c || !c->srv || !c->srv->access_log || !c->sa->logger)
        return;
    char line[4096];
    size_t n = weir__access_log_render(c->srv->access_log, s, st, c->loc ? c->loc->name : NULL,
                                       line, sizeof(line));
    weir_logger_write(c->sa->logger, line, n);
}

const weir_proxy_ops weir__app_ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .request_filter = request_filter,
    .upstream_peer = weir__app_upstream_peer,
    .fail_to_connect = weir__app_fail_to_connect,
    .connected_to_upstream = weir__app_connected_to_upstream,
    .upstream_request_filter = upstream_request_filter,
    .response_filter = response_filter,
    .logging = logging,
};
