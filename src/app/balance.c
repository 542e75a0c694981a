/*
 * balance.c - choosing the backend of each request: the location's
 * upstream, hash keys (ip, header, cookie, query, uri), sticky cookies,
 * a router that names the backend (router = "resp://..."), and which
 * failures are retried on another backend.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/admin/metrics.h"
#include "app/app_int.h"
#include "app/fields.h"
#include "app/otel/request.h"
#include "app/vars.h"

/* The consistent-hash key of the request. */
static uint64_t hash_key(weir_session *s, const weir_cfg_upstream *u)
{
    weir_str v = {"", 0};
    switch (u->hash_key) {
    case WEIR_HASH_NONE:
        return 0;
    case WEIR_HASH_IP:
        v = weir_session_client_ip(s);
        break;
    case WEIR_HASH_URI:
        v = weir_session_target(s);
        break;
    case WEIR_HASH_PATH:
        v = weir_session_path(s);
        break;
    case WEIR_HASH_HEADER:
        v = weir_headers_get(weir_session_req_headers(s), u->hash_name);
        break;
    case WEIR_HASH_COOKIE:
        v = weir__cookie(weir_session_req_headers(s), u->hash_name);
        break;
    case WEIR_HASH_QUERY:
        v = weir__query_param(weir_session_query(s), u->hash_name);
        break;
    }
    return weir_lb_hash(v.ptr ? v.ptr : "", v.ptr ? v.len : 0);
}

/* The sticky backend named by the request's cookie, if usable. */
static weir_backend *sticky_backend(weir_session *s, const weir_cfg_upstream *u)
{
    weir_str v = weir__cookie(weir_session_req_headers(s), u->sticky_cookie);
    if (v.len != 16)
        return NULL;
    uint64_t id = 0;
    for (size_t i = 0; i < 16; i++) {
        char ch = v.ptr[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return NULL;
        id = id << 4 | (uint64_t)d;
    }
    return weir_upstream_find(u->lb, id);
}

/* RFC 9110 9.2.2: sending these twice does what sending them once does. */
static bool idempotent(weir_str m)
{
    static const char *const v[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (m.len == strlen(v[i]) && memcmp(m.ptr, v[i], m.len) == 0)
            return true;
    }
    return false;
}

/* The failures beyond connect and reset the library asks about: a timeout
 * or a 5xx may mean the backend did the work, so only idempotent requests
 * are sent again unless non_idempotent says otherwise (as nginx). */
static uint8_t retry_bits(weir_session *s, const weir_cfg_upstream *u)
{
    if (u->max_retries == 0 ||
        (!(u->retry_on & WEIR_CFG_RETRY_NON_IDEMPOTENT) && !idempotent(weir_session_method(s))))
        return 0;
    uint8_t r = 0;
    if (u->retry_on & WEIR_CFG_RETRY_TIMEOUT)
        r |= WEIR_RETRY_TIMEOUT;
    if (u->retry_on & WEIR_CFG_RETRY_502)
        r |= WEIR_RETRY_502;
    if (u->retry_on & WEIR_CFG_RETRY_503)
        r |= WEIR_RETRY_503;
    if (u->retry_on & WEIR_CFG_RETRY_504)
        r |= WEIR_RETRY_504;
    return r;
}

/* The location's and upstream's settings for the attempt into *peer:
 * the location's win over the upstream's, which win over the server's
 * defaults already there. u may be NULL (a router's backend without an
 * upstream). */
static void peer_settings(weir_session *s, const req_ctx *c, const weir_cfg_upstream *u,
                          weir_peer *peer)
{
    const weir_cfg_location *l = c->loc;
    if (u && u->connection_timeout_ms)
        peer->connect_timeout_ms = u->connection_timeout_ms;
    if (l->connect_timeout_ms)
        peer->connect_timeout_ms = l->connect_timeout_ms;
    if (u && u->read_timeout_ms)
        peer->read_timeout_ms = u->read_timeout_ms;
    if (l->read_timeout_ms)
        peer->read_timeout_ms = l->read_timeout_ms;
    if (u && u->write_timeout_ms)
        peer->write_timeout_ms = u->write_timeout_ms;
    if (l->write_timeout_ms)
        peer->write_timeout_ms = l->write_timeout_ms;
    if (u && u->idle_timeout_ms)
        peer->idle_timeout_ms = u->idle_timeout_ms;
    if (c->grpc)
        peer->read_timeout_ms = peer->write_timeout_ms = l->grpc_idle_timeout_ms;
    if (!u)
        return;
    /* total_connection_timeout bounds the whole connection set-up (TCP and
     * the TLS handshake), as in Pingora. */
    if (u->total_connection_timeout_ms && u->total_connection_timeout_ms < peer->connect_timeout_ms)
        peer->connect_timeout_ms = u->total_connection_timeout_ms;
    peer->keepalive = u->keepalive;
    peer->max_connection_age_ms = u->max_connection_age_ms;
    peer->max_requests = u->max_requests;
    peer->retry_on = retry_bits(s, u);
    peer->queue_timeout_ms = u->queue_timeout_ms;
    peer->h2 = u->h2;
    peer->h2_or_h1 = u->h2_or_h1;
    weir__app_peer_tls(u, peer);
    peer->send_proxy = u->send_proxy;
}

/* ---- router = "resp://..." ---- */

static weir_phase_result select_peer(weir_session *s, req_ctx *c, weir_peer *peer);

/* The router did not name a backend: the upstream, or an error. */
static weir_phase_result route_missed(weir_session *s, req_ctx *c, weir_peer *peer, int status)
{
    weir__metrics_router(c->loc, status == 200   ? WEIR_METRICS_ROUTER_NIL
                                 : status == 504 ? WEIR_METRICS_ROUTER_TIMEOUT
                                                 : WEIR_METRICS_ROUTER_ERROR);
    if (c->loc->router_fallback_error || !weir__app_upstream(c))
        return status == 504   ? weir__app_answer(s, 504, "Gateway Timeout")
               : status == 200 ? weir__app_answer(s, 503, "Service Unavailable")
                               : weir__app_answer(s, 502, "Bad Gateway");
    return select_peer(s, c, peer);
}

static void router_answered(void *arg, int error, const weir_resp_value *v)
{
    req_ctx *c = arg;
    weir_session *s = c->route_s;
    weir_peer *peer = c->route_peer;
    c->route_peer = NULL;
    weir_phase_result r;
    if (error < 0) {
        r = route_missed(s, c, peer, error == -ETIMEDOUT ? 504 : 502);
    } else if (v->type == WEIR_RESP_NIL) {
        r = route_missed(s, c, peer, 200);
    } else if (v->type == WEIR_RESP_BULK && v->n < sizeof(c->route_text)) {
        memcpy(c->route_text, v->p, v->n);
        c->route_text[v->n] = '\0';
        if (weir_addr_parse(c->route_text, &c->route_ss, &c->route_len) == 0) {
            c->route_ok = true;
            weir__metrics_router(c->loc, WEIR_METRICS_ROUTER_ROUTED);
            r = select_peer(s, c, peer);
        } else {
            weir_log(WEIR_LEVEL_DEBUG, "router %s answered '%s', not an ip:port",
                     c->loc->router_text, c->route_text);
            r = route_missed(s, c, peer, 502);
        }
    } else {
        r = route_missed(s, c, peer, 502); /* an error reply, or not a string */
    }
    weir_session_resume(s, r);
}

/* Asks the router for the request's backend: PENDING until it answers. */
static weir_phase_result ask_router(weir_session *s, req_ctx *c, weir_peer *peer)
{
    const weir_cfg_location *l = c->loc;
    weir_str key = l->router_key ? weir__tmpl_render(l->router_key, s)
                                 : (weir_str){l->router_key_text, strlen(l->router_key_text)};
    if (!key.ptr)
        return route_missed(s, c, peer, 502);
    weir_str argv[2] = {WEIR_STR("GET"), key};
    c->route_s = s;
    c->route_peer = peer;
    if (weir_resp_client_call(l->router, argv, 2, router_answered, c) != WEIR_OK) {
        c->route_peer = NULL;
        return route_missed(s, c, peer, 502); /* down or busy: at once */
    }
    return WEIR_PHASE_PENDING;
}

weir_phase_result weir__app_upstream_peer(weir_session *s, void *ctx, weir_peer *peer)
{
    req_ctx *c = ctx;
    if (c->loc->router && !c->routed && !c->upstream) {
        c->routed = true;
        return ask_router(s, c, peer);
    }
    return select_peer(s, c, peer);
}

static weir_phase_result choose_peer(weir_session *s, req_ctx *c, weir_peer *peer);

/* The attempt's backend; a chosen one starts the attempt's span. */
static weir_phase_result select_peer(weir_session *s, req_ctx *c, weir_peer *peer)
{
    weir_phase_result r = choose_peer(s, c, peer);
    if (r == WEIR_PHASE_CONTINUE)
        weir__trace_attempt(s, c);
    return r;
}

static weir_phase_result choose_peer(weir_session *s, req_ctx *c, weir_peer *peer)
{
    if (c->route_ok && !c->route_used) {
        /* The router's backend, once: a retry goes to the upstream. */
        c->route_used = true;
        memcpy(&peer->addr, &c->route_ss, sizeof(peer->addr));
        peer->addr_len = c->route_len;
        peer->addr_text = c->route_text;
        peer_settings(s, c, weir__app_upstream(c), peer);
        return WEIR_PHASE_CONTINUE;
    }
    const weir_cfg_upstream *u = weir__app_upstream(c);
    if (!u || !u->lb)
        return weir__app_answer(s, c->route_used ? 502 : 503,
                                c->route_used ? "Bad Gateway" : "Service Unavailable");
    weir_backend *b = c->next; /* a retry after a 5xx status chose it already */
    c->next = NULL;
    bool from_cookie = false;
    if (!b && u->sticky_cookie && c->n_tried == 0) {
        b = sticky_backend(s, u);
        from_cookie = b != NULL;
    }
    if (!b)
        b = weir_upstream_select(u->lb, hash_key(s, u), c->tried, c->n_tried);
    /* Any backend but the cookie's (first pick or a retry) re-pins the client. */
    c->set_sticky = u->sticky_cookie && !from_cookie;
    if (!b) {
        /* Nothing usable: at once 503, or after this request's failures
         * what the last one was: 504 for a timeout, else 502. */
        if (c->n_tried && weir_session_failure(s) == WEIR_FAILURE_TIMEOUT)
            return weir__app_answer(s, 504, "Gateway Timeout");
        if (c->n_tried)
            return weir__app_answer(s, 502, "Bad Gateway");
        return weir__app_answer(s, 503, "Service Unavailable");
    }
    c->backend = b;
    weir_backend_peer(b, peer);
    peer_settings(s, c, u, peer);
    return WEIR_PHASE_CONTINUE;
}

void weir__app_peer_tls(const weir_cfg_upstream *u, weir_peer *peer)
{
    if (!u->tls)
        return;
    peer->tls = true;
    peer->tls_client = u->tls_client;
    if (u->sni)
        snprintf(peer->sni, sizeof(peer->sni), "%s", u->sni);
}

bool weir__app_fail_to_connect(weir_session *s, void *ctx, const weir_peer *peer, int error,
                               int attempt)
{
    req_ctx *c = ctx;
    const weir_cfg_upstream *u = weir__app_upstream(c);
    weir__trace_failed(s, c);
    if (c->backend) {
        if (c->n_tried < MAX_TRIED)
            c->tried[c->n_tried++] = weir_backend_id(c->backend);
        weir_backend_done(c->backend, WEIR_BACKEND_FAILED);
        c->backend = NULL;
    }
    if (!u || (uint32_t)attempt > u->max_retries || c->n_tried >= MAX_TRIED)
        return false;
    weir_failure kind = weir_session_failure(s);
    uint32_t need = kind == WEIR_FAILURE_CONNECT   ? WEIR_CFG_RETRY_CONNECT
                    : kind == WEIR_FAILURE_RESET   ? WEIR_CFG_RETRY_RESET
                    : kind == WEIR_FAILURE_TIMEOUT ? WEIR_CFG_RETRY_TIMEOUT
                    : kind == WEIR_FAILURE_STATUS
                        ? WEIR_CFG_RETRY_502 | WEIR_CFG_RETRY_503 | WEIR_CFG_RETRY_504
                        : 0;
    if (!(u->retry_on & need))
        return false;
    /* A reset after the body went out may come after the backend acted on
     * it: sent again only if doing so twice is harmless. */
    if (kind == WEIR_FAILURE_RESET && weir_session_body_sent(s) &&
        !(u->retry_on & WEIR_CFG_RETRY_NON_IDEMPOTENT) && !idempotent(weir_session_method(s)))
        return false;
    if (u->retry_timeout_ms && weir__app_mono_ms() - c->start_ms >= u->retry_timeout_ms)
        return false;
    if (kind == WEIR_FAILURE_STATUS) {
        /* The backend's answer is dropped only if another backend takes
         * the request; else the client gets that answer. */
        c->next = weir_upstream_select(u->lb, hash_key(s, u), c->tried, c->n_tried);
        if (c->next)
            weir__metrics_retry(u, kind);
        return c->next != NULL;
    }
    /* upstream_peer picks another backend, each at most once. */
    weir__metrics_retry(u, kind);
    return true;
}

void weir__app_connected_to_upstream(weir_session *s, void *ctx, const weir_peer *peer, bool reused)
{
    req_ctx *c = ctx;
    if (c)
        weir__trace_connected(s, c, reused);
    if (c && c->backend)
        weir_backend_note_connection(c->backend, reused);
    if (c && c->body_started) /* a retry: the body goes again from its start */
        c->body_restart = true;
}
