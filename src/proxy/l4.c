/*
 * l4.c - TCP sessions (weir/l4.h): the PROXY header, choosing and
 * connecting a backend (with failover and the backend's connection cap),
 * then the tunnel: splice(2) between plain sockets, a relay through user
 * space when TLS is on a side, half-close passed on, rate limits per
 * direction and the idle timeout.
 *
 * A session lives on the loop of the worker that accepted it. Its memory
 * is freed by a deferred task after it ends, so an event already queued
 * for its sockets in the same round finds a closed (no-op) connection.
 */
#include "proxy/l4.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/pool.h"
#include "net/conn.h"
#include "net/conn_limit.h"
#include "net/proxy_proto.h"
#include "net/sock.h"
#include "net/splice.h"
#include "net/tls.h"
#include "net/upool.h"
#include "http/h1_server.h"
#include "net/client_hello.h"
#include "proxy/service.h"

typedef enum l4_state {
    L4_PROXY,     /* waiting for the PROXY header */
    L4_HANDSHAKE, /* terminating the client's TLS */
    L4_HELLO,     /* reading the ClientHello (passthrough) */
    L4_CONNECT,   /* choosing, queueing for a slot, or connecting */
    L4_TUNNEL,
    L4_DONE,
} l4_state;

struct weir_tcp_session {
    weir_conn down; /* the client's connection */
    weir_loop *loop;
    const weir_service *svc;
    const char *listen_text;
    weir_l4_list *list;
    weir_h1s_list *http; /* where a declined passthrough connection goes */
    char sni[256];
    bool has_sni; /* sni is known: from the ClientHello, or the TLS terminated */
    weir_tcp_session *prev, *next;
    l4_state state;
    void *ctx;
    bool has_ctx;
    union {
        struct sockaddr sa;
        struct sockaddr_storage ss;
    } client;
    char ip[WEIR_ADDR_STRLEN];
    size_t ip_len;

    /* the backend */
    weir_peer peer;
    char up_addr[WEIR_ADDR_STRLEN];
    weir_upconn *up;
    uint64_t up_bytes_in, up_bytes_out; /* of the connection, kept when it closes */
    weir_conn_waiter waiter;
    bool queued;   /* waiting for a slot of peer.conn_limit */
    bool has_slot; /* holds one, not yet handed to a connection */
    bool ending;   /* ended while its wake was on the way: the wake finishes it */
    int attempts;

    /* the tunnel */
    weir_splice sp;
    bool buffered;   /* through user space (TLS on a side, no pipes, or not yet) */
    bool can_splice; /* both sides plain: splice(2) once SPLICE_AFTER bytes moved */
    bool pending[2]; /* buffered: the source's read buffer is queued on the other side */
    bool done[2];    /* direction finished: its FIN was passed on */
    int64_t tokens[2];
    uint64_t refill_ms[2];
    uint64_t last_active_ms;

    weir_timer timer;         /* PROXY header, queue and connect deadlines, then idle */
    weir_timer rate_timer[2]; /* a rate limit's pause, per direction */

    uint64_t t_start_us, t_connect_us;
    int64_t connect_us;
    int status;
    char term[3];
    const char *error;
};

/* Bytes a session moves through memory before it opens its pipes: most
 * short sessions (a request and its answer) are over by then. */
#define SPLICE_AFTER (64 * 1024)

static weir_pool_class l4_class;

__attribute__((constructor)) static void register_class(void)
{
    l4_class = weir__pool_register("l4", sizeof(weir_tcp_session), 1024);
}

const struct sockaddr *weir_tcp_session_client_addr(const weir_tcp_session *s)
{
    return &s->client.sa;
}

weir_str weir_tcp_session_client_ip(const weir_tcp_session *s)
{
    return (weir_str){s->ip, s->ip_len};
}

const char *weir_tcp_session_listen_addr(const weir_tcp_session *s)
{
    return s->listen_text;
}

const char *weir_tcp_session_sni(const weir_tcp_session *s)
{
    return s->has_sni ? s->sni : NULL;
}

bool weir_tcp_session_tls(const weir_tcp_session *s, weir_tls_info *out)
{
    return weir__tls_info(s->down.ssl, out);
}

static void free_session(void *arg)
{
    weir__pool_put(l4_class, arg);
}

/* ---- the end ---- */

static void unlink_session(weir_tcp_session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        s->list->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->list->n--;
}

static void finish(weir_tcp_session *s)
{
    weir__timer_stop(s->loop, &s->timer);
    weir__timer_stop(s->loop, &s->rate_timer[0]);
    weir__timer_stop(s->loop, &s->rate_timer[1]);
    if (s->has_slot) {
        weir__climit_release(s->peer.conn_limit);
        s->has_slot = false;
    }
    weir__splice_close(&s->sp);
    if (s->up) {
        s->up_bytes_in = s->up->conn.bytes_in;
        s->up_bytes_out = s->up->conn.bytes_out;
        weir__upconn_close(s->up, false);
        s->up = NULL;
    }
    weir_l4_stats st = {
        .status = s->status,
        .bytes_received = s->down.bytes_in,
        .bytes_sent = s->down.bytes_out,
        .upstream_bytes_received = s->up_bytes_in,
        .upstream_bytes_sent = s->up_bytes_out,
        .session_time_us = (int64_t)(weir__loop_now_us(s->loop) - s->t_start_us),
        .connect_time_us = s->connect_us,
        .upstream_addr = s->up_addr[0] ? s->up_addr : "-",
        .attempts = s->attempts + (s->connect_us >= 0), /* failures, and the one that worked */
        .error = s->error,
    };
    memcpy(st.termination, s->term, sizeof(st.termination));
    weir__conn_close(&s->down, false);
    unlink_session(s);
    const weir_tcp_ops *ops = s->svc->tcp_ops;
    if (s->has_ctx) {
        if (ops->logging)
            ops->logging(s, s->ctx, &st);
        if (ops->free_ctx)
            ops->free_ctx(s->svc->app, s->ctx);
    }
    weir__loop_defer(s->loop, free_session, s);
}

/* Ends the session: who and when as in weir_l4_stats.termination. */
static void end(weir_tcp_session *s, char who, char when, int status, const char *error)
{
    if (s->state == L4_DONE)
        return;
    s->state = L4_DONE;
    s->term[0] = who;
    s->term[1] = when;
    s->status = status;
    s->error = error;
    if (s->queued) {
        s->queued = false;
        if (!weir__climit_cancel(s->peer.conn_limit, &s->waiter)) {
            s->ending = true; /* the wake is on its way and finishes */
            return;
        }
    }
    finish(s);
}

/* ---- the tunnel ---- */

static uint64_t rate_of(const weir_tcp_session *s, int d)
{
    return d ? s->svc->tcp.download_rate : s->svc->tcp.upload_rate;
}

/* What direction d may read now under its rate (a token bucket holding
 * one second's worth at most). */
static uint64_t allowance(weir_tcp_session *s, int d)
{
    uint64_t rate = rate_of(s, d);
    if (!rate)
        return UINT64_MAX;
    uint64_t now = weir__loop_now(s->loop);
    uint64_t ms = now - s->refill_ms[d];
    if (ms > 1000)
        ms = 1000;
    uint64_t add = rate * ms / 1000;
    if (add) { /* else the fraction waits for a later call */
        s->refill_ms[d] = now;
        s->tokens[d] += (int64_t)add;
        if (s->tokens[d] > (int64_t)rate)
            s->tokens[d] = (int64_t)rate;
    }
    return s->tokens[d] > 0 ? (uint64_t)s->tokens[d] : 0;
}

static void step_tunnel(weir_tcp_session *s);

static void rate_resume_up(weir_timer *t)
{
    step_tunnel(weir_container_of(t, weir_tcp_session, rate_timer[0]));
}

static void rate_resume_down(weir_timer *t)
{
    step_tunnel(weir_container_of(t, weir_tcp_session, rate_timer[1]));
}

/* Direction d through user space: the source's read buffer is queued on
 * the other side, and read again once all of it is written. */
static int relay(weir_tcp_session *s, int d, weir_conn *src, weir_conn *dst, uint64_t max,
                 uint64_t *moved)
{
    for (;;) {
        if (s->pending[d]) {
            int rc = weir__conn_flush(dst);
            if (rc != WEIR_OK)
                return rc;
            s->pending[d] = false;
            src->rstart = src->rend = 0;
        }
        if (src->eof || *moved >= max) {
            weir__conn_release_rbuf(src);
            return src->eof ? WEIR_DONE : WEIR_AGAIN;
        }
        if (weir__conn_need_rbuf(src) < 0)
            return -ENOMEM;
        /* Under a rate limit a read takes no more than allowed. */
        uint32_t cap = src->rcap;
        if (max - *moved < cap - src->rend)
            src->rcap = src->rend + (uint32_t)(max - *moved);
        uint32_t room = src->rcap - src->rend;
        int rc = weir__conn_read(src);
        src->rcap = cap;
        if (rc == WEIR_OK) {
            uint32_t n = src->rend - src->rstart;
            *moved += n;
            /* A short read of a plain socket emptied it: the next byte
             * raises a new edge, so there is no point asking again (unless
             * the peer's FIN came in the same event). */
            if (!src->ssl && n < room && !src->hup)
                src->readable = false;
            if (weir__conn_queue(dst, src->rbuf + src->rstart, n) < 0)
                return -ENOMEM;
            s->pending[d] = true;
            continue;
        }
        weir__conn_release_rbuf(src);
        return rc == WEIR_DECLINED ? -ENOBUFS : rc;
    }
}

/* Moves what can move in direction d (0: client to backend); WEIR_AGAIN,
 * WEIR_DONE or -errno. */
static int step_dir(weir_tcp_session *s, int d)
{
    weir_conn *src = d ? &s->up->conn : &s->down, *dst = d ? &s->down : &s->up->conn;
    uint64_t max = allowance(s, d), moved = 0;
    int rc = s->buffered ? relay(s, d, src, dst, max, &moved)
                         : weir__splice_dir(&s->sp, d, src, dst, &moved, max);
    uint64_t rate = rate_of(s, d);
    if (!rate)
        return rc;
    s->tokens[d] -= (int64_t)moved;
    if (rc == WEIR_AGAIN && s->tokens[d] <= 0 && !weir__timer_armed(&s->rate_timer[d])) {
        /* Until the bucket holds a byte again. */
        uint64_t wait = ((uint64_t)(1 - s->tokens[d]) * 1000 + rate - 1) / rate;
        weir__timer_start(s->loop, &s->rate_timer[d], wait ? wait : 1,
                          d ? rate_resume_down : rate_resume_up);
    }
    return rc;
}

static uint64_t moved_total(const weir_tcp_session *s)
{
    return s->down.bytes_in + s->down.bytes_out + s->up->conn.bytes_in + s->up->conn.bytes_out;
}

static void step_tunnel(weir_tcp_session *s)
{
    if (s->state != L4_TUNNEL)
        return;
    uint64_t before = moved_total(s);
    /* A failure can end one direction and let the other flush: a second
     * pass at most. */
    for (int pass = 0, again = 1; again && pass < 3; pass++) {
        again = 0;
        for (int d = 0; d < 2; d++) {
            if (s->done[d])
                continue;
            weir_conn *src = d ? &s->up->conn : &s->down, *dst = d ? &s->down : &s->up->conn;
            int rc = step_dir(s, d);
            if (rc == WEIR_DONE) {
                /* The source finished sending and all of it arrived: a FIN
                 * to the other side, which may go on sending (a
                 * half-close). When the other way is done too, the close
                 * sends that FIN. */
                s->done[d] = true;
                if (!dst->error && (!s->done[!d] || dst->ssl))
                    weir__conn_shutdown(dst);
            } else if (rc == -ENOMEM || rc == -ENOBUFS) {
                end(s, 'P', 'T', 200, "out of memory in the tunnel");
                return;
            } else if (rc < 0) {
                weir_log_debug("client %s, backend %s: %s failed the tunnel: %s", s->ip, s->up_addr,
                               s->down.error ? "the client" : "the backend", strerror(-rc));
                if (src->error && !dst->error) {
                    /* The source failed (a reset): what it sent before
                     * still goes out (the pipe, the buffer), then a FIN. */
                    src->eof = true;
                    src->readable = false;
                } else {
                    /* The destination failed: this way is over, and the
                     * other one, from it, ends once it has flushed. */
                    s->done[d] = true;
                    dst->eof = true;
                    dst->readable = false;
                }
                again = 1;
            }
        }
    }
    if (s->done[0] && s->done[1]) {
        if (s->down.error || s->up->conn.error) {
            bool client = s->down.error;
            end(s, client ? 'C' : 'S', 'T', 200,
                client ? "the client failed the tunnel" : "the backend failed the tunnel");
        } else {
            end(s, '-', '-', 200, NULL);
        }
        return;
    }
    uint64_t moved = moved_total(s);
    if (moved != before)
        s->last_active_ms = weir__loop_now(s->loop);
    if (s->buffered && s->can_splice && moved >= SPLICE_AFTER && !s->pending[0] && !s->pending[1] &&
        weir__splice_open(&s->sp) == 0) {
        /* Nothing is held in memory: from here the kernel moves it. */
        s->buffered = false;
        step_tunnel(s); /* what is readable now goes the new way */
    }
}

static void idle_check(weir_timer *t)
{
    weir_tcp_session *s = weir_container_of(t, weir_tcp_session, timer);
    uint64_t idle = s->svc->tcp.idle_timeout_ms, now = weir__loop_now(s->loop);
    if (now - s->last_active_ms >= idle) {
        end(s, 'c', 'T', 200, "idle timeout");
        return;
    }
    weir__timer_start(s->loop, &s->timer, idle - (now - s->last_active_ms), idle_check);
}

static void start_tunnel(weir_tcp_session *s)
{
    weir__timer_stop(s->loop, &s->timer);
    s->connect_us = (int64_t)(weir__loop_now_us(s->loop) - s->t_connect_us);
    if (s->svc->tcp_ops->connected_to_upstream)
        s->svc->tcp_ops->connected_to_upstream(s, s->ctx, &s->peer);
    s->state = L4_TUNNEL;
    /* Through memory first: a short session never pays for the pipes. */
    s->buffered = true;
    s->can_splice = !s->down.ssl && !s->up->conn.ssl;
    uint64_t now = weir__loop_now(s->loop);
    for (int d = 0; d < 2; d++) {
        s->tokens[d] = (int64_t)rate_of(s, d);
        s->refill_ms[d] = now;
    }
    s->last_active_ms = now;
    weir__timer_start(s->loop, &s->timer, s->svc->tcp.idle_timeout_ms, idle_check);
    step_tunnel(s);
}

/* ---- choosing and connecting ---- */

static void choose(weir_tcp_session *s);

static void connect_failed(weir_tcp_session *s, int err)
{
    weir__timer_stop(s->loop, &s->timer);
    if (s->up) {
        weir__upconn_close(s->up, true);
        s->up = NULL;
    }
    s->attempts++;
    char who = err == -ETIMEDOUT ? 's' : 'S';
    /* Kept for "no other backend" after a retry. */
    s->term[0] = who;
    s->error = err == -ETIMEDOUT ? "backend connect timed out" : "backend connect failed";
    weir_log_info("client %s: backend %s: %s", s->ip, s->up_addr,
                  err == -ETIMEDOUT ? "connect timed out" : strerror(-err));
    const weir_tcp_ops *ops = s->svc->tcp_ops;
    if (ops->fail_to_connect && ops->fail_to_connect(s, s->ctx, &s->peer, err, s->attempts)) {
        choose(s);
        return;
    }
    end(s, who, 'C', 502, s->error);
}

static void connect_timeout(weir_timer *t)
{
    connect_failed(weir_container_of(t, weir_tcp_session, timer), -ETIMEDOUT);
}

static void up_wake(void *owner)
{
    weir_tcp_session *s = owner;
    if (s->state == L4_TUNNEL) {
        step_tunnel(s);
        return;
    }
    if (s->state != L4_CONNECT || !s->up)
        return;
    int rc = weir__upconn_connect_result(s->up);
    if (rc == WEIR_AGAIN)
        return;
    if (rc < 0) {
        connect_failed(s, rc);
        return;
    }
    start_tunnel(s);
}

static void connect_now(weir_tcp_session *s)
{
    int err = 0;
    s->t_connect_us = weir__loop_now_us(s->loop);
    weir_upconn_pp pp = {.len = 0};
    if (s->peer.send_proxy) {
        /* The client's connection, as the PROXY header names it: from
         * the client (the one a PROXY header in gave) to our address. */
        struct sockaddr_storage local;
        socklen_t llen = sizeof(local);
        if (getsockname(s->down.io.fd, (struct sockaddr *)&local, &llen) < 0)
            memset(&local, 0, sizeof(local));
        weir_tls_info ti;
        const char *sni = weir__tls_info(s->down.ssl, &ti) ? ti.sni : NULL;
        weir__upconn_pp(&pp, &s->peer, &s->client.sa, (struct sockaddr *)&local, sni);
    }
    s->up = weir__upconn_connect(s->loop, &s->peer, &pp, s, up_wake, &err);
    if (!s->up) {
        if (s->has_slot) {
            weir__climit_release(s->peer.conn_limit);
            s->has_slot = false;
        }
        connect_failed(s, err ? err : -ENOMEM);
        return;
    }
    s->has_slot = false; /* the connection holds it now */
    weir__timer_start(s->loop, &s->timer, s->peer.connect_timeout_ms, connect_timeout);
    up_wake(s); /* a connect to loopback may be done already */
}

static void queue_granted(void *arg)
{
    weir_tcp_session *s = arg;
    s->waiter.state = WEIR_WAITER_IDLE;
    s->queued = false;
    s->has_slot = s->waiter.slot;
    if (s->ending) {
        finish(s);
        return;
    }
    weir__timer_stop(s->loop, &s->timer);
    if (!s->has_slot) { /* woken for an idle pooled connection: of no use here */
        choose(s);
        return;
    }
    connect_now(s);
}

static void queue_timeout(weir_timer *t)
{
    weir_tcp_session *s = weir_container_of(t, weir_tcp_session, timer);
    if (!weir__climit_cancel(s->peer.conn_limit, &s->waiter))
        return; /* its wake is on the way and decides */
    s->queued = false;
    /* The backend is busy, not failing: no connect was tried. */
    end(s, 's', 'Q', 503, "no connection to the backend within queue_timeout");
}

/* upstream_peer, then a slot under the backend's cap (or a place in its
 * queue), then the connect. */
static void choose(weir_tcp_session *s)
{
    const weir_tcp_ops *ops = s->svc->tcp_ops;
    memset(&s->peer, 0, sizeof(s->peer));
    s->peer.connect_timeout_ms = s->svc->tcp.connect_timeout_ms;
    weir_phase_result r = ops->upstream_peer(s, s->ctx, &s->peer);
    if (r != WEIR_PHASE_CONTINUE || s->peer.addr_len == 0) {
        if (s->attempts)
            end(s, s->term[0], 'C', 502, s->error); /* the last failure's */
        else
            end(s, 'P', 'R', 503, "no backend is usable");
        return;
    }
    if (!s->peer.connect_timeout_ms)
        s->peer.connect_timeout_ms = s->svc->tcp.connect_timeout_ms;
    if (s->peer.addr_text)
        snprintf(s->up_addr, sizeof(s->up_addr), "%s", s->peer.addr_text);
    else
        weir__addr_format((struct sockaddr *)&s->peer.addr, s->up_addr, sizeof(s->up_addr));
    weir_conn_limit *lim = s->peer.conn_limit;
    if (lim) {
        s->waiter = (weir_conn_waiter){
            .loop = s->loop, .granted = queue_granted, .arg = s, .slot_only = true};
        if (weir__climit_acquire(lim, &s->waiter, false) == WEIR_AGAIN) {
            s->queued = true;
            weir__timer_start(s->loop, &s->timer,
                              s->peer.queue_timeout_ms ? s->peer.queue_timeout_ms : 30000,
                              queue_timeout);
            return;
        }
        s->has_slot = true;
    }
    connect_now(s);
}

/* ---- the start ---- */

static void begin(weir_tcp_session *s)
{
    weir__timer_stop(s->loop, &s->timer);
    const weir_tcp_ops *ops = s->svc->tcp_ops;
    s->ctx = ops->new_ctx ? ops->new_ctx(s, s->svc->app) : NULL;
    s->has_ctx = true;
    s->state = L4_CONNECT;
    choose(s);
}

/* Before the PROXY header and the TLS handshake are done the session has
 * no context yet: a connection that fails them is closed with a log line
 * only, as an HTTP listener does. */
static void drop(weir_tcp_session *s, const char *why)
{
    weir_log_info("client %s on %s: %s: closed", s->ip, s->listen_text, why);
    end(s, 'c', 'R', 400, why);
}

static void try_handshake(weir_tcp_session *s)
{
    int rc = weir__conn_handshake(&s->down);
    if (rc == WEIR_AGAIN)
        return;
    if (rc < 0) {
        if (BIO_number_read(SSL_get_rbio(s->down.ssl)) == 0) {
            /* Connected and closed without a byte: a port check. */
            weir_log_debug("client %s: closed before the TLS handshake", s->ip);
            end(s, 'c', 'R', 400, "closed before the TLS handshake");
            return;
        }
        weir__tls_count(WEIR_TLS_FAILURE);
        char why[300];
        snprintf(why, sizeof(why), "TLS handshake failed: %s", weir__conn_tls_error());
        weir_log_info("client %s on %s: %s: closed", s->ip, s->listen_text, why);
        end(s, 'c', 'R', 400, "TLS handshake failed");
        return;
    }
    weir__tls_count(WEIR_TLS_HANDSHAKE);
    if (SSL_session_reused(s->down.ssl))
        weir__tls_count(WEIR_TLS_RESUMED);
    const char *name = SSL_get_servername(s->down.ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(s->sni, sizeof(s->sni), "%s", name ? name : "");
    s->has_sni = true;
    s->down.readable = true; /* bytes may wait in OpenSSL's buffer */
    begin(s);
}

/* A passthrough connection its HTTP listener terminates after all: the
 * socket, with every byte the client sent still in it, goes to the HTTP
 * service; this session ends without a trace (it had no context). */
static void hand_to_http(weir_tcp_session *s)
{
    const weir_service *http = s->svc->fallback;
    weir__timer_stop(s->loop, &s->timer);
    int fd = weir__conn_detach_fd(&s->down);
    s->state = L4_DONE;
    unlink_session(s);
    socklen_t len = s->client.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                       : sizeof(struct sockaddr_in);
    weir__h1s_accept(s->loop, fd, true, &s->client.sa, len, &http->h1, s->http);
    weir__loop_defer(s->loop, free_session, s);
}

/* Passthrough: the ClientHello, peeked (it stays in the socket for the
 * backend, or for the HTTP service that terminates it). */
static void try_hello(weir_tcp_session *s)
{
    uint8_t buf[WEIR_CH_MAX];
    ssize_t n = recv(s->down.io.fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        s->down.readable = false;
        return;
    }
    int r =
        n <= 0 ? WEIR_CH_INVALID : weir__client_hello_sni(buf, (size_t)n, s->sni, sizeof(s->sni));
    if (r == WEIR_CH_MORE && s->down.hup) {
        /* Its FIN came after all it sent: the rest never will. */
        drop(s, "closed before a whole ClientHello");
        return;
    }
    if (r == WEIR_CH_MORE) {
        /* The peek sees everything that came; the next edge brings more. */
        s->down.readable = false;
        return;
    }
    if (r == WEIR_CH_INVALID) {
        if (s->svc->fallback && n > 0) {
            hand_to_http(s); /* its TLS code answers what is not TLS */
            return;
        }
        drop(s, n <= 0 ? "closed before its ClientHello" : "not a TLS ClientHello");
        return;
    }
    s->has_sni = true;
    const weir_tcp_ops *ops = s->svc->tcp_ops;
    if (s->svc->fallback && ops->take && !ops->take(s, s->svc->app)) {
        hand_to_http(s);
        return;
    }
    s->down.readable = true;
    begin(s);
}

static void handshake_timeout(weir_timer *t)
{
    weir_tcp_session *s = weir_container_of(t, weir_tcp_session, timer);
    drop(s, s->state == L4_HELLO ? "no ClientHello within the timeout"
                                 : "no TLS handshake within the timeout");
}

/* After the accept and the PROXY header: TLS when the service terminates
 * it, or the ClientHello when it passes TLS through, then the backend. */
static void start_client(weir_tcp_session *s)
{
    weir__timer_stop(s->loop, &s->timer);
    if (s->svc->tcp.peek_client_hello) {
        s->state = L4_HELLO;
        weir__timer_start(s->loop, &s->timer, s->svc->tcp.tls_handshake_timeout_ms,
                          handshake_timeout);
        s->down.readable = true;
        try_hello(s);
        return;
    }
    if (!s->svc->tcp.tls) {
        begin(s);
        return;
    }
    SSL *ssl = weir__tls_server_ssl(s->svc->tcp.tls);
    if (!ssl) {
        drop(s, "out of memory for TLS");
        return;
    }
    weir__conn_set_tls(&s->down, ssl);
    s->state = L4_HANDSHAKE;
    weir__timer_start(s->loop, &s->timer, s->svc->tcp.tls_handshake_timeout_ms, handshake_timeout);
    try_handshake(s);
}

static void try_proxy(weir_tcp_session *s)
{
    weir_pp_header pp;
    int r = weir__pp_take(s->down.io.fd, &pp);
    if (r == WEIR_PP_MORE && s->down.hup) {
        drop(s, "closed before a whole PROXY header");
        return;
    }
    if (r == WEIR_PP_MORE) {
        s->down.readable = false;
        return;
    }
    if (r != WEIR_PP_TAKEN) {
        drop(s, r == WEIR_PP_CLOSED ? "closed before its PROXY header"
                                    : "not a valid PROXY header (or one for a datagram)");
        return;
    }
    if (pp.has_addrs) {
        memcpy(&s->client.ss, &pp.src, pp.src_len);
        s->ip_len = weir__addr_format_ip(&s->client.sa, s->ip, sizeof(s->ip));
    }
    /* What came with the header (bytes, or the FIN, whose edge was
     * reported with it) is read next: a read that finds nothing costs
     * one EAGAIN. */
    s->down.readable = true;
    start_client(s);
}

static void proxy_timeout(weir_timer *t)
{
    drop(weir_container_of(t, weir_tcp_session, timer), "no PROXY header within the timeout");
}

static void down_cb(weir_io *io, uint32_t events)
{
    weir_tcp_session *s = weir_container_of(io, weir_tcp_session, down.io);
    weir__conn_on_events(&s->down, events);
    if (s->state == L4_PROXY)
        try_proxy(s);
    else if (s->state == L4_HANDSHAKE)
        try_handshake(s);
    else if (s->state == L4_HELLO)
        try_hello(s);
    else if (s->state == L4_TUNNEL)
        step_tunnel(s);
    else if (s->state == L4_CONNECT && (events & (EPOLLERR | EPOLLHUP)))
        /* A reset (or a close of both directions) while queued or
         * connecting: nobody is left to answer, so its place in the queue
         * and the backend's connect go (HAProxy's abortonclose). A FIN
         * alone is a half-close: the request may be whole, it waits. */
        end(s, 'C', s->queued ? 'Q' : 'C', 499, "client went away before the backend answered");
    /* While connecting the client's bytes (and FIN) wait in its socket. */
}

int weir__l4_accept(weir_loop *loop, int fd, const struct sockaddr *peer, socklen_t peer_len,
                    const weir_service *svc, const char *listen_text, weir_l4_list *list,
                    weir_h1s_list *http)
{
    weir_tcp_session *s = weir__pool_get(l4_class);
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    memset(s, 0, sizeof(*s));
    int rc = weir__conn_init(&s->down, loop, fd, down_cb);
    if (rc < 0) {
        close(fd);
        weir__pool_put(l4_class, s);
        return rc;
    }
    s->loop = loop;
    s->svc = svc;
    s->listen_text = listen_text;
    s->list = list;
    s->http = http;
    s->t_start_us = weir__loop_now_us(loop);
    s->connect_us = -1;
    s->status = 200;
    memcpy(s->term, "--", 3);
    if (peer_len <= sizeof(s->client))
        memcpy(&s->client, peer, peer_len);
    s->ip_len = weir__addr_format_ip(&s->client.sa, s->ip, sizeof(s->ip));
    s->next = list->head;
    if (s->next)
        s->next->prev = s;
    list->head = s;
    list->n++;
    if (svc->tcp.proxy_protocol) {
        s->state = L4_PROXY;
        weir__timer_start(loop, &s->timer, svc->tcp.handshake_timeout_ms, proxy_timeout);
        s->down.readable = true; /* it may be here already */
        try_proxy(s);
        return 0;
    }
    start_client(s);
    return 0;
}

void weir__l4_list_close_all(weir_l4_list *list)
{
    weir_tcp_session *next;
    for (weir_tcp_session *s = list->head; s; s = next) {
        next = s->next;
        /* One that ended while its queue wake was on the way stays until
         * the wake (a task on this loop, run before the worker exits). */
        if (s->state != L4_DONE)
            end(s, 'K',
                s->state == L4_TUNNEL    ? 'T'
                : s->state == L4_CONNECT ? 'C'
                                         : 'R',
                s->status, "shutdown");
    }
}
