/*
 * subrequest.c - HTTP requests of a phase's own (weir/subrequest.h).
 *
 * A small client state machine on the session's worker, on the same parts
 * as the proxy session: connections from the shared pool (upool.h) or
 * the HTTP/2 client (h2_client.h), the HTTP/1 codec (h1_exchange.h):
 *
 *   CONNECT -> EXCHANGE (request out, response head and body in) -> DONE
 *
 * The result always goes out from a 0 ms timer, never from inside
 * weir_subrequest_start or a session's own code, so a callback may start
 * sub-requests, resume its session or answer it. The same timer is the
 * deadline before that; weir_subrequest_cancel stops it and frees at once.
 *
 * Each worker keeps its sub-requests in a list: the worker's exit ends
 * those left (the callbacks see WEIR_SUBREQ_CANCELLED) before its loop and
 * its pooled connections go.
 */
#include "weir/subrequest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/exchange.h"
#include "http/h1_exchange.h"
#include "http/h2_client.h"
#include "http/msg.h"
#include "net/tls.h"
#include "net/upool.h"
#include "proxy/session-t.h"
#include "proxy/subrequest.h"

#define DEFAULT_MAX_BODY (1024 * 1024)
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_HEAD (64 * 1024)
#define ARENA_INLINE 2048

typedef enum { SR_CONNECT, SR_EXCHANGE, SR_BODY, SR_DONE } sr_state;

struct weir_subrequest {
    weir_loop *loop;
    weir_session *s;                  /* NULL: detached */
    weir_subrequest *s_next, *s_prev; /* in its session's list */
    weir_subrequest *w_next, *w_prev; /* in the worker's list */
    weir_subrequest_cb cb;
    void *arg;
    weir_peer peer;
    sr_state state;
    bool running, rerun;
    bool reused;  /* the connection came from the pool */
    bool retried; /* a stale pooled connection was replaced once */
    bool head_queued;
    weir_upconn *up;
    weir_h1x upx;
    weir_h2us *h2;
    weir_exchange *ex;
    uint64_t deadline_ms, connect_deadline_ms; /* loop clock */
    weir_timer timer;                          /* the deadline, then the delivery */
    size_t max_body;
    weir_str body_out; /* request body (arena copy) */
    char *body;        /* response body (malloc) */
    size_t body_len, body_cap;
    weir_subrequest_result res;
    weir_arena arena;
    weir_msg req, resp;
    char arena_first[ARENA_INLINE];
};

static __thread weir_subrequest *live;
static __thread size_t n_live;

size_t weir_subrequest_count(void)
{
    return n_live;
}

/* ---- lists ---- */

static void link_req(weir_subrequest *r)
{
    r->w_next = live;
    if (live)
        live->w_prev = r;
    live = r;
    n_live++;
    if (r->s) {
        r->s_next = r->s->subreqs;
        if (r->s_next)
            r->s_next->s_prev = r;
        r->s->subreqs = r;
    }
}

static void unlink_req(weir_subrequest *r)
{
    if (r->w_prev)
        r->w_prev->w_next = r->w_next;
    else if (live == r)
        live = r->w_next;
    if (r->w_next)
        r->w_next->w_prev = r->w_prev;
    r->w_next = r->w_prev = NULL;
    n_live--;
    if (r->s) {
        if (r->s_prev)
            r->s_prev->s_next = r->s_next;
        else
            r->s->subreqs = r->s_next;
        if (r->s_next)
            r->s_next->s_prev = r->s_prev;
        r->s_next = r->s_prev = NULL;
    }
}

/* ---- the connection ---- */

static void drop_conn(weir_subrequest *r, bool reusable)
{
    if (r->h2) {
        weir__h2u_release(r->h2);
        r->h2 = NULL;
    }
    if (r->up) {
        weir_conn *c = &r->up->conn;
        if (reusable && c->rstart == c->rend && r->upx.out_keep_alive && !r->resp.close)
            weir__upool_put(r->up, r->peer.idle_timeout_ms, r->peer.keepalive);
        else
            weir__upconn_close(r->up, !reusable);
        r->up = NULL;
    }
    r->ex = NULL;
}

static void free_req(weir_subrequest *r)
{
    weir__timer_stop(r->loop, &r->timer);
    drop_conn(r, false);
    free(r->body);
    weir__arena_reset(&r->arena);
    free(r);
}

/* ---- the end ---- */

static void deliver(weir_timer *t)
{
    weir_subrequest *r = weir_container_of(t, weir_subrequest, timer);
    weir_session *s = r->s;
    unlink_req(r);
    r->res.body = (weir_str){r->body ? r->body : "", r->body_len};
    weir_subrequest_cb cb = r->cb;
    cb(s, r->arg, &r->res);
    free_req(r);
}

/* Ends r with its result in r->res: the callback runs from a 0 ms timer. */
static void end(weir_subrequest *r)
{
    r->state = SR_DONE;
    weir__timer_start(r->loop, &r->timer, 0, deliver);
}

static void fail(weir_subrequest *r, int code, const char *why)
{
    static const int status[] = {
        [WEIR_SUBREQ_CONNECT] = 502,   [WEIR_SUBREQ_TLS] = 502,       [WEIR_SUBREQ_PROTOCOL] = 502,
        [WEIR_SUBREQ_TIMEOUT] = 504,   [WEIR_SUBREQ_TOO_LARGE] = 502, [WEIR_SUBREQ_CANCELLED] = 499,
        [WEIR_SUBREQ_NO_MEMORY] = 500,
    };
    drop_conn(r, false);
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
    r->res = (weir_subrequest_result){
        .status = status[code], .error_code = code, .error = why, .reused = r->reused};
    end(r);
}

static void on_timer(weir_timer *t)
{
    weir_subrequest *r = weir_container_of(t, weir_subrequest, timer);
    uint64_t now = weir__loop_now(r->loop);
    if (now >= r->deadline_ms) {
        fail(r, WEIR_SUBREQ_TIMEOUT, "timed out");
        return;
    }
    if (r->state == SR_CONNECT && r->connect_deadline_ms && now >= r->connect_deadline_ms) {
        fail(r, WEIR_SUBREQ_TIMEOUT, "connect timed out");
        return;
    }
    uint64_t at = r->deadline_ms;
    if (r->state == SR_CONNECT && r->connect_deadline_ms && r->connect_deadline_ms < at)
        at = r->connect_deadline_ms;
    weir__timer_start(r->loop, &r->timer, at - now, on_timer);
}

/* ---- the exchange ---- */

static void run(weir_subrequest *r);

static void wake(void *owner)
{
    run(owner);
}

static void connect_failed(weir_subrequest *r, int err)
{
    if (err == -EPROTO)
        fail(r, WEIR_SUBREQ_TLS, "TLS handshake failed");
    else if (err == -ETIMEDOUT)
        fail(r, WEIR_SUBREQ_TIMEOUT, "connect timed out");
    else
        fail(r, WEIR_SUBREQ_CONNECT, "cannot connect");
}

/* Opens the connection or stream: from the pool when one is idle. */
static void start_conn(weir_subrequest *r)
{
    int err = 0;
    r->state = SR_CONNECT;
    r->head_queued = false;
    r->connect_deadline_ms =
        r->peer.connect_timeout_ms ? weir__loop_now(r->loop) + r->peer.connect_timeout_ms : 0;
    if (r->peer.h2 || (r->peer.h2_or_h1 && r->peer.tls && weir__h2u_usable(&r->peer))) {
        bool reused = false;
        r->h2 = weir__h2u_open(r->loop, &r->peer, &r->arena, &r->resp, r, wake, &err, &reused);
        if (!r->h2) {
            connect_failed(r, err);
            return;
        }
        r->reused = reused;
        return;
    }
    if (!r->retried) {
        r->up = weir__upool_take(r->loop, &r->peer, NULL, r, wake);
        if (r->up) {
            r->reused = true;
            return;
        }
    }
    r->reused = false;
    r->up = weir__upconn_connect(r->loop, &r->peer, NULL, r, wake, &err);
    if (!r->up)
        connect_failed(r, err);
}

/* CONNECT: the connection is ready; the exchange goes on it. Returns
 * false if r waits or ended. */
static bool step_connect(weir_subrequest *r)
{
    int rc = WEIR_OK;
    if (r->h2)
        rc = weir__h2u_ready(r->h2);
    else if (!r->reused)
        rc = weir__upconn_connect_result(r->up);
    if (rc == WEIR_AGAIN)
        return false;
    if (rc < 0) {
        connect_failed(r, rc);
        return false;
    }
    if (!r->h2 && r->peer.h2_or_h1 && r->up->conn.ssl) {
        weir_str p = weir__tls_alpn(r->up->conn.ssl);
        if (p.len == 2 && memcmp(p.ptr, "h2", 2) == 0) {
            int err = 0;
            r->h2 = weir__h2u_adopt(&r->up->conn, &r->peer, &r->arena, &r->resp, r, wake, &err);
            weir__upconn_close(r->up, false); /* only its empty shell */
            r->up = NULL;
            if (!r->h2) {
                connect_failed(r, err);
                return false;
            }
            return step_connect(r); /* the backend's SETTINGS */
        }
    }
    if (r->h2) {
        r->ex = weir__h2u_exchange(r->h2);
    } else {
        weir__h1x_init_upstream(&r->upx, &r->up->conn, &r->arena, MAX_HEAD);
        r->upx.req_method = r->req.method;
        r->ex = &r->upx.x;
    }
    r->state = SR_EXCHANGE;
    return true;
}

/* A pooled connection the backend closed just as it was taken: once, the
 * request goes again on a new one (nothing of the response came). */
static bool retry_stale(weir_subrequest *r)
{
    if (!r->up || !r->reused || r->retried || r->up->conn.rend > 0)
        return false;
    r->retried = true;
    drop_conn(r, false);
    start_conn(r);
    return true;
}

static int keep_headers(weir_subrequest *r)
{
    const weir_headers *h = &r->resp.headers;
    weir_header *v = weir__arena_alloc(&r->arena, (h->n ? h->n : 1) * sizeof(*v));
    if (!v)
        return WEIR_ERR_NOMEM;
    for (uint32_t i = 0; i < h->n; i++) {
        char *n = weir__arena_dup(&r->arena, h->v[i].name.ptr, h->v[i].name.len);
        char *val = weir__arena_dup(&r->arena, h->v[i].value.ptr, h->v[i].value.len);
        if (!n || !val)
            return WEIR_ERR_NOMEM;
        v[i] = (weir_header){{n, h->v[i].name.len}, {val, h->v[i].value.len}};
    }
    r->res.headers = v;
    r->res.n_headers = h->n;
    return WEIR_OK;
}

static int add_body(weir_subrequest *r, weir_str seg)
{
    if (seg.len > r->max_body - r->body_len)
        return WEIR_EX_E_TOO_LARGE;
    if (r->body_len + seg.len > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + seg.len)
            cap *= 2;
        if (cap > r->max_body)
            cap = r->max_body;
        char *nb = realloc(r->body, cap);
        if (!nb)
            return WEIR_ERR_NOMEM;
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, seg.ptr, seg.len);
    r->body_len += seg.len;
    return WEIR_OK;
}

static void exchange_failed(weir_subrequest *r, int rc)
{
    if (rc == WEIR_EX_E_TOO_LARGE)
        fail(r, WEIR_SUBREQ_TOO_LARGE, "response body over the limit");
    else if (rc == WEIR_ERR_NOMEM)
        fail(r, WEIR_SUBREQ_NO_MEMORY, "out of memory");
    else if (rc == WEIR_EX_E_HEAD || rc == WEIR_EX_E_HEAD_TOO_LARGE || rc == WEIR_EX_E_FRAMING)
        fail(r, WEIR_SUBREQ_PROTOCOL, "malformed response");
    else
        fail(r, WEIR_SUBREQ_PROTOCOL, "connection closed before the whole response");
}

/* EXCHANGE and BODY: request out, response in. */
static void step_exchange(weir_subrequest *r)
{
    weir_exchange *ex = r->ex;
    int rc;
    if (!r->head_queued) {
        rc = ex->ops->write_head(ex, &r->req);
        if (rc == WEIR_OK && r->body_out.len)
            rc = ex->ops->write_body(ex, &r->body_out, 1);
        if (rc == WEIR_OK)
            rc = ex->ops->write_end(ex, (weir_str){"", 0});
        if (rc < 0) {
            exchange_failed(r, rc);
            return;
        }
        r->head_queued = true;
    }
    rc = ex->ops->flush(ex);
    if (rc < 0 && rc != WEIR_AGAIN) {
        if (!retry_stale(r))
            exchange_failed(r, rc);
        return;
    }
    if (r->state == SR_EXCHANGE) {
        rc = ex->ops->read_head(ex, &r->resp);
        if (rc == WEIR_AGAIN)
            return;
        if (rc < 0) {
            if (!retry_stale(r))
                exchange_failed(r, rc);
            return;
        }
        if (r->resp.status == 101) {
            fail(r, WEIR_SUBREQ_PROTOCOL, "the backend switched protocols");
            return;
        }
        if (keep_headers(r) < 0) {
            fail(r, WEIR_SUBREQ_NO_MEMORY, "out of memory");
            return;
        }
        r->res.status = r->resp.status;
        if (r->resp.body == WEIR_BODY_KNOWN && r->resp.content_length > r->max_body) {
            fail(r, WEIR_SUBREQ_TOO_LARGE, "response body over the limit");
            return;
        }
        r->state = SR_BODY;
    }
    for (;;) {
        weir_str segs[8], trailers = {0};
        size_t n = 0;
        rc = r->resp.body == WEIR_BODY_NONE ? WEIR_DONE
                                            : ex->ops->read_body(ex, segs, 8, &n, &trailers);
        if (rc == WEIR_AGAIN)
            return;
        if (rc == WEIR_DONE)
            break;
        if (rc < 0) {
            exchange_failed(r, rc);
            return;
        }
        for (size_t i = 0; i < n && rc >= 0; i++)
            rc = add_body(r, segs[i]);
        ex->ops->consume_body(ex);
        if (rc < 0) {
            exchange_failed(r, rc);
            return;
        }
    }
    /* Whole: the connection goes back to the pool. */
    weir__timer_stop(r->loop, &r->timer);
    drop_conn(r, true);
    r->res.error_code = WEIR_SUBREQ_OK;
    r->res.error = NULL;
    r->res.reused = r->reused;
    end(r);
}

static void run(weir_subrequest *r)
{
    if (r->running) {
        r->rerun = true;
        return;
    }
    r->running = true;
    do {
        r->rerun = false;
        if (r->state == SR_CONNECT && !step_connect(r))
            continue;
        if (r->state == SR_EXCHANGE || r->state == SR_BODY)
            step_exchange(r);
    } while (r->rerun && r->state != SR_DONE);
    r->running = false;
}

/* ---- the request ---- */

static bool field_ok(weir_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '\r' || c == '\n' || c == '\0')
            return false;
    }
    return true;
}

static bool token_ok(weir_str s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(extra, c)))
            return false;
    }
    return true;
}

/* Fields weir sets itself (the framing and the connection's). */
static bool own_field(weir_str n)
{
    static const char *const names[] = {"host",       "content-length",  "transfer-encoding",
                                        "connection", "keep-alive",      "upgrade",
                                        "te",         "proxy-connection"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (n.len == strlen(names[i]) && strncasecmp(n.ptr, names[i], n.len) == 0)
            return true;
    }
    return false;
}

static weir_str dup_str(weir_arena *a, weir_str s, bool *ok)
{
    char *p = weir__arena_dup(a, s.len ? s.ptr : "", s.len);
    if (!p)
        *ok = false;
    return (weir_str){p ? p : "", p ? s.len : 0};
}

/* Builds r->req from spec, copying everything into r's arena. */
static bool build_request(weir_subrequest *r, const weir_subrequest_spec *spec)
{
    weir_str method = spec->method.len ? spec->method : WEIR_STR("GET");
    weir_str target = spec->target.len ? spec->target : WEIR_STR("/");
    if (!token_ok(method) || !field_ok(target) || target.ptr[0] != '/' ||
        memchr(target.ptr, ' ', target.len) || !field_ok(spec->authority))
        return false;
    char addr[WEIR_ADDR_STRLEN];
    weir_str authority = spec->authority;
    if (!authority.len && r->peer.sni[0])
        authority = (weir_str){r->peer.sni, strlen(r->peer.sni)};
    if (!authority.len) {
        weir_peer_addr_str(&r->peer, addr, sizeof(addr));
        authority = (weir_str){addr, strlen(addr)};
    }
    bool ok = true;
    memset(&r->req, 0, WEIR_MSG_RESET_LEN);
    weir__headers_init(&r->req.headers, &r->arena);
    r->req.method = dup_str(&r->arena, method, &ok);
    r->req.target = dup_str(&r->arena, target, &ok);
    r->req.version = 11;
    if (weir__headers_push(&r->req.headers, WEIR_STR("Host"), dup_str(&r->arena, authority, &ok)) <
        0)
        return false;
    for (size_t i = 0; i < spec->n_headers; i++) {
        weir_str n = spec->headers[i].name, v = spec->headers[i].value;
        if (!token_ok(n) || !field_ok(v))
            return false;
        if (own_field(n))
            continue;
        if (weir__headers_push(&r->req.headers, dup_str(&r->arena, n, &ok),
                               dup_str(&r->arena, v, &ok)) < 0)
            return false;
    }
    r->body_out = dup_str(&r->arena, spec->body, &ok);
    bool wants_length = spec->body.len || (method.len == 4 && memcmp(method.ptr, "POST", 4) == 0) ||
                        (method.len == 3 && memcmp(method.ptr, "PUT", 3) == 0) ||
                        (method.len == 5 && memcmp(method.ptr, "PATCH", 5) == 0);
    r->req.body = wants_length ? WEIR_BODY_KNOWN : WEIR_BODY_NONE;
    r->req.content_length = spec->body.len;
    memset(&r->resp, 0, WEIR_MSG_RESET_LEN);
    weir__headers_init(&r->resp.headers, &r->arena);
    return ok;
}

weir_subrequest *weir__subreq_start(weir_loop *loop, weir_session *s, const weir_peer *peer,
                                    const weir_subrequest_spec *spec, weir_subrequest_cb cb,
                                    void *arg)
{
    if (!loop || !peer || !spec || !cb || peer->addr_len == 0)
        return NULL;
    weir_subrequest *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->s = spec->detached ? NULL : s;
    r->cb = cb;
    r->arg = arg;
    r->peer = *peer;
    r->peer.conn_limit = NULL;
    r->peer.addr_text = NULL;
    if (!r->peer.idle_timeout_ms)
        r->peer.idle_timeout_ms = 60000;
    r->max_body = spec->max_body ? spec->max_body : DEFAULT_MAX_BODY;
    weir__arena_init(&r->arena, r->arena_first, sizeof(r->arena_first));
    if (!build_request(r, spec)) {
        weir__arena_reset(&r->arena);
        free(r);
        return NULL;
    }
    link_req(r);
    uint32_t timeout = spec->timeout_ms ? spec->timeout_ms : DEFAULT_TIMEOUT_MS;
    r->deadline_ms = weir__loop_now(r->loop) + timeout;
    weir__timer_start(r->loop, &r->timer, timeout, on_timer);
    r->running = true; /* no callback from inside start */
    start_conn(r);
    r->running = false;
    if (r->state == SR_CONNECT)
        run(r);
    return r;
}

weir_subrequest *weir_subrequest_start(weir_session *s, const weir_peer *peer,
                                       const weir_subrequest_spec *spec, weir_subrequest_cb cb,
                                       void *arg)
{
    return s ? weir__subreq_start(s->loop, s, peer, spec, cb, arg) : NULL;
}

void weir_subrequest_cancel(weir_subrequest *r)
{
    if (!r)
        return;
    unlink_req(r);
    free_req(r);
}

const weir_str *weir_subrequest_header(const weir_subrequest_result *r, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; r && i < r->n_headers; i++) {
        if (r->headers[i].name.len == len && strncasecmp(r->headers[i].name.ptr, name, len) == 0)
            return &r->headers[i].value;
    }
    return NULL;
}

/* ---- the session's and the worker's ends ---- */

void weir__subreq_client_gone(weir_session *s)
{
    for (weir_subrequest *r = s->subreqs; r; r = r->s_next) {
        if (r->state != SR_DONE)
            fail(r, WEIR_SUBREQ_CANCELLED, "the client went away");
    }
}

void weir__subreq_session_end(weir_session *s)
{
    weir_subrequest *r;
    while ((r = s->subreqs) != NULL) {
        s->subreqs = r->s_next;
        if (s->subreqs)
            s->subreqs->s_prev = NULL;
        r->s = NULL; /* out of the session's list already */
        r->s_next = NULL;
        weir_subrequest_cancel(r);
    }
}

void weir__subreq_shutdown(void)
{
    /* Each callback may start more: they end the same way, at once. */
    while (live) {
        weir_subrequest *r = live;
        if (r->state != SR_DONE)
            fail(r, WEIR_SUBREQ_CANCELLED, "the worker stops");
        weir__timer_stop(r->loop, &r->timer);
        deliver(&r->timer);
    }
}
