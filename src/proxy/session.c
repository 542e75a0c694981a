/*
 * session.c - the per-request proxy state machine.
 *
 * A session drives one request from its parsed head to the logging phase.
 * It sees the client and the backend only as exchanges (http/exchange.h),
 * so the same machine runs for any protocol on either side.
 *
 *   EARLY -> REQUEST -> PEER -> CONNECT -> UP_FILTER -> PROXY -> RESP_HEAD -> RESP_BODY -> DONE
 *              |          ^        |                      |
 *              |          +--------+ (fail_to_connect     +-> (request body streams upstream
 *              |            asks for a retry)                  while PROXY and RESP_* run)
 *              +--(answered or failed before a response)--> RESP_HEAD (generated) -> DONE
 *
 * Everything happens in run(): events only set readiness flags and call it;
 * it advances as far as it can and arms timeouts for what it waits on.
 * A phase returning WEIR_PHASE_PENDING parks the machine until
 * weir_session_resume() delivers the phase's result.
 *
 * Bodies stream with back-pressure: a slice read from one side is queued on
 * the other by reference and consumed only once written, so each direction
 * holds at most one receive buffer whatever the body size.
 */
#include "proxy/session.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/pool.h"
#include "http/exchange.h"
#include "http/h1_exchange.h"
#include "http/h1_server.h"
#include "http/h2_client.h"
#include "http/msg.h"
#include "net/sock.h"
#include "net/tls.h"
#include "net/upool.h"
#include "proxy/request_gate.h"
#include "proxy/service.h"
#include "proxy/session-t.h"
#include "proxy/subrequest.h"

static const char *state_name(sess_state s)
{
    static const char *const names[] = {"early",   "request",   "cache", "buffer",    "peer",
                                        "connect", "up_filter", "proxy", "resp_head", "resp_body",
                                        "tunnel",  "flush",     "done"};
    return names[s];
}

static weir_pool_class session_class;

__attribute__((constructor)) static void register_class(void)
{
    /* Zero the fields above the peer; what follows is written before it
     * is read (session-t.h), the messages are reset by stream_new. */
    session_class = weir__pool_register_partial("session", sizeof(weir_session), 256,
                                                offsetof(weir_session, peer));
}

/* The loop's cached clock: exact to the loop iteration, no system call. */
static int64_t now_us(const weir_session *s)
{
    return (int64_t)weir__loop_now_us(s->loop);
}

static void run(weir_session *s);
static void finish(weir_session *s);

static void set_state(weir_session *s, sess_state to)
{
    /* The machine only moves forward, except PEER again after a failed
     * connect and RESP_HEAD for a generated response. */
    assert(to > s->state || (to == SS_PEER && s->state == SS_CONNECT) ||
           (to == SS_PEER && s->state == SS_PEER) || to == SS_DONE || to == SS_RESP_HEAD);
    weir_log_debug("session %p: %s -> %s", (void *)s, state_name(s->state), state_name(to));
    s->state = to;
    s->sub = 0;
}

/* ---- phases ---- */

/* Runs a phase or takes the result resume() delivered. */
#define PHASE(s, call) ((s)->have_result ? ((s)->have_result = false, (s)->result) : (call))

/* Notes a pending phase; a value that is not a weir_phase_result (an int
 * that slipped through a cast) fails the request instead of meaning
 * something else. */
static weir_phase_result phase_result(weir_session *s, weir_phase_result r)
{
    switch (r) {
    case WEIR_PHASE_PENDING:
        s->pending = true;
        return r;
    case WEIR_PHASE_CONTINUE:
    case WEIR_PHASE_ANSWERED:
    case WEIR_PHASE_ERROR:
        return r;
    }
    weir_log_error("session %p: a phase returned %d, which is not a weir_phase_result", (void *)s,
                   (int)r);
    return WEIR_PHASE_ERROR;
}

/* ---- upstream ---- */

/* "ip:port" of the last peer tried, or "-": the application's text of it
 * (weir_peer.addr_text, copied when the peer was chosen: the backend it
 * belongs to may be gone by now), else formatted on first use. */
static const char *up_addr(weir_session *s)
{
    if (!s->have_peer)
        return "-";
    if (!s->up_addr[0])
        weir__addr_format((const struct sockaddr *)&s->peer.addr, s->up_addr, sizeof(s->up_addr));
    return s->up_addr;
}

static void up_wake(void *arg)
{
    run(arg);
}

static void give_back_slot(weir_session *s);

static void release_upstream(weir_session *s, bool reusable)
{
    if (s->h2up) {
        weir__timer_stop(s->loop, &s->up_timer);
        weir__h2u_release(s->h2up);
        s->h2up = NULL;
        s->upex = NULL;
        give_back_slot(s); /* the stream's (max_conns) */
        return;
    }
    if (!s->up)
        return;
    weir__timer_stop(s->loop, &s->up_timer);
    weir_conn *c = &s->up->conn;
    /* Bytes past the response mean the backend broke framing: no reuse. */
    if ((c->rbuf && c->rstart != c->rend) || s->close_after)
        reusable = false;
    if (s->resp.status && !s->generated && c->rbuf && !s->resp_buf)
        weir__conn_detach_rbuf(c, &s->resp_buf, &s->resp_buf_cap);
    if (reusable)
        weir__upool_put(s->up, s->peer.idle_timeout_ms, s->peer.keepalive);
    else
        weir__upconn_close(s->up, !s->tunnel); /* a tunnel ends with a FIN */
    s->up = NULL;
    s->upex = NULL;
}

static void up_bind(weir_session *s)
{
    if (s->h2up) {
        s->upex = weir__h2u_exchange(s->h2up);
        s->req_pump.dst = s->upex;
        s->resp_pump.src = s->upex;
        return;
    }
    weir__h1x_init_upstream(&s->upx, &s->up->conn, &s->arena, MAX_RESPONSE_HEAD);
    s->upx.req_method = s->req.method;
    s->upex = &s->upx.x;
    s->req_pump.dst = s->upex;
    s->resp_pump.src = s->upex;
}

/* When the session ended, for its termination state. */
static char term_when(const weir_session *s)
{
    switch (s->state) {
    case SS_EARLY:
    case SS_REQUEST:
    case SS_CACHE:
    case SS_BUFFER:
        return 'R';
    case SS_PEER:
    case SS_CONNECT:
        return 'C';
    case SS_UP_FILTER:
    case SS_PROXY:
        return 'H';
    case SS_TUNNEL:
        return 'T';
    default:
        return 'D';
    }
}

/* Records who ended the session (the first cause wins). */
static void terminate(weir_session *s, char who)
{
    if (s->term[0])
        return;
    s->term[0] = who;
    s->term[1] = term_when(s);
}

static const char *failure_text(weir_failure kind)
{
    switch (kind) {
    case WEIR_FAILURE_CONNECT:
        return "connect failed";
    case WEIR_FAILURE_RESET:
        return "closed before the response";
    case WEIR_FAILURE_TIMEOUT:
        return "no response within read_timeout";
    case WEIR_FAILURE_STATUS:
        return "answered";
    default:
        return "failed";
    }
}

/*
 * An attempt failed in a way that lets the request go elsewhere
 * unchanged: asks fail_to_connect (Pingora's retry on a connect failure or
 * a reset before the response; nginx's proxy_next_upstream for timeouts
 * and statuses). One log line per failed attempt, with the backend, the
 * cause and what happens next. Returns true if the application wants
 * another attempt: the caller releases the upstream and calls
 * go_back_to_peer().
 */
static bool want_retry(weir_session *s, weir_failure kind, int err)
{
    const weir_proxy_ops *ops = s->svc->ops;
    s->attempts++;
    s->failure = kind;
    bool again = ops->fail_to_connect && s->attempts < MAX_ATTEMPTS &&
                 ops->fail_to_connect(s, s->ctx, &s->peer, err, s->attempts);
    char cause[96];
    if (kind == WEIR_FAILURE_STATUS)
        snprintf(cause, sizeof(cause), "%d", s->resp.status);
    else
        snprintf(cause, sizeof(cause), "%s",
                 err == -EPROTO && s->peer.tls ? "TLS handshake failed" : strerror(-err));
    weir_str id = weir_session_request_id(s);
    weir_log_warn("upstream %s: %s: %s (attempt %d, request %.*s)%s", up_addr(s),
                  failure_text(kind), cause, s->attempts, (int)id.len, id.ptr,
                  again ? ": retrying" : "");
    return again;
}

/* The response broke off after it started: the client gets a cut
 * connection, the error log the backend, the client and the request. */
static void log_mid_response(weir_session *s)
{
    weir_str id = weir_session_request_id(s);
    weir_log_warn("upstream %s: %s (client %.*s, request %.*s)", up_addr(s), s->error,
                  (int)s->client_ip_len, s->client_ip, (int)id.len, id.ptr);
}

/* The request can be sent again unchanged: no body byte went to a backend,
 * or the whole body is buffered and is replayed. */
static bool body_replayable(const weir_session *s)
{
    return s->req_pump.moved == 0 || s->buf_complete;
}

static void go_back_to_peer(weir_session *s)
{
    s->req_head_sent = false;
    s->req_pump.queued = s->req_pump.end_queued = s->req_pump.done = false;
    s->req_pump.n_avail = s->req_pump.seg_pos = 0;
    if (s->buf_complete) {
        s->req_pump.pre_off = 0;
        s->req_pump.moved = 0;
    }
    s->state = SS_PEER; /* back to a state already passed: not a set_state move */
    s->sub = 0;
}

static void connect_failed(weir_session *s, int err)
{
    release_upstream(s, false);
    if (want_retry(s, WEIR_FAILURE_CONNECT, err)) {
        go_back_to_peer(s);
        return;
    }
    weir__session_fail(
        s, 502, err == -ETIMEDOUT ? "upstream connect timed out" : "upstream connect failed");
}

/*
 * The backend reset or closed the connection before any response byte.
 * When no request body byte was consumed the request can go elsewhere
 * unchanged: fail_to_connect decides, as for a connect failure. Returns
 * true if a retry starts.
 */
static bool retry_before_response(weir_session *s, int err)
{
    if (!body_replayable(s) || !s->svc->ops->fail_to_connect)
        return false;
    release_upstream(s, false);
    if (!want_retry(s, WEIR_FAILURE_RESET, err))
        return false;
    go_back_to_peer(s);
    return true;
}

/* A 502/503/504 from the backend, when peer.retry_on asks: retried
 * elsewhere only if the application agrees; else it goes to the client. */
static bool retry_on_status(weir_session *s)
{
    int st = s->resp.status;
    int bit = st == 502   ? WEIR_RETRY_502
              : st == 503 ? WEIR_RETRY_503
              : st == 504 ? WEIR_RETRY_504
                          : 0;
    if (!bit || !(s->peer.retry_on & bit) || !body_replayable(s) || !s->req_pump.done)
        return false;
    if (!want_retry(s, WEIR_FAILURE_STATUS, 0))
        return false;
    /* Forget the response before the connection goes: its head must not
     * be kept (release_upstream keeps the buffer of a response it sees). */
    memset(&s->resp, 0, WEIR_MSG_RESET_LEN);
    weir__headers_init(&s->resp.headers, &s->arena);
    release_upstream(s, false);
    go_back_to_peer(s);
    return true;
}

static void start_peer(weir_session *s)
{
    const weir_proxy_options *o = &s->svc->opts;
    memset(&s->peer, 0, sizeof(s->peer));
    s->peer.connect_timeout_ms = o->connect_timeout_ms;
    s->peer.read_timeout_ms = o->upstream_read_timeout_ms;
    s->peer.write_timeout_ms = o->upstream_write_timeout_ms;
    s->peer.idle_timeout_ms = o->upstream_idle_timeout_ms;
    s->peer.keepalive = o->upstream_keepalive;
}

static void fill_peer_defaults(weir_session *s)
{
    const weir_proxy_options *o = &s->svc->opts;
    if (!s->peer.connect_timeout_ms)
        s->peer.connect_timeout_ms = o->connect_timeout_ms;
    if (!s->peer.read_timeout_ms)
        s->peer.read_timeout_ms = o->upstream_read_timeout_ms;
    if (!s->peer.write_timeout_ms)
        s->peer.write_timeout_ms = o->upstream_write_timeout_ms;
    if (!s->peer.idle_timeout_ms)
        s->peer.idle_timeout_ms = o->upstream_idle_timeout_ms;
}

static void step_connect(weir_session *s);

static void give_back_slot(weir_session *s)
{
    if (s->has_slot) {
        weir__climit_release(s->peer.conn_limit);
        s->has_slot = false;
    }
}

/* The limit's wake, on this session's loop: a slot, or an idle connection
 * in the pool to take. */
static void queue_granted(void *arg)
{
    weir_session *s = arg;
    weir__timer_stop(s->loop, &s->queue_timer);
    s->queued = false;
    s->pending = false;
    s->has_slot = s->waiter.slot;
    s->waiter.state = WEIR_WAITER_IDLE;
    if (s->state == SS_DONE) { /* aborted while it waited */
        give_back_slot(s);
        if (!s->running)
            finish(s);
        return;
    }
    s->queue_woken = !s->has_slot;
    run(s);
}

static void queue_timeout(weir_timer *t)
{
    weir_session *s = weir_container_of(t, weir_session, queue_timer);
    if (!weir__climit_cancel(s->peer.conn_limit, &s->waiter))
        return; /* its wake is on the way and decides */
    s->queued = false;
    s->pending = false;
    s->term[0] = 's';
    s->term[1] = 'Q';
    weir__session_fail(s, 503, "no connection to the backend within queue_timeout");
    if (s->generated && !s->resp_started)
        weir__headers_push(&s->resp.headers, WEIR_STR("Retry-After"), WEIR_STR("1"));
    run(s);
}

/* Starts a new connection to the chosen peer: under its conn_limit, a
 * slot first, or a place in its queue. Returns false if the session now
 * waits. */
/* Under the peer's conn_limit: a slot (true), or a place in its queue
 * (false: the session waits). */
static bool take_slot(weir_session *s, bool stream)
{
    weir_conn_limit *lim = s->peer.conn_limit;
    if (lim && !s->has_slot) {
        s->waiter.slot_only = stream;
        s->waiter.loop = s->loop;
        s->waiter.granted = queue_granted;
        s->waiter.arg = s;
        if (weir__climit_acquire(lim, &s->waiter, s->queue_woken) == WEIR_AGAIN) {
            s->queue_woken = false;
            s->queued = true;
            s->pending = true;
            weir__timer_start(s->loop, &s->queue_timer,
                              s->peer.queue_timeout_ms ? s->peer.queue_timeout_ms : 30000,
                              queue_timeout);
            return false;
        }
        s->has_slot = true;
    }
    s->queue_woken = false;
    return true;
}

/* The PROXY header for the peer (send_proxy): the client's connection, as
 * a PROXY header in named it, to our address. */
static const weir_upconn_pp *session_pp(weir_session *s, weir_upconn_pp *pp)
{
    if (!s->peer.send_proxy)
        return NULL;
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    if (getsockname(s->origin.fd, (struct sockaddr *)&local, &len) < 0)
        memset(&local, 0, sizeof(local));
    weir_tls_info ti;
    const char *sni = weir__tls_info(s->down_ssl, &ti) ? ti.sni : NULL;
    weir__upconn_pp(pp, &s->peer, s->client_addr, (struct sockaddr *)&local, sni);
    return pp;
}

static bool connect_peer(weir_session *s)
{
    if (!take_slot(s, false))
        return false;
    int err = 0;
    weir_upconn_pp pp;
    s->up = weir__upconn_connect(s->loop, &s->peer, session_pp(s, &pp), s, up_wake, &err);
    if (!s->up) {
        give_back_slot(s);
        connect_failed(s, err);
        return true;
    }
    s->has_slot = false; /* the connection holds it now */
    s->t_connect_us = now_us(s);
    set_state(s, SS_CONNECT);
    return true;
}

/* PEER: ask the application (sub 0), then take a pooled connection or
 * connect (sub 1, where a request waiting for a connection comes back). */
static void step_peer(weir_session *s)
{
    const weir_proxy_ops *ops = s->svc->ops;
    if (s->sub == 1)
        goto connect;
    if (s->attempts == 0 && !s->have_result && s->body_limit && s->req.body == WEIR_BODY_KNOWN &&
        s->req.content_length > s->body_limit) {
        weir__session_fail(s, 413, "request body over the limit");
        return;
    }
    if (!s->have_result)
        start_peer(s);
    weir_phase_result r = phase_result(s, PHASE(s, ops->upstream_peer(s, s->ctx, &s->peer)));
    if (r == WEIR_PHASE_PENDING)
        return;
    if (r == WEIR_PHASE_ANSWERED) {
        set_state(s, SS_RESP_HEAD);
        return;
    }
    if (r != WEIR_PHASE_CONTINUE) {
        weir__session_fail(s, 502, "upstream_peer failed");
        return;
    }
    fill_peer_defaults(s);
    if (s->peer.addr_len == 0) {
        weir__session_fail(s, 502, "no upstream peer chosen");
        return;
    }
    s->have_peer = true;
    s->up_addr[0] = '\0'; /* up_addr() formats it if the text is not given */
    if (s->peer.addr_text) {
        size_t n = strnlen(s->peer.addr_text, sizeof(s->up_addr));
        if (n < sizeof(s->up_addr))
            memcpy(s->up_addr, s->peer.addr_text, n + 1);
    }
    if (s->t_up_start_us == 0)
        s->t_up_start_us = now_us(s);
    s->sub = 1;
connect:
    if (!s->peer.send_proxy &&
        (s->peer.h2 || (s->peer.h2_or_h1 && s->peer.tls && weir__h2u_usable(&s->peer)))) {
        /* Over HTTP/2 a slot is a stream: the session holds it until its
         * stream ends (release_upstream), the connection none. */
        if (!take_slot(s, true))
            return;
        int err = 0;
        bool reused = false;
        s->h2up = weir__h2u_open(s->loop, &s->peer, &s->arena, &s->resp, s, up_wake, &err, &reused);
        if (!s->h2up) {
            give_back_slot(s);
            connect_failed(s, err);
            return;
        }
        s->up_reused = reused;
        s->t_connect_us = now_us(s);
        set_state(s, SS_CONNECT);
        step_connect(s);
        return;
    }
    /* While requests wait for a connection to this backend, a newcomer
     * queues behind them, idle connections included. */
    weir_conn_limit *lim = s->peer.conn_limit;
    if (!s->has_slot && (!lim || s->queue_woken || !weir__climit_busy(lim))) {
        weir_upconn_pp pp;
        s->up = weir__upool_take(s->loop, &s->peer, session_pp(s, &pp), s, up_wake);
    }
    if (s->up) {
        s->queue_woken = false;
        s->up_reused = true;
        up_bind(s);
        if (ops->connected_to_upstream)
            ops->connected_to_upstream(s, s->ctx, &s->peer, true);
        set_state(s, SS_UP_FILTER);
        return;
    }
    connect_peer(s);
}

static void step_connect(weir_session *s)
{
    int rc = s->h2up ? weir__h2u_ready(s->h2up) : weir__upconn_connect_result(s->up);
    if (rc == WEIR_AGAIN)
        return;
    if (rc < 0) {
        connect_failed(s, rc);
        return;
    }
    if (!s->h2up && s->peer.h2_or_h1 && !s->peer.send_proxy && s->up->conn.ssl) {
        weir_str p = weir__tls_alpn(s->up->conn.ssl);
        if (p.len == 2 && memcmp(p.ptr, "h2", 2) == 0) {
            /* The backend chose HTTP/2: the connection becomes the HTTP/2
             * client's, and this request its first stream. */
            int err = 0;
            if (s->up->limit) {
                /* The connection's slot becomes its first stream's. */
                weir__climit_unref(s->up->limit);
                s->up->limit = NULL;
                s->has_slot = true;
            }
            weir_h2us *h =
                weir__h2u_adopt(&s->up->conn, &s->peer, &s->arena, &s->resp, s, up_wake, &err);
            weir__upconn_close(s->up, false); /* only its empty shell */
            s->up = NULL;
            if (!h) {
                give_back_slot(s);
                connect_failed(s, err);
                return;
            }
            s->h2up = h;
            s->up_reused = false;
            step_connect(s); /* waits for the backend's SETTINGS */
            return;
        }
    }
    if (!s->h2up)
        s->up_reused = false;
    s->connect_us = s->up_reused ? 0 : now_us(s) - s->t_connect_us;
    up_bind(s);
    if (s->svc->ops->connected_to_upstream)
        s->svc->ops->connected_to_upstream(s, s->ctx, &s->peer, s->up_reused);
    set_state(s, SS_UP_FILTER);
}

/*
 * A pooled connection can die just as it is taken (the backend's idle
 * timeout raced ours). When it fails before any response byte and before
 * any request body byte was consumed, the request is sent again on a new
 * connection to the same peer, as nginx and HAProxy do; the phases that
 * already ran are not repeated.
 */
static bool retry_stale(weir_session *s)
{
    if (!s->up || !s->up_reused || !body_replayable(s) || s->up->conn.rend > 0)
        return false;
    weir_log_debug("upstream %s: pooled connection was closed, reconnecting", up_addr(s));
    if (s->up->limit) {
        /* Its slot goes to the new connection, not to the queue. */
        weir__climit_unref(s->up->limit);
        s->up->limit = NULL;
        s->has_slot = true;
    }
    release_upstream(s, false);
    s->up_reused = false;
    s->req_head_sent = false;
    s->req_pump.queued = s->req_pump.end_queued = s->req_pump.done = false;
    s->req_pump.n_avail = s->req_pump.seg_pos = 0;
    if (s->buf_complete) {
        s->req_pump.pre_off = 0;
        s->req_pump.moved = 0;
    }
    int err = 0;
    weir_upconn_pp pp;
    s->up = weir__upconn_connect(s->loop, &s->peer, session_pp(s, &pp), s, up_wake, &err);
    if (!s->up) {
        give_back_slot(s);
        connect_failed(s, err);
        return true;
    }
    s->has_slot = false;
    s->t_connect_us = now_us(s);
    s->state = SS_CONNECT; /* back to a state already passed: not a set_state move */
    return true;
}

static void step_up_filter(weir_session *s)
{
    const weir_proxy_ops *ops = s->svc->ops;
    weir_phase_result r = WEIR_PHASE_CONTINUE;
    if (!s->up_filter_done && (ops->upstream_request_filter || s->have_result))
        r = phase_result(s, PHASE(s, ops->upstream_request_filter(s, s->ctx)));
    if (r == WEIR_PHASE_PENDING)
        return;
    if (r == WEIR_PHASE_ANSWERED) {
        release_upstream(s, true);
        set_state(s, SS_RESP_HEAD);
        return;
    }
    if (r != WEIR_PHASE_CONTINUE) {
        release_upstream(s, true);
        weir__session_fail(s, 500, "upstream_request_filter failed");
        return;
    }
    if (!s->up_filter_done && weir__session_add_proxy_headers(s) < 0) {
        release_upstream(s, true);
        weir__session_fail(s, 500, "out of memory");
        return;
    }
    s->up_filter_done = true;
    /* weir answers Expect: 100-continue itself when it starts reading the
     * body, so the backend must not wait for or send one. */
    weir_headers_remove(&s->req.headers, "expect");
    /* A request filter that removed Content-Length (its body filter
     * changes the length): the body goes up without one (chunked). */
    if (s->req.body == WEIR_BODY_KNOWN && ops->request_body_filter && !s->no_req_body_filter &&
        weir__headers_find(&s->req.headers, "content-length", 0) < 0)
        s->req.body = WEIR_BODY_UNKNOWN;
    /* The upstream gets the rewritten target; logs keep the client's. */
    weir_str client_target = s->req.target;
    if (s->up_target.ptr)
        s->req.target = s->up_target;
    int rc = s->upex->ops->write_head(s->upex, &s->req);
    s->req.target = client_target;
    if (rc < 0) {
        release_upstream(s, false);
        weir__session_fail(s, 500, "cannot serialize the request head");
        return;
    }
    s->req_head_sent = true;
    if (s->req.body == WEIR_BODY_NONE)
        s->req_pump.done = s->req_pump.end_queued = true;
    set_state(s, SS_PROXY);
}

/* ---- body pumps (the pump itself: session_pump.c) ---- */

/* Streams the request body upstream; reports failures. Returns false if
 * the session failed. */
static bool pump_request(weir_session *s)
{
    if (!s->req_head_sent || s->req_pump.done || !s->upex)
        return true;
    int rc = weir__session_pump_run(
        s, &s->req_pump, s->no_req_body_filter ? NULL : s->svc->ops->request_body_filter);
    if (rc >= 0)
        return true;
    if (s->req_pump.err_src) {
        if (rc == PUMP_E_FILTER) {
            /* The backend got part of a body: its connection goes. */
            release_upstream(s, false);
            weir__session_fail(s, 502, "request_body_filter failed");
        } else if (rc == WEIR_EX_E_TOO_LARGE) {
            release_upstream(s, false);
            weir__session_fail(s, 413, "request body over the limit");
        } else if (rc == WEIR_EX_E_FRAMING) {
            release_upstream(s, false);
            weir__session_fail(s, 400, "invalid request body framing");
        } else {
            /* The client went away mid-body: nothing to answer. */
            terminate(s, 'C');
            s->client_aborted = true;
            s->error = "client closed during the request body";
            release_upstream(s, false);
            set_state(s, SS_DONE);
        }
        return false;
    }
    /* Writing upstream failed. Whether a response may still come is
     * unknowable in general: treat as a failed exchange. */
    if (s->state == SS_PROXY && retry_stale(s))
        return false;
    if (!s->resp_started) {
        release_upstream(s, false);
        weir__session_fail(s, 502, "upstream closed while receiving the request");
        return false;
    }
    return true;
}

static void step_proxy(weir_session *s)
{
    if (!pump_request(s))
        return;
    if (s->state != SS_PROXY)
        return;
    int rc = s->upex->ops->flush(s->upex);
    if (rc < 0 && rc != WEIR_AGAIN) {
        if (retry_stale(s) || retry_before_response(s, rc))
            return;
        release_upstream(s, false);
        weir__session_fail(s, 502, "upstream write failed");
        return;
    }
    rc = s->upex->ops->read_head(s->upex, &s->resp);
    if (rc == WEIR_AGAIN) {
        if (s->down->ops->peer_gone(s->down) && s->req_pump.done) {
            terminate(s, 'C');
            s->client_aborted = true;
            s->error = "client closed before the response";
            release_upstream(s, false);
            set_state(s, SS_DONE);
        }
        return;
    }
    if (rc < 0) {
        bool framing =
            rc == WEIR_EX_E_HEAD || rc == WEIR_EX_E_FRAMING || rc == WEIR_EX_E_HEAD_TOO_LARGE;
        if (!framing && retry_stale(s))
            return;
        if (!framing && (s->h2up || (s->up && s->up->conn.rend == 0)) &&
            retry_before_response(s, rc == WEIR_EX_E_CLOSED ? -ECONNRESET : rc))
            return;
        release_upstream(s, false);
        if (rc == WEIR_EX_E_HEAD || rc == WEIR_EX_E_FRAMING || rc == WEIR_EX_E_HEAD_TOO_LARGE)
            weir__session_fail(s, 502, "invalid response head from upstream");
        else
            weir__session_fail(s, 502, "upstream closed before the response");
        return;
    }
    if (s->resp.status == 101 && !s->req.upgrade) {
        release_upstream(s, false);
        weir__session_fail(s, 502, "upstream switched protocols without being asked");
        return;
    }
    if (retry_on_status(s))
        return;
    /* Before any filter adds a field: the backend's Connection header can
     * only name fields the backend sent. */
    weir__gate_response(&s->resp);
    set_state(s, SS_RESP_HEAD);
}

/* ---- responses ---- */

static void step_resp_head(weir_session *s)
{
    const weir_proxy_ops *ops = s->svc->ops;
    if (s->sub == 0) {
        if (!s->generated && (ops->upstream_response_filter || s->have_result)) {
            weir_phase_result r =
                phase_result(s, PHASE(s, ops->upstream_response_filter(s, s->ctx)));
            if (r == WEIR_PHASE_PENDING)
                return;
            if (r != WEIR_PHASE_CONTINUE) {
                release_upstream(s, false);
                weir__session_fail(s, 502, "upstream_response_filter failed");
                return;
            }
        }
        if (s->cache)
            weir__cache_response(s); /* may answer from the store instead */
        s->sub = 1;
    }
    if (s->sub == 1) {
        if (ops->response_filter || s->have_result) {
            weir_phase_result r = phase_result(s, PHASE(s, ops->response_filter(s, s->ctx)));
            if (r == WEIR_PHASE_PENDING)
                return;
            if (r != WEIR_PHASE_CONTINUE && !s->generated) {
                release_upstream(s, false);
                weir__session_fail(s, 502, "response_filter failed");
                return;
            }
        }
        s->sub = 2;
    }
    /* A response_filter that removed Content-Length (its body filter
     * changes the length): the body is sent without one (chunked). */
    if (s->resp.body == WEIR_BODY_KNOWN && ops->response_body_filter && !s->no_resp_body_filter &&
        weir__headers_find(&s->resp.headers, "content-length", 0) < 0)
        s->resp.body = WEIR_BODY_UNKNOWN;
    /* A response written before the request body was read (an early
     * answer, an error) ends the connection: the rest of the body is
     * drained and dropped, not parsed as a request. */
    s->resp.close =
        (s->generated && !s->req_pump.done && s->req.body != WEIR_BODY_NONE) || s->close_after;
    assert(s->down); /* an aborted session is DONE and never gets here */
    int rc = s->down->ops->write_head(s->down, &s->resp);
    if (rc < 0) {
        terminate(s, 'P');
        s->error = "cannot serialize the response head";
        s->failed = true;
        release_upstream(s, false);
        set_state(s, SS_DONE);
        return;
    }
    s->resp_started = true;
    if (s->generated) {
        if (s->resp.body == WEIR_BODY_NONE) {
            s->down->ops->write_end(s->down, WEIR_STR_NULL);
            set_state(s, SS_FLUSH);
            return;
        }
        /* Its body goes through the pump (and the body filters) like an
         * upstream's. */
        weir__gen_start(s);
        set_state(s, SS_RESP_BODY);
        return;
    }
    if (s->resp.status == 101) {
        /* Both connections now carry the new protocol: raw bytes both
         * ways (the 101 head is queued first on the client side). */
        s->down->ops->tunnel(s->down);
        s->upex->ops->tunnel(s->upex);
        s->req_pump = (pump){.src = s->down, .dst = s->upex};
        s->resp_pump = (pump){.src = s->upex, .dst = s->down};
        s->tunnel = true;
        set_state(s, SS_TUNNEL);
        return;
    }
    if (s->resp.body == WEIR_BODY_NONE) {
        s->resp_pump.done = true;
        if (s->cache)
            weir__cache_body_end(s);
        s->down->ops->write_end(s->down, WEIR_STR_NULL);
        set_state(s, SS_FLUSH);
        return;
    }
    set_state(s, SS_RESP_BODY);
}

static void step_resp_body(weir_session *s)
{
    if (!pump_request(s))
        return;
    int rc = s->generated ? weir__gen_sendfile(s) : WEIR_DECLINED;
    if (rc == WEIR_DECLINED)
        rc = weir__session_pump_run(
            s, &s->resp_pump, s->no_resp_body_filter ? NULL : s->svc->ops->response_body_filter);
    if (rc == WEIR_AGAIN) {
        if (s->cache && s->resp_pump.queued && !s->generated)
            weir__cache_client_slow(s); /* its waiters do not wait on this client */
        return;
    }
    if (rc < 0 && s->generated) {
        /* A generated body failed (its producer, reading the file) or
         * the client went away: the connection goes with it. */
        s->failed = true;
        s->gen_cut = true;
        if (s->resp_pump.err_src) {
            terminate(s, 'P');
            s->error =
                rc == PUMP_E_FILTER ? "response_body_filter failed" : "generated body failed";
            weir_str id = weir_session_request_id(s);
            weir_log_warn("client %.*s: %s mid-response (%d) (request %.*s)", (int)s->client_ip_len,
                          s->client_ip, s->error, rc, (int)id.len, id.ptr);
        } else {
            terminate(s, 'C');
            s->client_aborted = true;
            s->error = "client closed mid-response";
        }
        set_state(s, SS_DONE);
        return;
    }
    if (rc < 0) {
        /* The response has started: the only honest signal left is to cut
         * the client connection. */
        s->failed = true;
        if (s->resp_pump.err_src) {
            terminate(s, 'S');
            s->error = rc == WEIR_EX_E_FRAMING  ? "invalid response body framing from upstream"
                       : rc == WEIR_EX_E_CLOSED ? "upstream closed mid-response (truncated body)"
                       : rc == PUMP_E_FILTER    ? "response_body_filter failed"
                                                : "upstream reset mid-response";
            log_mid_response(s);
        } else {
            terminate(s, 'C');
            s->client_aborted = true;
            s->error = "client closed mid-response";
        }
        release_upstream(s, false);
        set_state(s, SS_DONE);
        return;
    }
    if (s->generated) {
        weir__gen_release(s); /* the file closes as soon as it is sent */
        set_state(s, SS_FLUSH);
        return;
    }
    s->t_up_end_us = now_us(s);
    if (s->cache)
        weir__cache_body_end(s); /* the whole body came: stored now */
    /* The upstream exchange is complete: reuse its connection if the
     * request went out whole and the backend keeps it open. */
    release_upstream(s, s->req_pump.done && s->upx.out_keep_alive);
    set_state(s, SS_FLUSH);
}

static void step_flush(weir_session *s)
{
    assert(s->down);
    int rc = s->down->ops->flush(s->down);
    if (rc == WEIR_AGAIN)
        return;
    if (rc < 0) {
        terminate(s, 'C');
        s->client_aborted = true;
        s->failed = true;
        s->error = "client closed mid-response";
    }
    set_state(s, SS_DONE);
}

/* The request failed before the response started: error_while_proxy, then
 * weir's own error page. */
/* ---- timeouts ---- */

static void up_timeout(weir_timer *t)
{
    weir_session *s = weir_container_of(t, weir_session, up_timer);
    switch (s->state) {
    case SS_CONNECT:
        connect_failed(s, -ETIMEDOUT);
        break;
    case SS_PROXY: {
        /* Retried only if nothing of the response came and the body (if
         * any) can be sent again. */
        bool silent = !(s->up && s->up->conn.rend > 0) && body_replayable(s);
        release_upstream(s, false);
        if (silent && (s->peer.retry_on & WEIR_RETRY_TIMEOUT) &&
            want_retry(s, WEIR_FAILURE_TIMEOUT, -ETIMEDOUT)) {
            go_back_to_peer(s);
            break;
        }
        weir__session_fail(s, 504, "upstream timed out");
        break;
    }
    default:
        s->failed = true;
        if (s->generated) {
            /* A producer that said WEIR_AGAIN and never came back. */
            terminate(s, 'P');
            s->gen_cut = true;
            s->error = "generated body timed out";
            weir_log_warn("client %.*s: %s (request %.*s)", (int)s->client_ip_len, s->client_ip,
                          s->error, (int)weir_session_request_id(s).len,
                          weir_session_request_id(s).ptr);
            set_state(s, SS_DONE);
            break;
        }
        terminate(s, 's');
        s->error = "upstream timed out mid-response";
        log_mid_response(s);
        release_upstream(s, false);
        set_state(s, SS_DONE);
        break;
    }
    run(s);
}

static void client_timeout(weir_timer *t)
{
    weir_session *s = weir_container_of(t, weir_session, client_timer);
    if (s->body_reading) {
        /* The pending phase waits for its body: tell it. */
        s->body_reading = false;
        s->body_cb(s, s->ctx, (weir_str){"", 0}, -ETIMEDOUT);
        return;
    }
    if (s->state == SS_BUFFER) {
        /* Nothing went upstream: the client is told, as nginx does. */
        terminate(s, 'c');
        weir__session_fail(s, 408, "client body timed out");
        run(s);
        return;
    }
    terminate(s, 'c');
    s->client_aborted = true;
    s->failed = true;
    s->error = "client timed out";
    release_upstream(s, false);
    set_state(s, SS_DONE);
    run(s);
}

/* Arms the timers for what the session now waits on. */
static void arm_timers(weir_session *s)
{
    uint32_t up_ms = 0, client_ms = 0;
    weir_proxy_options ov;
    const weir_proxy_options *o = &s->svc->opts;
    if (s->client_idle_ms) {
        ov = *o;
        ov.client_body_timeout_ms = ov.send_timeout_ms = s->client_idle_ms;
        o = &ov;
    }
    switch (s->state) {
    case SS_BUFFER:
        client_ms = o->client_body_timeout_ms;
        break;
    case SS_CONNECT:
        up_ms = s->peer.connect_timeout_ms;
        break;
    case SS_PROXY:
        up_ms = s->peer.read_timeout_ms;
        if (!s->req_pump.done)
            client_ms = o->client_body_timeout_ms;
        break;
    case SS_RESP_BODY:
        /* Waiting on the client (it reads slowly), on the backend, or on
         * a generated body's producer that paused (as long as the client
         * may be idle: send_timeout, or weir_session_set_client_timeout
         * for a long stream). */
        if (s->resp_pump.queued)
            client_ms = o->send_timeout_ms;
        else
            up_ms = s->generated ? o->send_timeout_ms : s->peer.read_timeout_ms;
        break;
    case SS_TUNNEL:
        /* One idle timeout for the tunnel, whichever side is quiet. */
        client_ms = o->tunnel_idle_timeout_ms;
        break;
    case SS_FLUSH:
        client_ms = o->send_timeout_ms;
        break;
    default:
        break;
    }
    if (up_ms && !s->pending)
        weir__timer_start(s->loop, &s->up_timer, up_ms, up_timeout);
    else
        weir__timer_stop(s->loop, &s->up_timer);
    if (s->body_reading)
        client_ms = o->client_body_timeout_ms;
    if (client_ms && (!s->pending || s->body_reading))
        weir__timer_start(s->loop, &s->client_timer, client_ms, client_timeout);
    else
        weir__timer_stop(s->loop, &s->client_timer);
}

/* ---- the driver ---- */

/* A phase gave up because the client went away (a plugin's sub-request is
 * cancelled then): nginx's 499 and a client termination, not a 500 that
 * would count against weir. */
static void client_left(weir_session *s)
{
    terminate(s, 'C');
    s->client_aborted = true;
    s->failed = true;
    s->error = "the client went away";
    set_state(s, SS_DONE);
}

static void step(weir_session *s)
{
    const weir_proxy_ops *ops = s->svc->ops;
    if (s->body_reading && s->down)
        weir__session_read_whole_body(s);
    for (;;) {
        sess_state before = s->state;
        int sub_before = s->sub;
        if (s->pending) {
            /* A sub-request for a client that left ends now (499): the
             * phase waiting on it resumes and the session ends. */
            if (s->subreqs && s->down && s->down->ops->peer_gone(s->down))
                weir__subreq_client_gone(s);
            return;
        }
        switch (s->state) {
        case SS_EARLY:
        case SS_REQUEST: {
            weir_phase_result (*fn)(weir_session *, void *) =
                s->state == SS_EARLY ? ops->early_request_filter : ops->request_filter;
            weir_phase_result r = WEIR_PHASE_CONTINUE;
            if (fn || s->have_result)
                r = phase_result(s, PHASE(s, fn(s, s->ctx)));
            if (r == WEIR_PHASE_PENDING)
                return;
            if (r == WEIR_PHASE_ANSWERED && s->generated)
                set_state(s, SS_RESP_HEAD);
            else if (r == WEIR_PHASE_CONTINUE && s->state == SS_EARLY)
                set_state(s, SS_REQUEST);
            else if (r == WEIR_PHASE_CONTINUE && (ops->request_cache_filter || s->cache))
                set_state(s, SS_CACHE);
            else if (r == WEIR_PHASE_CONTINUE)
                set_state(s, weir__session_wants_buffer(s) ? SS_BUFFER : SS_PEER);
            else if (s->down && s->down->ops->peer_gone(s->down))
                client_left(s); /* its sub-request was cancelled for that */
            else
                weir__session_fail(s, 500, "request phase failed");
            break;
        }
        case SS_CACHE:
            weir__session_step_cache(s);
            break;
        case SS_BUFFER:
            weir__session_step_buffer(s);
            break;
        case SS_PEER:
            step_peer(s);
            break;
        case SS_CONNECT:
            step_connect(s);
            break;
        case SS_UP_FILTER:
            step_up_filter(s);
            break;
        case SS_PROXY:
            step_proxy(s);
            break;
        case SS_RESP_HEAD:
            step_resp_head(s);
            break;
        case SS_RESP_BODY:
            step_resp_body(s);
            break;
        case SS_TUNNEL:
            weir__session_step_tunnel(s);
            break;
        case SS_FLUSH:
            step_flush(s);
            break;
        case SS_DONE:
            return;
        }
        if (s->state == before && s->sub == sub_before)
            return; /* blocked */
    }
}

static void run(weir_session *s)
{
    if (s->running) {
        s->rerun = true;
        return;
    }
    s->running = true;
    do {
        s->rerun = false;
        step(s);
    } while (s->rerun && s->state != SS_DONE);
    s->running = false;
    if (s->state == SS_DONE) {
        if (!s->pending)
            finish(s);
        return;
    }
    arm_timers(s);
}

/* ---- logging and the end ---- */

static void access_log(weir_session *s, const weir_session_stats *st)
{
    char line[2048];
    char ts[32];
    time_t secs = (time_t)(weir__loop_wall_ms(s->loop) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    int tlen = (int)(s->req.target.len > 1024 ? 1024 : s->req.target.len);
    int n = snprintf(
        line, sizeof(line), "%.*s [%s] \"%.*s %.*s HTTP/%d.%d\" %d %" PRIu64 " %s %.3f %s%s",
        (int)s->client_ip_len, s->client_ip, ts, (int)s->req.method.len, s->req.method.ptr, tlen,
        s->req.target.ptr, s->req.version / 10, s->req.version % 10, st->status, st->bytes_sent,
        st->upstream_addr, (double)st->request_time_us / 1e6, "", "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    if (st->upstream_time_us >= 0)
        n += snprintf(line + n, sizeof(line) - (size_t)n, "%.3f",
                      (double)st->upstream_time_us / 1e6);
    else
        n += snprintf(line + n, sizeof(line) - (size_t)n, "-");
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    weir__logsink_write(s->svc->access_log, line, (size_t)n);
}

static void free_session(weir_session *s)
{
    weir__cache_end(s); /* a hit's body was the stored object's: let go now */
    weir__session_buffer_free(s);
    weir__rbuf_free(s->resp_buf, s->resp_buf_cap);
    weir__arena_reset(&s->arena);
    weir__pool_put(session_class, s);
}

static void finish(weir_session *s)
{
    const weir_proxy_ops *ops = s->svc->ops;
    weir__subreq_session_end(s);
    weir__session_end_splice(s);
    weir__timer_stop(s->loop, &s->up_timer);
    weir__timer_stop(s->loop, &s->client_timer);
    weir__timer_stop(s->loop, &s->user_timer);
    weir__timer_stop(s->loop, &s->queue_timer);
    release_upstream(s, false);
    give_back_slot(s);
    weir__gen_release(s);
    if (!s->term[0] && s->failure != WEIR_FAILURE_NONE && s->generated && s->resp.status >= 500) {
        /* The application answered after a failed attempt (no backend
         * left to retry on): the backend ended it. */
        s->term[0] = s->failure == WEIR_FAILURE_TIMEOUT ? 's' : 'S';
        s->term[1] = s->failure == WEIR_FAILURE_CONNECT ? 'C' : 'H';
    }
    /* nginx's 499: the client went away before any response. */
    weir_session_stats st = {
        .status = s->resp_started     ? s->resp.status
                  : s->client_aborted ? 499
                                      : 0,
        .bytes_received = s->down ? s->down->bytes_in : 0,
        .bytes_sent = s->down ? s->down->bytes_out : 0,
        .request_time_us = now_us(s) - s->t_start_us,
        .upstream_time_us = -1,
        .connect_time_us = s->up_reused ? 0 : s->connect_us,
        .upstream_addr = (ops->logging || s->svc->access_log) ? up_addr(s) : "-",
        .error = s->error,
        .client_aborted = s->client_aborted,
        .termination = {s->term[0] ? s->term[0] : '-', s->term[0] ? s->term[1] : '-', '\0'},
    };
    if (s->t_up_start_us) {
        int64_t end = s->t_up_end_us ? s->t_up_end_us : now_us(s);
        st.upstream_time_us = end - s->t_up_start_us;
    }
    if (ops->logging)
        ops->logging(s, s->ctx, &st);
    if (s->svc->access_log)
        access_log(s, &st);
    if (ops->free_ctx)
        ops->free_ctx(s->svc->app, s->ctx);
    /* Whether the response went out whole; a connection that must close
     * (close_after) said so in it, and its codec closes it gracefully. A
     * reset is for an incomplete response only. */
    bool reuse =
        !s->failed || (s->generated && s->resp_started && !s->client_aborted && !s->gen_cut);
    if (s->origin.done)
        s->origin.done(s->origin.owner, reuse && !s->client_aborted);
    free_session(s);
}

/* ---- glue: the handler that the HTTP/1 and HTTP/2 servers call ---- */

static void *stream_new(void *svc, weir_loop *loop, weir_msg **req)
{
    weir_session *s = weir__pool_get(session_class);
    if (!s)
        return NULL;
    s->svc = svc;
    s->loop = loop;
    weir__arena_init(&s->arena, s->arena_mem, sizeof(s->arena_mem));
    memset(&s->req, 0, WEIR_MSG_RESET_LEN);
    memset(&s->resp, 0, WEIR_MSG_RESET_LEN);
    weir__headers_init(&s->req.headers, &s->arena);
    weir__headers_init(&s->resp.headers, &s->arena);
    *req = &s->req;
    return s;
}

static void stream_drop(void *stream)
{
    free_session(stream);
}

/* What every session starts with: its client side and who the client is.
 * Returns whether the peer is a trusted proxy. */
static bool begin(weir_session *s, weir_exchange *x, uint32_t head_len, const weir_stream_origin *o)
{
    s->t_start_us = now_us(s);
    s->down = x;
    s->head_len = head_len;
    s->origin = *o;
    s->client_addr = o->peer;
    s->down_ssl = o->ssl;
    s->tls_hs_start_us = 0;
    if (o->tls_conn && o->tls_conn->tls_ready && !o->tls_conn->tls_handshake_told) {
        o->tls_conn->tls_handshake_told = true;
        s->tls_hs_start_us = o->tls_conn->tls_start_us;
        s->tls_hs_us = o->tls_conn->tls_handshake_us;
    }
    const weir_proxy_options *opts = &s->svc->opts;
    s->peer_ip_len = (uint8_t)o->peer_ip.len;
    memcpy(s->peer_ip, o->peer_ip.ptr, o->peer_ip.len);
    bool trusted = weir__cidr_match(opts->trusted_proxies, opts->n_trusted_proxies, o->peer);
    size_t n = trusted ? weir__gate_forwarded_client(&s->req.headers, opts, s->client_ip,
                                                     sizeof(s->client_ip))
                       : 0;
    if (n == 0) {
        memcpy(s->client_ip, s->peer_ip, s->peer_ip_len);
        n = s->peer_ip_len;
    }
    s->client_ip_len = (uint8_t)n;
    s->req_pump.src = x;
    s->resp_pump.dst = x;
    s->state = SS_EARLY;
    return trusted;
}

static void stream_refuse(void *stream, weir_exchange *x, int status, const char *reason,
                          const weir_stream_origin *o)
{
    weir_session *s = stream;
    begin(s, x, 0, o);
    s->close_after = true;
    if (s->svc->ops->new_ctx)
        s->ctx = s->svc->ops->new_ctx(s, s->svc->app);
    weir__session_fail(s, status, reason);
    run(s);
}

static void stream_start(void *stream, weir_exchange *x, uint32_t head_len,
                         const weir_stream_origin *o)
{
    weir_session *s = stream;
    const weir_proxy_options *opts = &s->svc->opts;
    bool trusted = begin(s, x, head_len, o);
    weir_gate g;
    weir__gate_request(&s->req, &s->arena, opts, trusted, &g);
    s->path = g.path;
    s->up_target = g.fwd_target;
    s->close_after = g.close;
    if (s->svc->ops->new_ctx)
        s->ctx = s->svc->ops->new_ctx(s, s->svc->app);
    if (g.status)
        weir__session_fail(s, g.status, g.reason); /* no phase sees the request; logging does */
    run(s);
}

static void stream_wake(void *stream)
{
    run(stream);
}

static void stream_abort(void *stream)
{
    weir_session *s = stream;
    terminate(s, 'K');
    s->failed = true;
    s->client_aborted = true;
    s->error = "server shutting down";
    if (s->queued && weir__climit_cancel(s->peer.conn_limit, &s->waiter)) {
        /* Out of the queue: no wake will come. (Else it comes and ends
         * the session.) */
        weir__timer_stop(s->loop, &s->queue_timer);
        s->queued = false;
        s->pending = false;
    }
    release_upstream(s, false);
    set_state(s, SS_DONE);
    /* The connection goes away now; a pending phase finishes the session
     * when it resumes. */
    s->origin.done = NULL;
    s->down = NULL;
    weir__timer_stop(s->loop, &s->client_timer);
    if (s->subreqs)
        weir__subreq_client_gone(s);
    if (s->body_reading) {
        /* A phase waits for the body that will never come: tell it, it
         * resumes and the session ends. */
        s->body_reading = false;
        s->body_cb(s, s->ctx, (weir_str){"", 0}, -ECONNABORTED);
    }
    if (s->cache)
        weir__cache_abort(s); /* out of a lock's queue, unless its wake comes */
    if (!s->pending && !s->running)
        finish(s);
}

const weir_stream_handler weir__session_handler = {
    .stream_new = stream_new,
    .stream_start = stream_start,
    .stream_refuse = stream_refuse,
    .stream_wake = stream_wake,
    .stream_drop = stream_drop,
    .stream_abort = stream_abort,
};

/* ---- entry points for session_api.c ---- */

void weir__session_run(weir_session *s)
{
    run(s);
}

void weir__session_run_task(void *arg)
{
    run(arg);
}

void weir__session_finish(weir_session *s)
{
    finish(s);
}

void weir__session_set_state(weir_session *s, int to)
{
    set_state(s, (sess_state)to);
}

void weir__session_terminate(weir_session *s, char who)
{
    terminate(s, who);
}

const char *weir__session_up_addr(weir_session *s)
{
    return up_addr(s);
}

void weir__session_release_upstream(weir_session *s, bool reusable)
{
    release_upstream(s, reusable);
}
