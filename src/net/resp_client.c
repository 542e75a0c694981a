/*
 * resp_client.c - the RESP client of weir/resp.h: per worker thread and
 * server address one connection (an `rlink`), commands pipelined on it and
 * answered in order, a timer per call, the address marked down for a
 * while after a failure.
 *
 * A call that times out has had its callback but stays in the queue until
 * its reply comes (replies are matched by order); a link whose oldest call
 * waits past down_ms is reset, so a stalled server holds nothing for long.
 * Commands of one loop round are written together (a deferred flush), so
 * a busy worker sends many per write and no callback ever runs inside
 * weir_resp_client_call.
 */
#include "net/resp_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "net/conn.h"
#include "net/resp.h"
#include "net/sock.h"

#define MAX_REPLY (64u * 1024 * 1024)

struct weir_resp_client {
    weir_resp_client_options o;
    struct sockaddr_storage ss;
    socklen_t len;
    char addr[64];
};

typedef struct server_conn server_conn;

typedef struct call {
    struct call *next;
    weir_resp_client_cb cb;
    void *arg;
    weir_timer timer;
    server_conn *sc;
    uint64_t sent_ms;
    bool answered; /* its callback ran (it timed out): the reply is dropped */
} call;

/* One TCP connection to the server; replaced, never reused, after it
 * closes (an event queued for the old socket must not reach a new one). */
typedef struct rlink {
    weir_conn c;
    server_conn *sc;
    bool connected;
} rlink;

/* A worker's state for one server address. */
struct server_conn {
    server_conn *next;
    weir_loop *loop;
    struct sockaddr_storage ss;
    socklen_t len;
    char addr[64];
    weir_resp_client_options o; /* of the client that made it (timeouts are per call) */
    rlink *l;                   /* NULL while closed */
    call *head, *tail;
    uint32_t n_calls;
    weir_resp_out out; /* commands not yet written: out.p[out_off .. out.len) */
    size_t out_off;
    bool flush_queued;
    uint64_t down_until_ms;
    uint64_t last_used_ms;
    weir_timer timer; /* the connect's deadline, then the idle check */
};

static __thread server_conn *tl_conns;
static __thread bool tl_shutdown;

weir_resp_client *weir_resp_client_new(const weir_resp_client_options *o, char *err, size_t err_len)
{
    weir_resp_client *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->o = *o;
    if (!o->addr || weir__addr_parse(o->addr, &c->ss, &c->len) < 0) {
        snprintf(err, err_len, "'%s' is not an address (expected \"ip:port\")",
                 o->addr ? o->addr : "");
        free(c);
        return NULL;
    }
    weir__addr_format((struct sockaddr *)&c->ss, c->addr, sizeof(c->addr));
    c->o.addr = c->addr;
    if (!c->o.timeout_ms)
        c->o.timeout_ms = 50;
    if (!c->o.connect_timeout_ms)
        c->o.connect_timeout_ms = 1000;
    if (!c->o.idle_timeout_ms)
        c->o.idle_timeout_ms = 60000;
    if (!c->o.max_pending)
        c->o.max_pending = 1024;
    if (!c->o.down_ms)
        c->o.down_ms = 1000;
    return c;
}

void weir_resp_client_free(weir_resp_client *c)
{
    free(c);
}

/* ---- failures ---- */

static void free_rlink(void *arg)
{
    free(arg);
}

static void close_rlink(server_conn *sc)
{
    if (!sc->l)
        return;
    weir__conn_close(&sc->l->c, false);
    weir__loop_defer(sc->loop, free_rlink, sc->l);
    sc->l = NULL;
    weir__timer_stop(sc->loop, &sc->timer);
    sc->out.len = sc->out_off = 0;
}

/* Ends every call with error (their callbacks run, if not yet) and the
 * rlink; with down, new calls fail at once for down_ms. */
static void fail_all(server_conn *sc, int error, bool down, const char *why)
{
    if (down) {
        if (sc->down_until_ms <= weir__loop_now(sc->loop))
            weir_log_warn("RESP server %s: %s: calls fail at once for %u ms", sc->addr, why,
                          sc->o.down_ms);
        sc->down_until_ms = weir__loop_now(sc->loop) + sc->o.down_ms;
    }
    close_rlink(sc);
    call *k = sc->head;
    sc->head = sc->tail = NULL;
    sc->n_calls = 0;
    while (k) {
        call *next = k->next;
        weir__timer_stop(sc->loop, &k->timer);
        if (!k->answered)
            k->cb(k->arg, error, NULL);
        free(k);
        k = next;
    }
}

/* ---- the rlink ---- */

static void flush(server_conn *sc)
{
    rlink *l = sc->l;
    if (!l || !l->connected || sc->out_off == sc->out.len || !l->c.writable)
        return;
    while (sc->out_off < sc->out.len) {
        ssize_t w = write(l->c.io.fd, sc->out.p + sc->out_off, sc->out.len - sc->out_off);
        if (w > 0) {
            sc->out_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            l->c.writable = false;
            return;
        }
        fail_all(sc, -ECONNRESET, true, "write failed");
        return;
    }
    sc->out.len = sc->out_off = 0;
}

static void flush_task(void *arg)
{
    server_conn *sc = arg;
    sc->flush_queued = false;
    flush(sc);
}

/* Replies in the read buffer go to their calls, in order. */
static void read_replies(server_conn *sc)
{
    for (;;) {
        rlink *l = sc->l;
        if (!l)
            return;
        weir_conn *c = &l->c;
        while (c->rbuf && c->rstart < c->rend) {
            weir_resp_value v;
            long n = weir__resp_reply(c->rbuf + c->rstart, c->rend - c->rstart, MAX_REPLY, &v);
            if (n == WEIR_RESP_MORE)
                break;
            call *k = sc->head;
            if (n < 0 || !k) {
                fail_all(sc, -EPROTO, true, n < 0 ? "malformed reply" : "a reply nobody asked for");
                return;
            }
            sc->head = k->next;
            if (!sc->head)
                sc->tail = NULL;
            sc->n_calls--;
            weir__timer_stop(sc->loop, &k->timer);
            c->rstart += (uint32_t)n;
            if (!k->answered)
                k->cb(k->arg, 0, &v); /* may queue calls: they go to the tail */
            free(k);
            if (sc->l != l)
                return; /* failed meanwhile */
        }
        if (c->rstart == c->rend) {
            c->rstart = c->rend = 0;
            weir__conn_release_rbuf(c);
        }
        if (!c->readable)
            return;
        if (weir__conn_need_rbuf(c) != WEIR_OK) {
            fail_all(sc, WEIR_ERR_NOMEM, false, "out of memory");
            return;
        }
        if (c->rend == c->rcap) {
            if (c->rstart) {
                memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
                c->rend -= c->rstart;
                c->rstart = 0;
            } else if (c->rcap >= MAX_REPLY || weir__conn_grow_rbuf(c, c->rcap * 2) != WEIR_OK) {
                fail_all(sc, -EPROTO, true, "a reply too large");
                return;
            }
        }
        int r = weir__conn_read(c);
        if (r == WEIR_AGAIN)
            return;
        if (r != WEIR_OK) {
            fail_all(sc, -ECONNRESET, true, "the server closed the connection");
            return;
        }
    }
}

static void timer_cb(weir_timer *t);

static void rlink_cb(weir_io *io, uint32_t events)
{
    rlink *l = weir_container_of(io, rlink, c.io);
    server_conn *sc = l->sc;
    weir__conn_on_events(&l->c, events);
    if (sc->l != l)
        return;
    if (!l->connected) {
        if (!l->c.writable && !l->c.hup && !l->c.error)
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(l->c.io.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || l->c.hup) {
            fail_all(sc, -(err ? err : ECONNREFUSED), true, err ? strerror(err) : "refused");
            return;
        }
        l->connected = true;
        weir__timer_stop(sc->loop, &sc->timer);
        weir__timer_start(sc->loop, &sc->timer, sc->o.idle_timeout_ms, timer_cb);
    }
    flush(sc);
    if (sc->l == l)
        read_replies(sc);
}

static void timer_cb(weir_timer *t)
{
    server_conn *sc = weir_container_of(t, server_conn, timer);
    if (!sc->l)
        return;
    if (!sc->l->connected) {
        fail_all(sc, -ETIMEDOUT, true, "connect timed out");
        return;
    }
    uint64_t quiet = weir__loop_now(sc->loop) - sc->last_used_ms;
    if (!sc->head && quiet >= sc->o.idle_timeout_ms) {
        close_rlink(sc);
        return;
    }
    weir__timer_start(sc->loop, &sc->timer, sc->o.idle_timeout_ms, timer_cb);
}

static int open_rlink(server_conn *sc)
{
    rlink *l = calloc(1, sizeof(*l));
    if (!l)
        return WEIR_ERR_NOMEM;
    int fd = weir__connect_start((struct sockaddr *)&sc->ss, sc->len);
    if (fd < 0) {
        free(l);
        return fd;
    }
    int rc = weir__conn_init(&l->c, sc->loop, fd, rlink_cb);
    if (rc < 0) {
        close(fd);
        free(l);
        return rc;
    }
    l->sc = sc;
    sc->l = l;
    weir__timer_start(sc->loop, &sc->timer, sc->o.connect_timeout_ms, timer_cb);
    return WEIR_OK;
}

/* ---- calls ---- */

static void call_timeout(weir_timer *t)
{
    call *k = weir_container_of(t, call, timer);
    server_conn *sc = k->sc;
    k->answered = true;
    k->cb(k->arg, -ETIMEDOUT, NULL);
    /* The oldest call waits far too long: the server stalls. */
    if (sc->head && weir__loop_now(sc->loop) - sc->head->sent_ms >= sc->o.down_ms)
        fail_all(sc, -ETIMEDOUT, true, "no reply in time");
}

static server_conn *conn_for(const weir_resp_client *c, weir_loop *loop)
{
    for (server_conn *sc = tl_conns; sc; sc = sc->next) {
        if (sc->loop == loop &&
            weir__addr_equal((const struct sockaddr *)&sc->ss, (const struct sockaddr *)&c->ss))
            return sc;
    }
    server_conn *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    sc->loop = loop;
    sc->ss = c->ss;
    sc->len = c->len;
    snprintf(sc->addr, sizeof(sc->addr), "%s", c->addr);
    sc->o = c->o;
    sc->o.addr = sc->addr;
    sc->next = tl_conns;
    tl_conns = sc;
    return sc;
}

int weir_resp_client_call(weir_resp_client *c, const weir_str *argv, size_t argc,
                          weir_resp_client_cb cb, void *arg)
{
    weir_loop *loop = weir__loop_current();
    if (!c || !loop || !argc || !cb)
        return WEIR_ERR_INVAL;
    if (tl_shutdown)
        return -ESHUTDOWN;
    server_conn *sc = conn_for(c, loop);
    if (!sc)
        return WEIR_ERR_NOMEM;
    uint64_t now = weir__loop_now(loop);
    if (now < sc->down_until_ms || sc->n_calls >= sc->o.max_pending)
        return -EAGAIN;
    if (!sc->l) {
        int rc = open_rlink(sc);
        if (rc < 0) {
            sc->down_until_ms = now + sc->o.down_ms;
            return -EAGAIN;
        }
    }
    call *k = calloc(1, sizeof(*k));
    if (!k)
        return WEIR_ERR_NOMEM;
    weir__resp_array(&sc->out, argc);
    for (size_t i = 0; i < argc; i++)
        weir__resp_bulk(&sc->out, argv[i].ptr, argv[i].len);
    if (sc->out.oom) {
        sc->out.oom = false;
        free(k);
        return WEIR_ERR_NOMEM;
    }
    k->cb = cb;
    k->arg = arg;
    k->sc = sc;
    k->sent_ms = now;
    if (sc->tail)
        sc->tail->next = k;
    else
        sc->head = k;
    sc->tail = k;
    sc->n_calls++;
    sc->last_used_ms = now;
    weir__timer_start(loop, &k->timer, c->o.timeout_ms, call_timeout);
    if (sc->l->connected && !weir__timer_armed(&sc->timer))
        weir__timer_start(loop, &sc->timer, sc->o.idle_timeout_ms, timer_cb);
    if (!sc->flush_queued) {
        sc->flush_queued = true;
        weir__loop_defer(loop, flush_task, sc);
    }
    return WEIR_OK;
}

void weir__respc_shutdown(void)
{
    tl_shutdown = true;
    for (server_conn *sc = tl_conns; sc; sc = sc->next)
        fail_all(sc, -ESHUTDOWN, false, "shutdown");
}

void weir__respc_thread_exit(void)
{
    while (tl_conns) {
        server_conn *sc = tl_conns;
        tl_conns = sc->next;
        fail_all(sc, -ESHUTDOWN, false, "shutdown");
        weir__resp_out_free(&sc->out);
        free(sc);
    }
    tl_shutdown = false;
}
