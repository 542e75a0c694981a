/*
 * h2_client.c - HTTP/2 to backends on nghttp2 (see h2_client.h).
 *
 * Like h2_server.c, work on a connection happens in rounds (read, feed
 * nghttp2, send what it produced) that never run inside nghttp2's
 * callbacks; sessions are woken after a round, from a deferred task.
 */
#include "http/h2_client.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/jitter.h"
#include "core/log.h"
#include "core/pool.h"
#include "http/h2_common.h"
#include "net/conn.h"
#include "net/sock.h"
#include "net/tls.h"

#define CONN_WINDOW (1024 * 1024)

typedef struct weir_h2u weir_h2u;

typedef enum { U_CONNECTING, U_HANDSHAKE, U_READY, U_DEAD } u_state;

struct weir_h2u {
    weir_conn conn;
    nghttp2_session *ng;
    u_state state;
    int error; /* -errno once dead */
    struct sockaddr_storage addr;
    bool tls;
    uint64_t tls_key;
    weir_h2u *next, *prev; /* in the worker's list */
    weir_h2us *streams;
    uint32_t n_streams;
    uint32_t idle_ms;
    /* Aging (weir_peer's max_requests, max_connection_age_ms), fixed when
     * the connection is made: past either it takes no new streams. */
    uint32_t n_opened;     /* streams ever attached */
    uint32_t max_opened;   /* 0 = no limit */
    uint64_t retire_at_ms; /* loop clock; 0 = no age limit */
    weir_timer timer;      /* connect timeout, then idle timeout */
    weir_h2_out out;
    int depth;
    bool kick_armed;
    bool goaway; /* no new streams */
    /* Shared between workers while idle (see "idle connections" below):
     * guarded by idle_lock. */
    weir_h2u *inext, *iprev;
    _Atomic bool in_idle;  /* in the shared idle list (changed under idle_lock) */
    _Atomic bool migrated; /* another worker took it: this object is a shell */
};

struct weir_h2us {
    weir_exchange x;
    weir_h2u *c;
    int32_t id; /* 0 until submitted */
    weir_h2us *next, *prev;
    void *owner;
    void (*wake)(void *owner);
    weir_arena *arena;
    weir_msg *resp; /* filled as the response head arrives */
    bool want_wake;
    bool released;
    bool closed;    /* nghttp2 closed the stream */
    bool reset;     /* ended abnormally */
    uint32_t error; /* RST_STREAM code */
    bool head_done; /* a final response head arrived */
    bool in_end;
    bool tls;
    weir_msg head; /* the final response head, read by read_head */
    weir_h2_inbuf in;
    weir_h2_outq out;
};

/* A worker's connections. */
typedef struct u_home {
    weir_h2u *head;
    bool closing;
} u_home;

static __thread u_home *home;

/* Idle connections (no stream) of every worker, which any worker may take
 * over, as HTTP/1 connections are shared (net/upstream.c): the taker dup()s
 * the socket onto a connection object on its own loop, moves the nghttp2
 * session and TLS state to it, and the home worker frees the old object. */
static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static weir_h2u *idle_head;
static _Atomic uint32_t n_idle; /* length of that list, to peek without the lock */
static _Atomic uint64_t h2_migrations;
static weir_pool_class h2u_class, h2us_class;

__attribute__((constructor)) static void register_classes(void)
{
    h2u_class = weir__pool_register("h2u", sizeof(weir_h2u), 64);
    h2us_class = weir__pool_register("h2us", sizeof(weir_h2us), 1024);
}

static void kick(weir_h2u *c);
static bool send_frames(weir_h2u *c);
static bool take_own(weir_h2u *c);

/* ---- streams ---- */

static void free_stream(weir_h2us *s)
{
    weir__h2_in_free(&s->in);
    weir__h2_out_free(&s->out);
    weir__pool_put(h2us_class, s);
}

static void unlink_stream(weir_h2us *s)
{
    weir_h2u *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else if (c->streams == s)
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static void mark(weir_h2us *s)
{
    s->want_wake = true;
    kick(s->c);
}

static void close_conn(weir_h2u *c, int err);

/* Past its age: no new streams (the stream count is checked as streams
 * attach). */
static bool too_old(const weir_h2u *c, uint64_t now)
{
    return c->retire_at_ms && now >= c->retire_at_ms;
}

static void idle_timeout(weir_timer *t)
{
    weir_h2u *c = weir_container_of(t, weir_h2u, timer);
    if (!take_own(c))
        return;
    if (c->state != U_READY) {
        close_conn(c, -ETIMEDOUT);
        return;
    }
    if (c->n_streams == 0)
        close_conn(c, 0);
}

/* Idle-list links; idle_lock held. */
static void idle_unlink(weir_h2u *c)
{
    if (!c->in_idle)
        return;
    if (c->iprev)
        c->iprev->inext = c->inext;
    else
        idle_head = c->inext;
    if (c->inext)
        c->inext->iprev = c->iprev;
    c->inext = c->iprev = NULL;
    atomic_store_explicit(&c->in_idle, false, memory_order_release);
    atomic_fetch_sub_explicit(&n_idle, 1, memory_order_relaxed);
}

/* Home thread: c stops being offered to other workers. Returns false if
 * another worker already took it (c is a shell now). */
static bool take_own(weir_h2u *c)
{
    if (atomic_load_explicit(&c->migrated, memory_order_acquire))
        return false;
    pthread_mutex_lock(&idle_lock);
    idle_unlink(c);
    bool mine = !atomic_load_explicit(&c->migrated, memory_order_relaxed);
    pthread_mutex_unlock(&idle_lock);
    return mine;
}

/* Home thread: whether c is still this worker's (taken back from the
 * shared list when it is there), without the lock in the common case. A
 * taker marks c migrated before it unlinks it (steal), so reading the
 * unlink (acquire) means reading the mark. */
static bool own(weir_h2u *c)
{
    if (atomic_load_explicit(&c->in_idle, memory_order_acquire))
        return take_own(c);
    return !atomic_load_explicit(&c->migrated, memory_order_acquire);
}

/* Home thread: a connection with no stream is offered to every worker
 * (and closes after its idle timeout if nobody uses it). */
static void offer_idle(weir_h2u *c)
{
    if (c->state != U_READY || c->goaway || c->n_streams || c->streams || c->out.len ||
        !weir__conn_queue_empty(&c->conn) || (home && home->closing))
        return;
    pthread_mutex_lock(&idle_lock);
    if (!c->in_idle && !atomic_load_explicit(&c->migrated, memory_order_relaxed)) {
        c->in_idle = true;
        c->iprev = NULL;
        c->inext = idle_head;
        if (c->inext)
            c->inext->iprev = c;
        idle_head = c;
        atomic_fetch_add_explicit(&n_idle, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&idle_lock);
}

/* A stream left the connection: an idle one waits for new streams for a
 * while, one that is going away closes. */
static void stream_left(weir_h2u *c)
{
    c->n_streams--;
    if (c->n_streams > 0 || c->state == U_DEAD)
        return;
    uint64_t now = weir__loop_now(c->conn.loop);
    if (c->goaway || (home && home->closing) || too_old(c, now)) {
        close_conn(c, 0);
        return;
    }
    /* Idle no longer than its age left. */
    uint64_t ms = c->idle_ms;
    if (c->retire_at_ms && c->retire_at_ms - now < ms)
        ms = c->retire_at_ms - now;
    weir__timer_start(c->conn.loop, &c->timer, ms, idle_timeout);
    offer_idle(c);
}

/* ---- the exchange of a stream (upstream side) ---- */

static int x_read_head(weir_exchange *x, weir_msg *m)
{
    weir_h2us *s = (weir_h2us *)x;
    if (s->head_done) {
        m->status = s->head.status;
        m->version = 20;
        m->body = s->head.body;
        m->content_length = s->head.content_length;
        m->upgrade = false;
        return WEIR_OK;
    }
    if (s->reset || s->c->state == U_DEAD)
        return s->error == NGHTTP2_REFUSED_STREAM ? -ECONNRESET : WEIR_EX_E_CLOSED;
    return WEIR_AGAIN;
}

static int x_read_body(weir_exchange *x, weir_str *segs, size_t max, size_t *n, weir_str *trailers)
{
    weir_h2us *s = (weir_h2us *)x;
    int rc = weir__h2_in_read(&s->in, s->in_end, segs, n, trailers);
    if (rc == WEIR_AGAIN && (s->reset || s->c->state == U_DEAD))
        return WEIR_EX_E_CLOSED;
    return rc;
}

static void x_consume_body(weir_exchange *x)
{
    weir_h2us *s = (weir_h2us *)x;
    uint32_t n = weir__h2_in_consume(&s->in);
    if (n && s->c->state == U_READY) {
        /* A closed stream's bytes still count against the connection. */
        if (s->closed)
            nghttp2_session_consume_connection(s->c->ng, n);
        else
            nghttp2_session_consume(s->c->ng, s->id, n);
        kick(s->c);
    }
}

static ssize_t read_data(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    weir_h2us *s = src->ptr;
    bool moved;
    ssize_t n = weir__h2_out_read(&s->out, ng, id, buf, len, flags, &moved);
    if (moved)
        s->want_wake = true;
    return n;
}

static int x_write_head(weir_exchange *x, const weir_msg *m)
{
    weir_h2us *s = (weir_h2us *)x;
    weir_h2u *c = s->c;
    if (c->state != U_READY)
        return c->state == U_DEAD ? c->error : WEIR_ERR_INVAL;
    char *names;
    nghttp2_nv *nv = weir__h2_nv_room(s->arena, &m->headers, 4, &names);
    if (!nv)
        return WEIR_ERR_NOMEM;
    weir_str authority = WEIR_STR_NULL;
    long hi = weir__headers_find(&m->headers, "host", 0);
    if (hi >= 0)
        authority = m->headers.v[hi].value;
    size_t n = 0;
#define NV(n_, v_, vl_) ((nghttp2_nv){(uint8_t *)(n_), (uint8_t *)(v_), strlen(n_), (vl_), 0})
    nv[n++] = NV(":method", m->method.ptr, m->method.len);
    nv[n++] = NV(":scheme", s->tls ? "https" : "http", s->tls ? 5u : 4u);
    nv[n++] = NV(":path", m->target.ptr, m->target.len);
    if (authority.len)
        nv[n++] = NV(":authority", authority.ptr, authority.len);
#undef NV
    bool conn_hdr = weir__headers_find(&m->headers, "connection", 0) >= 0;
    char *p = names;
    for (uint32_t i = 0; i < m->headers.n; i++) {
        const weir_header *h = &m->headers.v[i];
        if ((conn_hdr && weir__h2_nominated(&m->headers, h->name)) ||
            weir__h2_skip_field(h->name, h->value, true))
            continue;
        size_t l = weir__h2_lower(p, h->name);
        nv[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)h->value.ptr, l, h->value.len,
                               NGHTTP2_NV_FLAG_NONE};
        p += l;
        s->x.bytes_out += h->name.len + h->value.len + 4;
    }
    bool body = m->body != WEIR_BODY_NONE;
    if (m->body == WEIR_BODY_KNOWN) {
        s->out.sized = true;
        s->out.left = m->content_length;
    }
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = read_data};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, body ? &dp : NULL, s);
    if (id < 0)
        return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -ECONNRESET : WEIR_ERR_NOMEM;
    s->id = id;
    if (!body)
        s->out.end = s->out.eof_sent = true;
    kick(c);
    return WEIR_OK;
}

static int x_write_body(weir_exchange *x, const weir_str *segs, size_t n)
{
    weir_h2us *s = (weir_h2us *)x;
    if (s->reset || s->c->state == U_DEAD)
        return -ECONNRESET;
    if (s->out.eof_sent)
        return WEIR_OK;
    return weir__h2_out_write(&s->out, s->c->ng, s->id, segs, n, &s->x.bytes_out);
}

static int x_write_end(weir_exchange *x, weir_str trailers)
{
    weir_h2us *s = (weir_h2us *)x;
    if (s->reset || s->c->state == U_DEAD)
        return -ECONNRESET;
    return weir__h2_out_finish(&s->out, s->c->ng, s->id, trailers);
}

static int x_flush(weir_exchange *x)
{
    weir_h2us *s = (weir_h2us *)x;
    weir_h2u *c = s->c;
    if (c->state == U_DEAD)
        return c->error ? c->error : -ECONNRESET;
    if (s->reset)
        return s->head_done ? -ECONNRESET : WEIR_OK; /* the response tells the rest */
    if (c->depth == 0 && c->state == U_READY) {
        /* Copy this stream's data into frames now, so the session can go
         * on; the write itself waits for the end of the loop round, where
         * the frames of every stream that answered meanwhile go in one
         * write (one TLS record) instead of one each. */
        c->depth++;
        bool ok = weir__h2_gather(c->ng, &c->conn, &c->out);
        c->depth--;
        if (!ok) {
            kick(c); /* the next round finds the connection broken */
            return -ECONNRESET;
        }
        kick(c);
    }
    if (weir__h2_out_pending(&s->out)) {
        kick(c);
        return WEIR_AGAIN;
    }
    return WEIR_OK;
}

static bool x_peer_gone(weir_exchange *x)
{
    weir_h2us *s = (weir_h2us *)x;
    return s->reset || s->c->state == U_DEAD;
}

static void x_tunnel(weir_exchange *x) {}

static const weir_exchange_ops h2us_ops = {
    .read_head = x_read_head,
    .read_body = x_read_body,
    .consume_body = x_consume_body,
    .write_head = x_write_head,
    .write_body = x_write_body,
    .write_end = x_write_end,
    .flush = x_flush,
    .peer_gone = x_peer_gone,
    .tunnel = x_tunnel,
};

/* ---- nghttp2 callbacks ---- */

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    weir_h2us *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s || s->released || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (s->head_done) {
        /* Trailers: kept as HTTP/1 lines for the other side. */
        if (weir__h2_in_trailer(&s->in, name, namelen, value, valuelen, 65536) < 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen; i++)
            st = st * 10 + (value[i] - '0');
        s->head.status = st;
        return 0;
    }
    if (s->head.status && s->head.status < 200)
        return 0; /* fields of an interim response */
    char *n = weir__arena_alloc(s->arena, namelen + valuelen + 1);
    if (!n)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memcpy(n, name, namelen);
    memcpy(n + namelen, value, valuelen);
    if (weir__headers_push(&s->resp->headers, (weir_str){n, namelen},
                           (weir_str){n + namelen, valuelen}) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->x.bytes_in += namelen + valuelen + 4;
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    weir_h2u *c = user;
    weir_h2us *s =
        f->hd.stream_id ? nghttp2_session_get_stream_user_data(ng, f->hd.stream_id) : NULL;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s || s->released)
            break;
        if (!s->head_done && s->head.status >= 200) {
            s->head_done = true;
            weir_headers *h = &s->resp->headers;
            long cl = weir__headers_find(h, "content-length", 0);
            s->head.body = WEIR_BODY_UNKNOWN;
            if (end) {
                s->head.body = WEIR_BODY_NONE;
            } else if (cl >= 0) {
                uint64_t v = 0;
                for (size_t i = 0; i < h->v[cl].value.len; i++)
                    v = v * 10 + (uint64_t)(h->v[cl].value.ptr[i] - '0');
                s->head.content_length = v;
                s->head.body = v ? WEIR_BODY_KNOWN : WEIR_BODY_NONE;
            }
        } else if (!s->head_done) {
            s->head.status = 0; /* an interim response: wait for the final one */
            break;
        }
        if (end)
            s->in_end = true;
        mark(s);
        break;
    case NGHTTP2_DATA:
        if (s && end) {
            s->in_end = true;
            mark(s);
        }
        break;
    case NGHTTP2_GOAWAY:
        c->goaway = true;
        break;
    case NGHTTP2_WINDOW_UPDATE:
        for (weir_h2us *w = c->streams; w; w = w->next) {
            if (weir__h2_out_pending(&w->out))
                w->want_wake = true;
        }
        break;
    case NGHTTP2_SETTINGS:
        if (c->state == U_HANDSHAKE && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
            c->state = U_READY; /* the backend's settings are known: streams may go */
            weir__timer_stop(c->conn.loop, &c->timer);
            for (weir_h2us *w = c->streams; w; w = w->next)
                w->want_wake = true;
        }
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    weir_h2us *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s || s->released) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    if (weir__h2_in_add(&s->in, data, len) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->x.bytes_in += len;
    mark(s);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *user)
{
    weir_h2u *c = user;
    weir_h2us *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    s->closed = true;
    if (s->released) {
        unlink_stream(s);
        free_stream(s);
        return 0;
    }
    if (error != NGHTTP2_NO_ERROR || !s->in_end) {
        s->reset = true;
        s->error = error;
    }
    mark(s);
    (void)c;
    return 0;
}

/* ---- the connection ---- */

static void free_h2u(void *p)
{
    weir__pool_put(h2u_class, p);
}

/* Frees c and the streams nghttp2 still held for it. */
static void destroy(weir_h2u *c)
{
    for (weir_h2us *s = c->streams; s;) {
        weir_h2us *next = s->next;
        free_stream(s); /* released ones waiting for their close */
        s = next;
    }
    c->streams = NULL;
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    free(c->out.buf);
    c->out.buf = NULL;
    weir__loop_defer(c->conn.loop, free_h2u, c);
}

/* The connection is over (err 0: a clean end). Streams still held by
 * sessions see the error; the last release frees c. */
static void close_conn(weir_h2u *c, int err)
{
    if (c->state == U_DEAD)
        return;
    if (atomic_load_explicit(&c->in_idle, memory_order_relaxed)) {
        pthread_mutex_lock(&idle_lock);
        idle_unlink(c);
        pthread_mutex_unlock(&idle_lock);
    }
    if (err == 0 && c->state == U_READY && c->ng) {
        /* A clean end: say so to the backend (best effort, one write). */
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        c->depth++;
        weir__h2_send(c->ng, &c->conn, &c->out);
        c->depth--;
    }
    c->state = U_DEAD;
    c->error = err ? err : -ECONNRESET;
    weir__timer_stop(c->conn.loop, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else if (home && home->head == c)
        home->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    weir__conn_close(&c->conn, err != 0);
    bool held = false;
    for (weir_h2us *s = c->streams; s; s = s->next) {
        if (!s->released) {
            s->reset = true;
            s->want_wake = true;
            held = true;
        }
    }
    if (held)
        kick(c);
    else
        destroy(c);
}

static bool send_frames(weir_h2u *c)
{
    if (c->state == U_DEAD || !c->ng)
        return false;
    if (c->state != U_HANDSHAKE && c->state != U_READY)
        return true;
    return weir__h2_send(c->ng, &c->conn, &c->out);
}

static bool recv_frames(weir_h2u *c)
{
    int rc = weir__h2_recv(c->ng, &c->conn);
    if (rc < 0) {
        char a[WEIR_ADDR_STRLEN];
        weir__addr_format((const struct sockaddr *)&c->addr, a, sizeof(a));
        weir_log_warn("upstream %s: HTTP/2 error: %s", a, nghttp2_strerror(rc));
    }
    return rc == WEIR_OK;
}

/* The transport is ready: our preface and SETTINGS go out; streams wait
 * for the backend's SETTINGS. */
static void start_h2(weir_h2u *c)
{
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WEIR_H2_WINDOW},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    c->state = U_HANDSHAKE;
}

/* TCP connect, then TLS with ALPN h2, then our preface and SETTINGS. */
static bool advance_setup(weir_h2u *c)
{
    if (c->state == U_CONNECTING) {
        if (!c->conn.writable)
            return true;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->conn.io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            close_conn(c, -err);
            return false;
        }
        if (c->conn.ssl) {
            int rc = weir__conn_handshake(&c->conn);
            if (rc == WEIR_AGAIN)
                return true;
            char a[WEIR_ADDR_STRLEN];
            weir__addr_format((const struct sockaddr *)&c->addr, a, sizeof(a));
            if (rc < 0) {
                weir__tls_count(WEIR_TLS_UP_FAILURE);
                weir_log_warn("upstream %s: TLS handshake failed: %s", a, weir__conn_tls_error());
                close_conn(c, -EPROTO);
                return false;
            }
            weir__tls_count(WEIR_TLS_UP_HANDSHAKE);
            if (SSL_session_reused(c->conn.ssl))
                weir__tls_count(WEIR_TLS_UP_RESUMED);
            weir_str p = weir__tls_alpn(c->conn.ssl);
            if (p.len != 2 || memcmp(p.ptr, "h2", 2) != 0) {
                weir_log_warn("upstream %s: the backend did not agree to HTTP/2 (ALPN)", a);
                close_conn(c, -EPROTO);
                return false;
            }
        }
        start_h2(c);
    }
    return true;
}

static void wake_streams(weir_h2u *c)
{
    c->depth++;
    for (weir_h2us *s = c->streams; s;) {
        weir_h2us *next = s->next;
        if (s->want_wake && !s->released) {
            s->want_wake = false;
            s->wake(s->owner);
        }
        s = next;
    }
    c->depth--;
}

static void run_io(weir_h2u *c)
{
    if (c->state == U_DEAD || c->depth > 0)
        return;
    c->depth++;
    bool ok = advance_setup(c) && c->state != U_DEAD &&
              (c->state == U_CONNECTING || (recv_frames(c) && send_frames(c)));
    c->depth--;
    if (c->state == U_DEAD)
        return;
    if (!ok || (c->state != U_CONNECTING && !nghttp2_session_want_read(c->ng) &&
                !nghttp2_session_want_write(c->ng) && c->out.len == 0)) {
        c->goaway = true;
        close_conn(c, c->conn.eof ? 0 : -ECONNRESET);
    }
}

static void kicked(void *arg)
{
    weir_h2u *c = arg;
    c->kick_armed = false;
    if (!own(c))
        return;
    run_io(c);
    wake_streams(c);
    if (c->state == U_READY && c->n_streams == 0)
        offer_idle(c);
}

static void kick(weir_h2u *c)
{
    if (c->kick_armed)
        return;
    c->kick_armed = true;
    weir__loop_defer(c->conn.loop, kicked, c);
}

static void io_cb(weir_io *io, uint32_t events)
{
    weir_h2u *c = weir_container_of(io, weir_h2u, conn.io);
    /* An idle connection leaves the shared list before it is touched; one
     * another worker took is only a shell until its home frees it. */
    if (!own(c))
        return;
    weir__conn_on_events(&c->conn, events);
    run_io(c);
    wake_streams(c);
    if (c->state == U_READY && c->n_streams == 0)
        offer_idle(c);
}

/* A connection object: on a new connect (adopt NULL), or taking over a
 * connection already through TCP and TLS (its socket, TLS, readiness). */
static weir_h2u *h2u_new(weir_loop *loop, const weir_peer *peer, weir_conn *adopt, int *err)
{
    int fd = -1;
    if (!adopt &&
        (fd = weir__connect_start((const struct sockaddr *)&peer->addr, peer->addr_len)) < 0) {
        *err = fd;
        return NULL;
    }
    weir_h2u *c = weir__pool_get(h2u_class);
    if (!c) {
        if (fd >= 0)
            close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    int rc;
    if (adopt) {
        c->conn = *adopt;
        c->conn.io.cb = io_cb;
        weir_loop *l = adopt->loop;
        memset(adopt, 0, sizeof(*adopt));
        adopt->io.fd = -1;
        adopt->loop = l; /* its owner still frees its shell there */
        rc = weir__io_mod(loop, &c->conn.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
    } else {
        rc = weir__conn_init(&c->conn, loop, fd, io_cb);
        if (rc < 0)
            close(fd);
    }
    if (rc < 0) {
        if (adopt)
            weir__conn_close(&c->conn, true);
        weir__pool_put(h2u_class, c);
        *err = rc;
        return NULL;
    }
    memcpy(&c->addr, &peer->addr, sizeof(c->addr));
    c->tls = peer->tls;
    c->tls_key = weir__tls_client_id(peer->tls_client);
    c->idle_ms = peer->idle_timeout_ms ? peer->idle_timeout_ms : 60000;
    c->max_opened = peer->max_requests;
    if (peer->max_connection_age_ms)
        c->retire_at_ms = weir__loop_now(loop) + weir__jitter_ms(peer->max_connection_age_ms);
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        weir__conn_close(&c->conn, true);
        weir__pool_put(h2u_class, c);
        *err = -ENOMEM;
        return NULL;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt = NULL;
    nghttp2_option_new(&opt);
    if (opt)
        nghttp2_option_set_no_auto_window_update(opt, 1);
    rc = opt ? nghttp2_session_client_new3(&c->ng, cbs, c, opt, weir__h2_mem()) : -1;
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    SSL *ssl = NULL;
    if (rc == 0 && !adopt && peer->tls && !(ssl = weir__tls_client_ssl(peer->tls_client, peer)))
        rc = -1;
    if (rc != 0) {
        if (c->ng)
            nghttp2_session_del(c->ng);
        weir__conn_close(&c->conn, true);
        weir__pool_put(h2u_class, c);
        *err = -ENOMEM;
        return NULL;
    }
    if (ssl)
        weir__conn_set_tls(&c->conn, ssl);
    c->state = U_CONNECTING;
    weir__timer_start(loop, &c->timer, peer->connect_timeout_ms ? peer->connect_timeout_ms : 5000,
                      idle_timeout);
    if (adopt)
        start_h2(c);
    c->next = home->head;
    if (c->next)
        c->next->prev = c;
    home->head = c;
    return c;
}

static bool same_backend(const weir_h2u *c, const weir_peer *peer)
{
    uint64_t key = peer->tls ? weir__tls_client_id(peer->tls_client) : 0;
    return c->tls == peer->tls && c->tls_key == key &&
           weir__addr_equal((const struct sockaddr *)&c->addr,
                            (const struct sockaddr *)&peer->addr);
}

/* A usable connection of this worker to peer (room for a stream), or NULL.
 * An idle one is taken back from the shared list first. */
static weir_h2u *find_conn(const weir_peer *peer)
{
    uint64_t now = home && home->head ? weir__loop_now(home->head->conn.loop) : 0;
    for (weir_h2u *c = home ? home->head : NULL, *next; c; c = next) {
        next = c->next;
        if (c->goaway || c->state == U_DEAD || atomic_load(&c->migrated) || !same_backend(c, peer))
            continue;
        if (too_old(c, now)) {
            /* Aged: its streams finish, new ones go to a new connection, so
             * that one long-lived connection does not hold every request
             * to one backend (after a scale-out behind a balancer). */
            c->goaway = true;
            if (c->n_streams == 0 && take_own(c))
                close_conn(c, 0);
            continue;
        }
        if (!own(c))
            continue; /* just taken by another worker (its session is not ours to read) */
        uint32_t max = c->state == U_READY ? nghttp2_session_get_remote_settings(
                                                 c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                                           : 100;
        if (c->n_streams >= max) {
            offer_idle(c); /* taken back for nothing (a peer allowing 0 streams) */
            continue;
        }
        return c;
    }
    return NULL;
}

/* Home thread of a connection another worker took: the shell goes. */
static void release_shell(void *arg)
{
    weir_h2u *c = arg;
    weir__timer_stop(c->conn.loop, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else if (home && home->head == c)
        home->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    weir__conn_close(&c->conn, false); /* our fd; the socket lives on in the taker's */
    free(c->out.buf);
    c->out.buf = NULL;
    /* A kick queued for it this round runs first (deferred tasks run in
     * order), sees the shell and returns; then it is freed. */
    weir__loop_defer(c->conn.loop, free_h2u, c);
}

/* Moves idle connection old (unlinked, marked migrated, idle_lock held)
 * onto this worker's loop. */
static weir_h2u *migrate(weir_h2u *old, weir_loop *loop)
{
    int fd = fcntl(old->conn.io.fd, F_DUPFD_CLOEXEC, 0);
    old->conn.shared = fd >= 0; /* its home loop's registration must go at its close */
    weir_h2u *c = fd >= 0 ? weir__pool_get(h2u_class) : NULL;
    if (c) {
        memset(c, 0, sizeof(*c));
        if (weir__conn_init(&c->conn, loop, fd, io_cb) < 0) {
            weir__pool_put(h2u_class, c);
            c = NULL;
        }
    }
    if (!c && fd >= 0)
        close(fd);
    if (c) {
        c->conn.shared = true; /* until the home closes its descriptor: either may go first */
        c->ng = old->ng;
        nghttp2_session_set_user_data(c->ng, c);
        old->ng = NULL;
        if (old->conn.ssl) {
            weir__conn_set_tls(&c->conn, old->conn.ssl);
            c->conn.tls_ready = true;
            old->conn.ssl = NULL;
        }
        c->conn.writable = true;
        c->state = U_READY;
        memcpy(&c->addr, &old->addr, sizeof(c->addr));
        c->tls = old->tls;
        c->tls_key = old->tls_key;
        c->idle_ms = old->idle_ms;
        c->n_opened = old->n_opened;
        c->max_opened = old->max_opened;
        c->retire_at_ms = old->retire_at_ms;
        c->next = home->head;
        if (c->next)
            c->next->prev = c;
        home->head = c;
        atomic_fetch_add_explicit(&h2_migrations, 1, memory_order_relaxed);
    } else if (old->ng) {
        /* Could not move it: the session dies with the shell. */
        nghttp2_session_del(old->ng);
        old->ng = NULL;
    }
    /* Posted under idle_lock, so the home worker (whose shutdown takes the
     * lock for each of its idle connections) runs it before it exits. */
    weir__loop_post(old->conn.loop, release_shell, old);
    return c;
}

/* Takes another worker's idle connection to peer, or NULL. */
static weir_h2u *steal(weir_loop *loop, const weir_peer *peer)
{
    if (atomic_load_explicit(&n_idle, memory_order_relaxed) == 0)
        return NULL; /* the common case takes no lock */
    weir_h2u *got = NULL;
    uint64_t now = weir__loop_now(loop);
    pthread_mutex_lock(&idle_lock);
    for (weir_h2u *c = idle_head; c; c = c->inext) {
        /* An aged one is left to its home's idle timer, which is due. */
        if (c->conn.loop != loop && same_backend(c, peer) && !too_old(c, now)) {
            /* Marked before it leaves the list: a home that sees it gone
             * sees it taken (own). */
            atomic_store_explicit(&c->migrated, true, memory_order_seq_cst);
            idle_unlink(c);
            got = migrate(c, loop);
            break;
        }
    }
    pthread_mutex_unlock(&idle_lock);
    return got;
}

bool weir__h2u_usable(const weir_peer *peer)
{
    if (find_conn(peer))
        return true;
    bool any = false;
    pthread_mutex_lock(&idle_lock);
    for (weir_h2u *c = idle_head; c && !any; c = c->inext)
        any = same_backend(c, peer);
    pthread_mutex_unlock(&idle_lock);
    return any;
}

uint64_t weir__h2u_migrations(void)
{
    return atomic_load_explicit(&h2_migrations, memory_order_relaxed);
}

/* A new stream on c. */
static weir_h2us *attach(weir_h2u *c, const weir_peer *peer, weir_arena *arena, weir_msg *resp,
                         void *owner, void (*wake)(void *owner), int *err)
{
    weir_h2us *s = weir__pool_get(h2us_class);
    if (!s) {
        if (c->n_streams == 0)
            close_conn(c, 0);
        *err = -ENOMEM;
        return NULL;
    }
    memset(s, 0, sizeof(*s));
    s->x.ops = &h2us_ops;
    s->c = c;
    s->owner = owner;
    s->wake = wake;
    s->arena = arena;
    s->resp = resp;
    s->tls = peer->tls;
    s->next = c->streams;
    if (s->next)
        s->next->prev = s;
    c->streams = s;
    c->n_streams++;
    if (c->max_opened && ++c->n_opened >= c->max_opened)
        c->goaway = true; /* the last stream it takes; closes when its streams end */
    if (c->state == U_READY)
        weir__timer_stop(c->conn.loop, &c->timer);
    return s;
}

weir_h2us *weir__h2u_adopt(weir_conn *conn, const weir_peer *peer, weir_arena *arena,
                           weir_msg *resp, void *owner, void (*wake)(void *owner), int *err)
{
    if (!home && !(home = calloc(1, sizeof(*home)))) {
        *err = -ENOMEM;
        return NULL;
    }
    weir_h2u *c = h2u_new(conn->loop, peer, conn, err);
    if (!c)
        return NULL;
    weir_h2us *s = attach(c, peer, arena, resp, owner, wake, err);
    if (s)
        kick(c); /* our preface and SETTINGS go out */
    return s;
}

weir_h2us *weir__h2u_open(weir_loop *loop, const weir_peer *peer, weir_arena *arena, weir_msg *resp,
                          void *owner, void (*wake)(void *owner), int *err, bool *reused)
{
    if (!home && !(home = calloc(1, sizeof(*home)))) {
        *err = -ENOMEM;
        return NULL;
    }
    weir_h2u *c = find_conn(peer);
    if (!c)
        c = steal(loop, peer);
    *reused = c != NULL;
    if (!c && !(c = h2u_new(loop, peer, NULL, err)))
        return NULL;
    return attach(c, peer, arena, resp, owner, wake, err);
}

int weir__h2u_ready(weir_h2us *s)
{
    weir_h2u *c = s->c;
    if (c->state == U_READY)
        return WEIR_OK;
    if (c->state == U_DEAD)
        return c->error ? c->error : -ECONNRESET;
    return WEIR_AGAIN;
}

weir_exchange *weir__h2u_exchange(weir_h2us *s)
{
    return &s->x;
}

void weir__h2u_release(weir_h2us *s)
{
    weir_h2u *c = s->c;
    s->released = true;
    if (c->state == U_DEAD) {
        unlink_stream(s);
        free_stream(s);
        c->n_streams--;
        bool held = false;
        for (weir_h2us *o = c->streams; o; o = o->next)
            held = held || !o->released;
        if (!held)
            destroy(c);
        return;
    }
    if (s->in.len) {
        /* Received, never passed on: give the connection window back. */
        nghttp2_session_consume_connection(c->ng, s->in.len);
        s->in.len = s->in.handed = 0;
    }
    if (s->id > 0 && !s->closed) {
        /* Still open in nghttp2: stop it if unfinished; on_stream_close frees it. */
        if (!s->in_end || weir__h2_out_pending(&s->out))
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        kick(c);
    } else {
        unlink_stream(s);
        free_stream(s);
    }
    stream_left(c);
}

void weir__h2u_shutdown(weir_loop *loop)
{
    if (!home)
        return;
    home->closing = true;
    for (weir_h2u *c = home->head; c;) {
        weir_h2u *next = c->next;
        /* take_own also makes sure no other worker can take it after this;
         * one already taken is a shell whose release is queued here. */
        if (take_own(c)) {
            if (c->n_streams == 0)
                close_conn(c, 0);
            else
                c->goaway = true;
        }
        c = next;
    }
}

void weir__h2u_thread_exit(void)
{
    free(home);
    home = NULL;
}

void weir__h2u_goaway_all(void)
{
    if (!home)
        return;
    for (weir_h2u *c = home->head; c;) {
        weir_h2u *next = c->next;
        if (c->state != U_DEAD && take_own(c)) {
            c->goaway = true; /* no new streams: they go to a new connection */
            if (c->n_streams == 0)
                close_conn(c, 0);
        }
        c = next;
    }
}
