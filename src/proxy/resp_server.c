/*
 * resp_server.c - RESP connections (weir/resp.h): reading commands,
 * answering them in order, pipelining, back-pressure, the idle timeout,
 * and closing gracefully (QUIT, a protocol error, a drain).
 *
 * Replies are written into the worker's buffer while a batch of commands
 * runs, then straight to the socket; only what the socket does not take
 * is copied into the connection (pend), and once that passes
 * max_pending_output no command is read until it is out. A busy
 * connection so costs no allocation per command, and one whose client
 * does not read holds at most max_pending_output and a batch (64 KB).
 *
 * A graceful close shuts our sending side after the last reply and reads
 * (discarding) until the client's FIN, at most LINGER_MS: closing with
 * unread bytes would send an RST, which can destroy replies the client
 * has not read yet.
 */
#include "proxy/resp_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/pool.h"
#include "net/sock.h"
#include "proxy/service.h"

#define BATCH_OUT (64 * 1024) /* replies gathered before they are written */
#define READS_PER_ROUND 16    /* reads for one connection before others get a turn */
#define LINGER_MS 2000
#define DRAIN_MS 2000   /* a draining connection mid-command gets this long */
#define KEEPALIVE_S 300 /* redis-server's tcp-keepalive */

static weir_pool_class resp_class;
static _Atomic uint64_t next_id = 1;

__attribute__((constructor)) static void register_class(void)
{
    resp_class = weir__pool_register("resp", sizeof(weir_resp_conn), 1024);
}

/* The worker's scratch: replies of the running batch, and the parser's
 * arguments and unescaped inline line. */
static __thread weir_resp_out tl_out;
static __thread weir_str *tl_args;
static __thread size_t tl_args_cap;
static __thread char *tl_scratch;
static __thread size_t tl_scratch_cap;

bool weir_resp_conn_resp3(const weir_resp_conn *c)
{
    return c->resp3;
}

const struct sockaddr *weir_resp_conn_client_addr(const weir_resp_conn *c)
{
    return &c->client.sa;
}

weir_str weir_resp_conn_client_ip(const weir_resp_conn *c)
{
    return (weir_str){c->ip, c->ip_len};
}

const char *weir_resp_conn_listen_addr(const weir_resp_conn *c)
{
    return c->listen_text;
}

uint64_t weir_resp_conn_id(const weir_resp_conn *c)
{
    return c->id;
}

void weir_resp_conn_quit(weir_resp_conn *c)
{
    c->quit = true;
}

/* ---- the end ---- */

static void free_conn(void *arg)
{
    weir__pool_put(resp_class, arg);
}

static void close_now(weir_resp_conn *rc)
{
    if (rc->closed)
        return;
    rc->closed = true;
    weir__timer_stop(rc->loop, &rc->timer);
    weir__conn_close(&rc->c, false);
    free(rc->pend);
    rc->pend = NULL;
    if (rc->prev)
        rc->prev->next = rc->next;
    else
        rc->list->head = rc->next;
    if (rc->next)
        rc->next->prev = rc->prev;
    atomic_fetch_sub_explicit(&rc->list->n, 1, memory_order_relaxed);
    const weir_resp_ops *ops = rc->svc->resp_ops;
    if (rc->has_ctx && ops->free_ctx)
        ops->free_ctx(rc->svc->app, rc->ctx);
    rc->has_ctx = false;
    /* Freed after this round: an event already queued finds a closed conn. */
    weir__loop_defer(rc->loop, free_conn, rc);
}

static void linger_cb(weir_timer *t)
{
    close_now(weir_container_of(t, weir_resp_conn, timer));
}

/* Our replies are out: shut our side and wait for the client's FIN. */
static void close_gracefully(weir_resp_conn *rc)
{
    if (rc->lingering || rc->closed)
        return;
    rc->lingering = true;
    weir__conn_shutdown(&rc->c);
    weir__conn_release_rbuf(&rc->c);
    weir__timer_stop(rc->loop, &rc->timer);
    weir__timer_start(rc->loop, &rc->timer, LINGER_MS, linger_cb);
    if (weir__conn_discard(&rc->c) == WEIR_DONE)
        close_now(rc);
}

/* ---- output ---- */

/* Writes what the socket takes of p[0..n): the bytes written, or -1 on an
 * error (the connection is closed). */
static ssize_t send_some(weir_resp_conn *rc, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(rc->c.io.fd, p + done, n - done);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            rc->c.writable = false;
            break;
        }
        close_now(rc);
        return -1;
    }
    rc->c.bytes_out += done;
    return (ssize_t)done;
}

/* Writes the unsent replies the socket takes. False if the connection
 * closed. */
static bool flush_pend(weir_resp_conn *rc)
{
    if (!rc->pend || !rc->c.writable)
        return true;
    ssize_t w = send_some(rc, rc->pend + rc->pend_off, rc->pend_len - rc->pend_off);
    if (w < 0)
        return false;
    rc->pend_off += (size_t)w;
    if (rc->pend_off == rc->pend_len) {
        free(rc->pend);
        rc->pend = NULL;
        rc->pend_off = rc->pend_len = rc->pend_cap = 0;
    }
    return true;
}

/* Keeps p[0..n) after the unsent replies. False on OOM. */
static bool keep(weir_resp_conn *rc, const char *p, size_t n)
{
    if (rc->pend && rc->pend_off && rc->pend_off >= rc->pend_len / 2) {
        memmove(rc->pend, rc->pend + rc->pend_off, rc->pend_len - rc->pend_off);
        rc->pend_len -= rc->pend_off;
        rc->pend_off = 0;
    }
    if (!rc->pend || rc->pend_cap - rc->pend_len < n) {
        size_t cap = rc->pend_cap ? rc->pend_cap : 4096;
        while (cap - rc->pend_len < n)
            cap *= 2;
        char *np = realloc(rc->pend, cap);
        if (!np)
            return false;
        rc->pend = np;
        rc->pend_cap = cap;
    }
    memcpy(rc->pend + rc->pend_len, p, n);
    rc->pend_len += n;
    return true;
}

/* Whether the unsent replies hold the connection's reading back. */
static bool held_back(const weir_resp_conn *rc)
{
    return rc->pend && rc->pend_len - rc->pend_off >= rc->svc->resp.max_pending_output;
}

/* Sends the batch's replies after the unsent ones; keeps what the socket
 * did not take. False if the connection closed. */
static bool send_batch(weir_resp_conn *rc)
{
    weir_resp_out *o = &tl_out;
    rc->out = NULL;
    bool ok = !o->oom;
    if (o->oom)
        weir_log_warn("RESP client %s: out of memory for its replies: closed", rc->ip);
    if (ok && o->len) {
        ssize_t w = !rc->pend && rc->c.writable ? send_some(rc, o->p, o->len) : 0;
        if (w < 0)
            ok = false;
        else if ((size_t)w < o->len && !keep(rc, o->p + w, o->len - (size_t)w))
            ok = false;
    }
    o->len = 0;
    o->oom = false;
    if (o->cap > 4 * BATCH_OUT) {
        /* One big reply (a long MGET): do not keep its buffer. */
        weir__resp_out_free(o);
    }
    if (!ok)
        close_now(rc);
    return ok;
}

/* ---- commands ---- */

static void run_command(weir_resp_conn *rc, const weir_str *argv, size_t argc)
{
    const weir_resp_ops *ops = rc->svc->resp_ops;
    size_t before = tl_out.len;
    if (ops->command && ops->command(rc, rc->ctx, argv, argc))
        return;
    tl_out.len = before; /* a callback that declined wrote nothing */
    if (!weir__resp_builtin(rc, argv, argc))
        weir__resp_unknown(rc, argv, argc);
}

static bool scratch_for(const weir_resp_options *o)
{
    if (tl_args_cap < o->max_args) {
        weir_str *a = realloc(tl_args, o->max_args * sizeof(*a));
        if (!a)
            return false;
        tl_args = a;
        tl_args_cap = o->max_args;
    }
    if (tl_scratch_cap < o->max_inline) {
        char *s = realloc(tl_scratch, o->max_inline);
        if (!s)
            return false;
        tl_scratch = s;
        tl_scratch_cap = o->max_inline;
    }
    return true;
}

/* A protocol error: the reply, then a graceful close. */
static void protocol_error(weir_resp_conn *rc, const char *why)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "ERR %s", why);
    weir__resp_error(&tl_out, msg);
    weir_log_info("RESP client %s on %s: %s: closed", rc->ip, rc->listen_text, why);
    rc->quit = true;
}

/*
 * Answers the complete commands buffered, up to BATCH_OUT of replies.
 * Returns true when it stopped for want of input (the buffer holds at
 * most part of a command).
 */
static bool answer_buffered(weir_resp_conn *rc)
{
    const weir_resp_options *o = &rc->svc->resp;
    weir_conn *c = &rc->c;
    weir_resp_limits lim = {o->max_args, o->max_bulk, o->max_inline};
    tl_out.resp3 = rc->resp3;
    while (c->rbuf && c->rstart < c->rend && !rc->quit) {
        size_t argc = 0;
        const char *why = NULL;
        long n = weir__resp_command(c->rbuf + c->rstart, c->rend - c->rstart, &lim, tl_args, &argc,
                                    tl_scratch, tl_scratch_cap, &why);
        if (n == WEIR_RESP_MORE) {
            if (c->rend - c->rstart >= o->max_command)
                protocol_error(rc, "Protocol error: command too big");
            return !rc->quit;
        }
        if (n < 0) {
            protocol_error(rc, why ? why : "Protocol error");
            return false;
        }
        if ((size_t)n > o->max_command) {
            /* Whole in one read, but over the limit all the same. */
            protocol_error(rc, "Protocol error: command too big");
            return false;
        }
        c->rstart += (uint32_t)n;
        if (argc) {
            rc->busy = true;
            run_command(rc, tl_args, argc);
            tl_out.resp3 = rc->resp3; /* HELLO may have changed it */
        }
        if (tl_out.len >= BATCH_OUT)
            return false;
    }
    return !rc->quit;
}

/* Room in the read buffer for more of the command at its start. */
static bool make_room(weir_resp_conn *rc)
{
    weir_conn *c = &rc->c;
    if (weir__conn_need_rbuf(c) != WEIR_OK)
        return false;
    if (c->rstart == c->rend) {
        c->rstart = c->rend = 0;
    } else if (c->rend == c->rcap && c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    if (c->rend < c->rcap)
        return true;
    uint32_t max = rc->svc->resp.max_command + 64;
    uint32_t cap = c->rcap * 2 < max ? c->rcap * 2 : max;
    return cap > c->rcap && weir__conn_grow_rbuf(c, cap) == WEIR_OK;
}

static void idle_cb(weir_timer *t);

static void arm_idle(weir_resp_conn *rc)
{
    uint32_t ms = rc->svc->resp.idle_timeout_ms;
    if (rc->list->draining)
        ms = ms && ms < DRAIN_MS ? ms : DRAIN_MS;
    if (ms && !weir__timer_armed(&rc->timer))
        weir__timer_start(rc->loop, &rc->timer, ms, idle_cb);
}

static void serve(weir_resp_conn *rc);

static void serve_task(void *arg)
{
    weir_resp_conn *rc = arg;
    if (!rc->closed && !rc->lingering)
        serve(rc);
}

/*
 * The connection's work: unsent replies first, then the buffered
 * commands, then more input, until the socket has no more or the client
 * stops taking replies.
 */
static void serve(weir_resp_conn *rc)
{
    weir_conn *c = &rc->c;
    if (!scratch_for(&rc->svc->resp)) {
        close_now(rc);
        return;
    }
    for (int reads = 0;;) {
        if (!flush_pend(rc) || held_back(rc))
            return; /* EPOLLOUT brings us back */
        rc->out = &tl_out;
        bool want_input = answer_buffered(rc);
        if (!send_batch(rc))
            return;
        if (rc->quit) {
            if (rc->pend)
                return; /* the last replies first */
            close_gracefully(rc);
            return;
        }
        if (!want_input)
            continue; /* a full batch went out: the next */
        if (c->eof || c->error) {
            /* Every whole command is answered: close once they are out. */
            if (!rc->pend)
                close_now(rc);
            return;
        }
        if (!c->readable)
            break;
        if (++reads > READS_PER_ROUND) {
            weir__loop_defer(rc->loop, serve_task, rc);
            return;
        }
        if (!make_room(rc)) {
            protocol_error(rc, "Protocol error: command too big");
            continue;
        }
        int r = weir__conn_read(c);
        if (r == WEIR_OK) {
            rc->last_active_ms = weir__loop_now(rc->loop);
            continue;
        }
        if (r == WEIR_AGAIN)
            break;
        /* EOF or an error: answer what came whole, then close. */
        if (r != WEIR_DONE)
            c->eof = true;
    }
    /* Between batches: nothing more to read now (replies may wait for
     * EPOLLOUT). */
    if (c->rstart == c->rend)
        weir__conn_release_rbuf(c);
    if (rc->busy) {
        rc->busy = false;
        const weir_resp_ops *ops = rc->svc->resp_ops;
        if (ops->idle)
            ops->idle(rc, rc->ctx);
    }
    if (rc->list->draining && !rc->pend && (!c->rbuf || c->rstart == c->rend)) {
        close_gracefully(rc);
        return;
    }
    arm_idle(rc);
}

static void idle_cb(weir_timer *t)
{
    weir_resp_conn *rc = weir_container_of(t, weir_resp_conn, timer);
    uint32_t ms = rc->svc->resp.idle_timeout_ms;
    if (rc->list->draining) {
        close_gracefully(rc); /* mid-command past the drain's deadline */
        return;
    }
    uint64_t quiet = weir__loop_now(rc->loop) - rc->last_active_ms;
    if (quiet < ms) {
        weir__timer_start(rc->loop, &rc->timer, ms - quiet, idle_cb);
        return;
    }
    weir_log_debug("RESP client %s: idle for %u ms: closed", rc->ip, ms);
    close_gracefully(rc);
}

static void conn_cb(weir_io *io, uint32_t events)
{
    weir_resp_conn *rc = weir_container_of(io, weir_resp_conn, c.io);
    weir__conn_on_events(&rc->c, events);
    if (rc->closed)
        return;
    if (rc->lingering) {
        if (weir__conn_discard(&rc->c) == WEIR_DONE)
            close_now(rc);
        return;
    }
    if (rc->pend && rc->c.writable)
        rc->last_active_ms = weir__loop_now(rc->loop);
    serve(rc);
}

int weir__resp_accept(weir_loop *loop, int fd, const struct sockaddr *peer, socklen_t peer_len,
                      const weir_service *svc, const char *listen_text, weir_resp_list *list)
{
    weir_resp_conn *rc = weir__pool_get(resp_class);
    if (!rc) {
        close(fd);
        return -ENOMEM;
    }
    memset(rc, 0, sizeof(*rc));
    int one = 1, idle = KEEPALIVE_S;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    int rc_init = weir__conn_init(&rc->c, loop, fd, conn_cb);
    if (rc_init < 0) {
        close(fd);
        weir__pool_put(resp_class, rc);
        return rc_init;
    }
    rc->loop = loop;
    rc->svc = svc;
    rc->listen_text = listen_text;
    rc->list = list;
    rc->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    if (peer_len <= sizeof(rc->client))
        memcpy(&rc->client, peer, peer_len);
    rc->ip_len = weir__addr_format_ip(&rc->client.sa, rc->ip, sizeof(rc->ip));
    rc->last_active_ms = weir__loop_now(loop);
    rc->next = list->head;
    if (rc->next)
        rc->next->prev = rc;
    list->head = rc;
    atomic_fetch_add_explicit(&list->n, 1, memory_order_relaxed);
    const weir_resp_ops *ops = svc->resp_ops;
    if (ops->new_ctx)
        rc->ctx = ops->new_ctx(rc, svc->app);
    rc->has_ctx = true;
    if (list->draining) {
        close_gracefully(rc);
        return 0;
    }
    arm_idle(rc);
    return 0;
}

void weir__resp_list_drain(weir_resp_list *list)
{
    list->draining = true;
    weir_resp_conn *next;
    for (weir_resp_conn *rc = list->head; rc; rc = next) {
        next = rc->next;
        if (rc->lingering || rc->closed)
            continue;
        bool idle = !rc->pend && (!rc->c.rbuf || rc->c.rstart == rc->c.rend);
        if (idle) {
            close_gracefully(rc);
        } else {
            weir__timer_stop(rc->loop, &rc->timer);
            arm_idle(rc);
        }
    }
}

void weir__resp_list_close_all(weir_resp_list *list)
{
    while (list->head)
        close_now(list->head);
}

void weir__resp_thread_exit(void)
{
    weir__resp_out_free(&tl_out);
    free(tl_args);
    tl_args = NULL;
    tl_args_cap = 0;
    free(tl_scratch);
    tl_scratch = NULL;
    tl_scratch_cap = 0;
}
