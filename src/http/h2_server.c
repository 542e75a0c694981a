/*
 * h2_server.c - downstream HTTP/2 connections on nghttp2 (see h2_server.h).
 *
 * nghttp2 parses and serializes frames; this file moves bytes between it
 * and the socket (mem_recv / mem_send) and maps streams onto exchanges.
 * nghttp2 must not be re-entered from its own callbacks, and a session
 * must not be re-entered from its own calls: so inside callbacks streams
 * are only marked, and marked streams are woken after the connection's
 * work is done, from a deferred task.
 *
 * nghttp2 silently ignores a HEADERS frame on a stream id it no longer
 * knows, since it cannot tell a stream it reset (where a late frame is
 * legal) from one never opened. This file remembers the latest client
 * stream ids (recent_ids below) and makes the connection error RFC 9113
 * asks for itself.
 */
#include "http/h2_server.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "core/jitter.h"
#include "core/log.h"
#include "core/pool.h"
#include "http/h1_parse.h"
#include "http/h2_common.h"
#include "net/sock.h"

#define CONN_WINDOW (1024 * 1024) /* connection receive window */

/* Abuse limits, per connection per second. */
#define FLOOD_WINDOW_MS 1000
#define MAX_RESETS 200   /* streams the client reset (rapid reset) */
#define MAX_SETTINGS 100 /* SETTINGS frames */
#define MAX_PINGS 100    /* PING frames */
#define MAX_EMPTY 100    /* DATA frames without data or end, PRIORITY, empty CONTINUATION */

/*
 * What is known of the last RECENT_IDS client stream ids (odd ids, so ids
 * max_client_id - 2 * RECENT_IDS + 1 ..max_client_id), for a HEADERS that
 * comes on an id nghttp2 has closed or never opened.
 */
#define RECENT_IDS 256
enum {
    ID_SEEN = 1,        /* a HEADERS opening it arrived (nghttp2 may have ignored it) */
    ID_OPENED = 2,      /* nghttp2 opened it (on_begin_headers) */
    ID_RESET_SENT = 4,  /* we sent RST_STREAM on it */
    ID_RESET_RECVD = 8, /* the client sent RST_STREAM on it */
};

/*
 * Retiring a connection (a reload, a drain, connection aging), RFC 9113
 * 6.8's graceful way, as gRPC servers do:
 *
 *   SERVING --reload/drain/age/keepalive_requests--> NOTICE
 *   NOTICE --PING ACK and NOTICE_MIN_MS, or NOTICE_MAX_MS--> GOAWAY
 *   GOAWAY --last stream ends--> closed
 *   GOAWAY (by age) --grace over--> open streams reset, closed
 *
 * NOTICE: a GOAWAY naming the highest stream id (nothing refused yet) and a
 * PING; streams the client opened before it saw the notice are still
 * taken. GOAWAY: the final one, naming the last stream taken; later ones
 * are ignored (the client retries them on a new connection, which RFC
 * 9113 6.8 makes safe: they were not processed).
 *
 * The PING's ACK alone is not enough: a client (grpcio) may write the ACK
 * ahead of HEADERS it had queued before it read the notice, and those
 * would be refused (a failed call for a client without retries). So the
 * final GOAWAY waits for the ACK and NOTICE_MIN_MS, or NOTICE_MAX_MS for a
 * client that never answers.
 */
#define NOTICE_MIN_MS 1000
#define NOTICE_MAX_MS 3000
typedef enum {
    RETIRE_NONE,   /* serving; age_timer holds the age, if one is set */
    RETIRE_NOTICE, /* shutdown notice and PING sent; age_timer: NOTICE_MIN/MAX_MS */
    RETIRE_GOAWAY, /* final GOAWAY sent (c->goaway); age_timer: the grace, if by age */
} retire_state;

typedef struct weir_h2s weir_h2s;

struct weir_h2c {
    weir_conn conn;
    nghttp2_session *ng;
    const weir_h1s_config *cfg;
    weir_h2c_list *list;
    weir_h2c *next, *prev;
    weir_timer timer;     /* idle: keepalive timeout while no stream is open */
    weir_timer age_timer; /* retirement: the age, the notice's wait, the grace */
    uint32_t n_opened;    /* streams the client opened (keepalive_requests) */
    retire_state retire;
    bool ping_acked;   /* NOTICE: the client answered the notice's PING */
    bool notice_min;   /* NOTICE: NOTICE_MIN_MS passed */
    bool by_age;       /* retired by h2_max_connection_age: the grace bounds it */
    weir_h2s *streams; /* open streams */
    uint32_t n_streams;
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } peer;
    char ip[48]; /* the peer's address as text, formatted once */
    uint8_t ip_len;
    weir_h2_out out;                /* frames from nghttp2 not yet written */
    int32_t max_client_id;          /* highest stream id a client HEADERS used */
    uint8_t recent_ids[RECENT_IDS]; /* ID_* flags of the client ids up to max_client_id */
    uint64_t flood_start;
    uint32_t n_resets, n_settings, n_pings, n_empty;
    int depth;       /* > 0 while inside nghttp2 or our io handling */
    bool kick_armed; /* a deferred kick is queued */
    bool closed;
    bool goaway;
};

struct weir_h2s {
    weir_exchange x;
    weir_h2c *c;
    int32_t id;
    weir_h2s *next, *prev; /* in c->streams */
    void *stream;          /* the session */
    weir_msg *req;
    weir_str authority;
    weir_str protocol; /* :protocol of an extended CONNECT (RFC 8441) */
    bool ws;           /* a WebSocket tunnel over this stream */
    uint32_t head_bytes;
    uint32_t n_cookies;
    bool too_large; /* header list over the limits: answered 431 */
    bool started;   /* the session runs */
    bool session_done;
    bool ng_closed; /* nghttp2 closed the stream */
    bool reset;     /* the stream ended before the session finished */
    bool in_end;    /* the request body is complete */
    bool head_sent;
    bool no_body;       /* the response has no body (HEAD, 204, 304) */
    bool wake;          /* wake the session after the current work */
    bool rst_after_end; /* stop the client's body (RST NO_ERROR) after our END_STREAM */
    uint64_t in_limit;
    weir_h2_inbuf in; /* request body received, not yet passed on */
    weir_h2_outq out; /* response body queued by the session */
};

static weir_pool_class h2c_class, h2s_class;

__attribute__((constructor)) static void register_classes(void)
{
    h2c_class = weir__pool_register("h2c", sizeof(weir_h2c), 256);
    h2s_class = weir__pool_register("h2s", sizeof(weir_h2s), 1024);
}

static void kick(weir_h2c *c);
static bool send_frames(weir_h2c *c);
static void idle_timeout(weir_timer *t);
static void retire(weir_h2c *c, bool by_age);

/* ---- streams ---- */

static void free_stream(weir_h2s *s)
{
    weir__h2_in_free(&s->in);
    weir__h2_out_free(&s->out);
    weir__pool_put(h2s_class, s);
}

static void unlink_stream(weir_h2s *s)
{
    weir_h2c *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else if (c->streams == s)
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static void mark(weir_h2s *s)
{
    s->wake = true;
    kick(s->c);
}

/* The session is over (origin.done). */
static void stream_done(void *owner, bool reuse)
{
    weir_h2s *s = owner;
    weir_h2c *c = s->c;
    s->session_done = true;
    s->stream = NULL;
    if (s->in.len && !c->closed) {
        /* Received, never passed on: give the connection window back. */
        nghttp2_session_consume_connection(c->ng, s->in.len);
        s->in.len = s->in.handed = 0;
    }
    if (!s->ng_closed && !c->closed) {
        /* An incomplete response must not look whole: reset it. A whole
         * one with the request body still coming: stop the client. */
        if (!reuse || !s->out.eof_sent)
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        else if (!s->in_end && nghttp2_session_get_stream_local_close(c->ng, s->id) == 1)
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
        else if (!s->in_end)
            s->rst_after_end = true; /* once the response's end is on the wire */
        kick(c);
        return; /* freed when nghttp2 closes it */
    }
    if (s->ng_closed && !c->closed)
        unlink_stream(s); /* kept linked while its session ran */
    free_stream(s);
}

/* ---- the exchange of a stream (downstream side) ---- */

static int x_read_head(weir_exchange *x, weir_msg *m)
{
    return WEIR_ERR_INVAL; /* downstream: the head came with the stream */
}

static int x_read_body(weir_exchange *x, weir_str *segs, size_t max, size_t *n, weir_str *trailers)
{
    weir_h2s *s = (weir_h2s *)x;
    *n = 0;
    if (s->reset)
        return WEIR_EX_E_CLOSED;
    if (s->in_limit && s->in.total > s->in_limit)
        return WEIR_EX_E_TOO_LARGE;
    return weir__h2_in_read(&s->in, s->in_end, segs, n, trailers);
}

static void x_consume_body(weir_exchange *x)
{
    weir_h2s *s = (weir_h2s *)x;
    uint32_t n = weir__h2_in_consume(&s->in);
    if (n == 0)
        return;
    if (!s->c->closed) {
        /* The window opens only as bytes move on: back-pressure. A closed
         * stream's bytes still count against the connection. */
        if (s->ng_closed)
            nghttp2_session_consume_connection(s->c->ng, n);
        else
            nghttp2_session_consume(s->c->ng, s->id, n);
        kick(s->c);
    }
}

static ssize_t read_data(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user);

static int x_write_head(weir_exchange *x, const weir_msg *m)
{
    weir_h2s *s = (weir_h2s *)x;
    weir_h2c *c = s->c;
    if (s->reset || c->closed)
        return -ECONNRESET;
    bool ws_ok = s->ws && m->status == 101;
    if (m->status < 200 && !ws_ok)
        return WEIR_OK; /* interim responses are not forwarded */
    size_t n = 0;
    char *names;
    nghttp2_nv *nv = weir__h2_nv_room(m->headers.arena, &m->headers, 1, &names);
    if (!nv)
        return WEIR_ERR_NOMEM;
    unsigned st = ws_ok ? 200 : (unsigned)m->status % 1000;
    char status[4] = {(char)('0' + st / 100), (char)('0' + st / 10 % 10), (char)('0' + st % 10), 0};
    nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    bool conn_hdr = weir__headers_find(&m->headers, "connection", 0) >= 0;
    char *p = names;
    for (uint32_t i = 0; i < m->headers.n; i++) {
        const weir_header *h = &m->headers.v[i];
        if ((conn_hdr && weir__h2_nominated(&m->headers, h->name)) ||
            weir__h2_skip_field(h->name, h->value, false) ||
            (ws_ok && h->name.len == 20 && weir_h1_name_is(h->name, "sec-websocket-accept")))
            continue;
        size_t l = weir__h2_lower(p, h->name);
        nv[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)h->value.ptr, l, h->value.len,
                               NGHTTP2_NV_FLAG_NONE};
        p += l;
        s->x.bytes_out += h->name.len + h->value.len + 4;
    }
    bool head = s->req && s->req->method.len == 4 && memcmp(s->req->method.ptr, "HEAD", 4) == 0;
    s->no_body =
        !ws_ok && (m->body == WEIR_BODY_NONE || head || m->status == 204 || m->status == 304);
    if (m->body == WEIR_BODY_KNOWN) {
        s->out.sized = true;
        s->out.left = m->content_length;
    }
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = read_data};
    int rc = nghttp2_submit_response(c->ng, s->id, nv, n, s->no_body ? NULL : &dp);
    if (rc != 0)
        return -EPROTO;
    s->head_sent = true;
    if (s->no_body)
        s->out.eof_sent = true;
    kick(c);
    return WEIR_OK;
}

static int x_write_body(weir_exchange *x, const weir_str *segs, size_t n)
{
    weir_h2s *s = (weir_h2s *)x;
    if (s->reset)
        return -ECONNRESET;
    if (s->no_body)
        return WEIR_OK;
    return weir__h2_out_write(&s->out, s->c->ng, s->id, segs, n, &s->x.bytes_out);
}

static int x_write_end(weir_exchange *x, weir_str trailers)
{
    weir_h2s *s = (weir_h2s *)x;
    if (s->reset)
        return -ECONNRESET;
    if (s->out.end)
        return WEIR_OK;
    if (s->no_body) {
        s->out.end = true;
        return WEIR_OK;
    }
    return weir__h2_out_finish(&s->out, s->c->ng, s->id, trailers);
}

static int x_flush(weir_exchange *x)
{
    weir_h2s *s = (weir_h2s *)x;
    weir_h2c *c = s->c;
    if (s->reset || c->closed)
        return -ECONNRESET;
    if (c->depth == 0) {
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
    if (s->reset)
        return -ECONNRESET;
    if (weir__h2_out_pending(&s->out)) {
        kick(c);
        return WEIR_AGAIN;
    }
    return WEIR_OK;
}

static bool x_peer_gone(weir_exchange *x)
{
    weir_h2s *s = (weir_h2s *)x;
    return s->reset || s->c->closed;
}

static void x_tunnel(weir_exchange *x)
{
    /* A WebSocket stream (RFC 8441): its DATA already flows both ways. */
    weir_h2s *s = (weir_h2s *)x;
    s->out.sized = false;
}

static const weir_exchange_ops h2s_ops = {
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

/* The data provider: copies queued slices into DATA frames. */
static ssize_t read_data(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    weir_h2s *s = src->ptr;
    bool moved;
    ssize_t n = weir__h2_out_read(&s->out, ng, id, buf, len, flags, &moved);
    if (moved)
        s->wake = true; /* slices moved: the session may go on */
    return n;
}

/* ---- nghttp2 callbacks ---- */

static bool flooded(weir_h2c *c, uint32_t *counter, uint32_t max, const char *what)
{
    uint64_t now = weir__loop_now(c->conn.loop);
    if (now - c->flood_start >= FLOOD_WINDOW_MS) {
        c->flood_start = now;
        c->n_resets = c->n_settings = c->n_pings = c->n_empty = 0;
    }
    if (++*counter <= max)
        return false;
    const char *ip = c->ip;
    weir_log_warn("client %s: HTTP/2 %s flood: closing with ENHANCE_YOUR_CALM", ip, what);
    nghttp2_session_terminate_session(c->ng, NGHTTP2_ENHANCE_YOUR_CALM);
    return true;
}

/* The recent_ids slot of client stream id `id`, or NULL for an id that is
 * not a client's, not used yet, or too old to be remembered. */
static uint8_t *recent_id(weir_h2c *c, int32_t id)
{
    if (id <= 0 || !(id & 1) || id > c->max_client_id || c->max_client_id - id >= 2 * RECENT_IDS)
        return NULL;
    return &c->recent_ids[((uint32_t)id >> 1) % RECENT_IDS];
}

/* A HEADERS with a new highest id: the ids it skips are never used (RFC
 * 9113 5.1.1 closes them), and their slots still hold older ids' flags. */
static void note_new_id(weir_h2c *c, int32_t id)
{
    int64_t from = c->max_client_id ? (int64_t)c->max_client_id + 2 : 1;
    c->max_client_id = id;
    for (int64_t i = from, n = 0; i <= id && n < RECENT_IDS; i += 2, n++)
        c->recent_ids[((uint64_t)i >> 1) % RECENT_IDS] = 0;
    *recent_id(c, id) = ID_SEEN;
}

/*
 * A HEADERS on a client id at or below the highest one used, on no stream
 * nghttp2 still has, is either a frame RFC 9113 says to ignore (5.1: on a
 * stream we reset, the client may not have seen our RST_STREAM yet; 6.8:
 * on a stream nghttp2 ignored after our GOAWAY) or a connection error:
 * PROTOCOL_ERROR for an id that was never used (5.1.1), STREAM_CLOSED for
 * a stream the client closed itself (5.1; a stream error, which 5.4.1
 * lets us treat as a connection error, as nghttp2 does for streams it
 * still remembers). An id too old to be remembered is ignored, as nghttp2
 * would: a late trailer of a stream we reset must not end the connection.
 * Trailers on an open or half-closed stream are not looked at here.
 */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *user)
{
    weir_h2c *c = user;
    int32_t id = hd->stream_id;
    if (hd->type == NGHTTP2_RST_STREAM) {
        /* Noted here: nghttp2 reports no RST_STREAM on a stream it closed. */
        uint8_t *slot = recent_id(c, id);
        if (slot)
            *slot |= ID_RESET_RECVD;
        return 0;
    }
    if (hd->type != NGHTTP2_HEADERS || !(id & 1))
        return 0; /* stream 0 and even ids: nghttp2 rejects them itself */
    if (id > c->max_client_id) {
        note_new_id(c, id);
        return 0;
    }
    /* nghttp2 keeps some closed streams (for priorities): ask the state. */
    nghttp2_stream *ns = nghttp2_session_find_stream(ng, id);
    int state = ns ? (int)nghttp2_stream_get_state(ns) : NGHTTP2_STREAM_STATE_CLOSED;
    if (state != NGHTTP2_STREAM_STATE_CLOSED && state != NGHTTP2_STREAM_STATE_IDLE)
        return 0; /* open or half-closed: trailers, or nghttp2's own checks */
    uint8_t *slot = recent_id(c, id);
    uint8_t st = slot ? *slot : ID_RESET_SENT;
    uint32_t code = NGHTTP2_STREAM_CLOSED;
    const char *why;
    if (st & ID_RESET_RECVD)
        why = "HEADERS on a stream it reset";
    else if (st & ID_RESET_SENT)
        return 0;
    else if (st & ID_OPENED)
        why = "HEADERS on a closed stream";
    else if (st & ID_SEEN)
        return 0;
    else {
        code = NGHTTP2_PROTOCOL_ERROR;
        why = "HEADERS with a stream id lower than one it used";
    }
    const char *ip = c->ip;
    weir_log_info("client %s: HTTP/2 stream %d: %s: connection error", ip, id, why);
    nghttp2_session_terminate_session(ng, code);
    return 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    weir_h2c *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    uint8_t *slot = recent_id(c, f->hd.stream_id);
    if (slot)
        *slot |= ID_OPENED;
    weir_h2s *s = weir__pool_get(h2s_class);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memset(s, 0, sizeof(*s));
    s->x.ops = &h2s_ops;
    s->c = c;
    s->id = f->hd.stream_id;
    s->in_limit = c->cfg->max_body_bytes;
    s->stream = c->cfg->handler->stream_new(c->cfg->svc, c->conn.loop, &s->req);
    if (!s->stream) {
        weir__pool_put(h2s_class, s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    s->req->version = 20;
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    s->next = c->streams;
    if (s->next)
        s->next->prev = s;
    c->streams = s;
    c->n_streams++;
    weir__timer_stop(c->conn.loop, &c->timer);
    /* keepalive_requests on HTTP/2, as nginx: the stream that reaches it
     * is served, and the connection retires (without a time bound: the
     * grace is the age's). */
    uint32_t max = atomic_load_explicit(&c->cfg->keepalive_requests, memory_order_relaxed);
    if (++c->n_opened >= max && max && max != WEIR_UNLIMITED)
        retire(c, false);
    return 0;
}

static weir_str arena_copy(weir_h2s *s, const uint8_t *p, size_t len)
{
    char *d = weir__arena_alloc(s->req->headers.arena, len ? len : 1);
    if (!d)
        return WEIR_STR_NULL;
    memcpy(d, p, len);
    return (weir_str){d, len};
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    weir_h2c *c = user;
    weir_h2s *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s || s->too_large)
        return 0;
    s->head_bytes += (uint32_t)(namelen + valuelen + 4);
    if (s->started) {
        /* Trailers of the request body, kept as HTTP/1 lines. */
        uint32_t max = c->cfg->max_header_bytes;
        if (weir__h2_in_trailer(&s->in, name, namelen, value, valuelen, max) < 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
    }
    weir_msg *m = s->req;
    if (s->head_bytes > c->cfg->max_header_bytes || m->headers.n >= c->cfg->max_headers) {
        s->too_large = true;
        return 0;
    }
    if (namelen > 0 && name[0] == ':') {
        weir_str v = arena_copy(s, value, valuelen);
        if (!v.ptr)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            m->method = v;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            m->target = v;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            s->authority = v;
        else if (namelen == 9 && memcmp(name, ":protocol", 9) == 0)
            s->protocol = v;
        return 0; /* :scheme: checked by nghttp2, not forwarded */
    }
    weir_str n = arena_copy(s, name, namelen), v = arena_copy(s, value, valuelen);
    if (!n.ptr || !v.ptr || weir__headers_push(&m->headers, n, v) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (namelen == 6 && memcmp(name, "cookie", 6) == 0)
        s->n_cookies++;
    return 0;
}

/* HTTP/2 splits Cookie into several fields; HTTP/1 wants one (RFC 9113
 * 8.2.3): join them with "; " into the first. */
static int join_cookies(weir_h2s *s)
{
    weir_headers *h = &s->req->headers;
    long first = weir__headers_find(h, "cookie", 0);
    size_t len = 0;
    for (long i = first; i >= 0; i = weir__headers_find(h, "cookie", (size_t)i + 1))
        len += h->v[i].value.len + 2;
    char *buf = weir__arena_alloc(h->arena, len);
    if (!buf)
        return -1;
    size_t n = 0;
    for (long i = first; i >= 0; i = weir__headers_find(h, "cookie", (size_t)i + 1)) {
        if (n) {
            buf[n++] = ';';
            buf[n++] = ' ';
        }
        memcpy(buf + n, h->v[i].value.ptr, h->v[i].value.len);
        n += h->v[i].value.len;
        if (i != first)
            h->v[i].name = WEIR_STR_NULL; /* dropped below */
    }
    h->v[first].value = (weir_str){buf, n};
    uint32_t k = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name.ptr)
            h->v[k++] = h->v[i];
    }
    h->n = k;
    weir__headers_changed(h);
    return 0;
}

/*
 * Extended CONNECT for WebSocket (RFC 8441) becomes the HTTP/1.1 Upgrade
 * request backends know: GET with Upgrade and a Sec-WebSocket-Key (HTTP/2
 * clients send none). The backend's 101 goes back as 200, and the stream's
 * DATA frames carry the WebSocket bytes both ways.
 */
static int websocket_request(weir_h2s *s)
{
    weir_msg *m = s->req;
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    char *key = weir__arena_alloc(m->headers.arena, 24);
    if (!key)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        key[k++] = b64[v >> 18 & 63];
        key[k++] = b64[v >> 12 & 63];
        key[k++] = b64[v >> 6 & 63];
        key[k++] = b64[v & 63];
    }
    key[k++] = b64[raw[15] >> 2];
    key[k++] = b64[(raw[15] & 3) << 4];
    key[k++] = '=';
    key[k++] = '=';
    m->method = WEIR_STR("GET");
    m->upgrade = true;
    s->ws = true;
    if (weir__headers_push(&m->headers, WEIR_STR("Upgrade"), WEIR_STR("websocket")) < 0 ||
        weir__headers_push(&m->headers, WEIR_STR("Sec-WebSocket-Key"), (weir_str){key, 24}) < 0)
        return -1;
    return 0;
}

static void answer_now(weir_h2c *c, int32_t id, const char *status)
{
    nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE}};
    nghttp2_submit_response(c->ng, id, nv, 1, NULL);
}

/* The request head is complete: start the session. */
static void start_stream(weir_h2c *c, weir_h2s *s, bool end_stream)
{
    weir_msg *m = s->req;
    const char *ip = c->ip;
    if (s->too_large) {
        weir_log_warn("client %s: HTTP/2 stream %d: 431: request head too large", ip, s->id);
        answer_now(c, s->id, "431");
        return;
    }
    if (m->method.len == 7 && memcmp(m->method.ptr, "CONNECT", 7) == 0) {
        if (s->protocol.len != 9 || strncasecmp(s->protocol.ptr, "websocket", 9) != 0 ||
            !m->target.len) {
            weir_log_warn("client %s: HTTP/2 stream %d: 405: %s", ip, s->id,
                          "only CONNECT for WebSocket (RFC 8441) is supported");
            answer_now(c, s->id, "405");
            return;
        }
        if (websocket_request(s) < 0) {
            answer_now(c, s->id, "503");
            return;
        }
    } else if (!m->target.len || !m->method.len) {
        answer_now(c, s->id, "400");
        return;
    }
    if (s->authority.len && weir__headers_find(&m->headers, "host", 0) < 0 &&
        weir__headers_push(&m->headers, WEIR_STR("Host"), s->authority) < 0) {
        answer_now(c, s->id, "503");
        return;
    }
    if (s->n_cookies > 1 && join_cookies(s) < 0) {
        answer_now(c, s->id, "503");
        return;
    }
    m->body = WEIR_BODY_UNKNOWN;
    long cl = weir__headers_find(&m->headers, "content-length", 0);
    if (s->ws) {
        m->body = WEIR_BODY_NONE; /* the stream's DATA is the tunnel, after the 101 */
    } else if (end_stream) {
        m->body = WEIR_BODY_NONE;
        s->in_end = true;
    } else if (cl >= 0) {
        /* nghttp2 checked it is a number that matches the DATA frames. */
        uint64_t v = 0;
        weir_str t = m->headers.v[cl].value;
        for (size_t i = 0; i < t.len; i++)
            v = v * 10 + (uint64_t)(t.ptr[i] - '0');
        m->content_length = v;
        m->body = v ? WEIR_BODY_KNOWN : WEIR_BODY_NONE;
        if (s->in_limit && v > s->in_limit) {
            weir_log_warn("client %s: HTTP/2 stream %d: 413: request body over the limit", ip,
                          s->id);
            answer_now(c, s->id, "413");
            return;
        }
    }
    s->x.bytes_in += s->head_bytes;
    s->started = true;
    weir_stream_origin o = {.owner = s,
                            .done = stream_done,
                            .peer = &c->peer.sa,
                            .peer_ip = {c->ip, c->ip_len},
                            .ssl = c->conn.ssl,
                            .tls_conn = c->conn.ssl ? &c->conn : NULL,
                            .fd = c->conn.io.fd};
    c->cfg->handler->stream_start(s->stream, &s->x, s->head_bytes, &o);
}

static void final_goaway(weir_h2c *c);

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    weir_h2c *c = user;
    weir_h2s *s =
        f->hd.stream_id ? nghttp2_session_get_stream_user_data(ng, f->hd.stream_id) : NULL;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            break;
        if (!s->started && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            start_stream(c, s, end);
        } else if (end) {
            s->in_end = true; /* trailers */
            mark(s);
        }
        break;
    case NGHTTP2_DATA:
        if (f->hd.length == 0 && !end && flooded(c, &c->n_empty, MAX_EMPTY, "empty frame"))
            return 0;
        if (s && end) {
            s->in_end = true;
            mark(s);
        }
        break;
    case NGHTTP2_RST_STREAM:
        flooded(c, &c->n_resets, MAX_RESETS, "stream reset");
        break;
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            flooded(c, &c->n_settings, MAX_SETTINGS, "SETTINGS");
        break;
    case NGHTTP2_PING:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            flooded(c, &c->n_pings, MAX_PINGS, "PING");
        else if (c->retire == RETIRE_NOTICE && !c->ping_acked) {
            c->ping_acked = true; /* the only PING we send is the notice's */
            if (c->notice_min)
                final_goaway(c);
        }
        break;
    case NGHTTP2_PRIORITY:
        flooded(c, &c->n_empty, MAX_EMPTY, "PRIORITY");
        break;
    case NGHTTP2_WINDOW_UPDATE:
        /* Windows opened: streams waiting to send may go on. */
        for (weir_h2s *w = c->streams; w; w = w->next) {
            if (w->started && !w->session_done && weir__h2_out_pending(&w->out))
                w->wake = true;
        }
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    weir_h2c *c = user;
    weir_h2s *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s || s->session_done || !s->started) {
        nghttp2_session_consume(ng, id, len); /* nobody reads it: give the window back */
        return 0;
    }
    if (weir__h2_in_add(&s->in, data, len) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* out of memory or over the window */
    s->x.bytes_in += len;
    mark(s);
    (void)c;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *user)
{
    weir_h2c *c = user;
    weir_h2s *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    s->ng_closed = true;
    /* A running session keeps its stream linked: a close of the connection
     * must still find it. */
    if (!s->started || s->session_done)
        unlink_stream(s);
    c->n_streams--;
    if (c->n_streams == 0 && !c->closed)
        weir__timer_start(c->conn.loop, &c->timer, c->cfg->keepalive_timeout_ms, idle_timeout);
    if (!s->started) {
        c->cfg->handler->stream_drop(s->stream);
        free_stream(s);
    } else if (s->session_done) {
        free_stream(s);
    } else {
        /* Closed under a running session: the client reset it, or the
         * whole response went out while the session still finishes. */
        if (!s->out.eof_sent || error != NGHTTP2_NO_ERROR)
            s->reset = true;
        mark(s);
    }
    return 0;
}

/* The response ended before the request did: now that END_STREAM is on
 * its way, tell the client to stop sending (RFC 9113 8.1). Sending the
 * reset earlier could overtake the response. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        /* Ours or nghttp2's own (refused, malformed): frames the client
         * sent before seeing it must be ignored (on_begin_frame). */
        uint8_t *slot = recent_id(user, f->hd.stream_id);
        if (slot)
            *slot |= ID_RESET_SENT;
        return 0;
    }
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS))
        return 0;
    weir_h2s *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (s && s->rst_after_end && !s->in_end)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_error(nghttp2_session *ng, int code, const char *msg, size_t len, void *user)
{
    weir_h2c *c = user;
    const char *ip = c->ip;
    weir_log_info("client %s: HTTP/2: %.*s", ip, (int)len, msg);
    return 0;
}

/* ---- the connection ---- */

static void free_h2c(void *p)
{
    weir__pool_put(h2c_class, p);
}

static void close_h2c(weir_h2c *c)
{
    if (c->closed)
        return;
    c->closed = true;
    c->depth++; /* no frames from here on */
    /* Sessions still running end now; each calls stream_done. */
    weir_h2s *s = c->streams;
    while (s) {
        weir_h2s *next = s->next;
        unlink_stream(s);
        s->ng_closed = true;
        if (!s->started) {
            c->cfg->handler->stream_drop(s->stream);
            free_stream(s);
        } else if (s->session_done) {
            free_stream(s);
        } else {
            /* The session lets go of the exchange at once and does not
             * call stream_done. */
            s->reset = true;
            c->cfg->handler->stream_abort(s->stream);
            free_stream(s);
        }
        s = next;
    }
    c->streams = NULL;
    weir__timer_stop(c->conn.loop, &c->timer);
    weir__timer_stop(c->conn.loop, &c->age_timer);
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    free(c->out.buf);
    c->out.buf = NULL;
    weir__conn_close(&c->conn, false);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->list->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->list->n--;
    weir__loop_defer(c->conn.loop, free_h2c, c);
}

/* Writes what nghttp2 has to send. Returns false if the connection died. */
static bool send_frames(weir_h2c *c)
{
    return weir__h2_send(c->ng, &c->conn, &c->out);
}

/* Reads and feeds nghttp2. Returns false if the connection is over. */
static bool recv_frames(weir_h2c *c)
{
    int rc = weir__h2_recv(c->ng, &c->conn);
    if (rc == WEIR_DONE)
        return false;
    if (rc < 0) {
        const char *ip = c->ip;
        weir_log_info("client %s: HTTP/2 connection error: %s", ip, nghttp2_strerror(rc));
        if (rc == NGHTTP2_ERR_FLOODED)
            return false;
        /* A bad client preface too: the GOAWAY (after our SETTINGS) tells an
         * HTTP/2 client why, where a bare close does not (RFC 9113 3.4). */
        nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
    }
    return true;
}

/* Wakes the marked sessions. Their flushes only mark and kick meanwhile
 * (depth), so no stream but the woken one can go away during the walk. */
static void wake_streams(weir_h2c *c)
{
    c->depth++;
    for (weir_h2s *s = c->streams; s;) {
        weir_h2s *next = s->next;
        if (s->wake) {
            s->wake = false;
            if (s->started && !s->session_done)
                c->cfg->handler->stream_wake(s->stream);
        }
        s = next;
    }
    c->depth--;
}

/* One round of work: read, send, and close when nghttp2 is done. */
static void run_io(weir_h2c *c)
{
    if (c->closed || c->depth > 0)
        return;
    c->depth++;
    bool ok = recv_frames(c) && send_frames(c);
    c->depth--;
    if (!ok || (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
                c->out.len == 0)) {
        if (ok)
            weir__conn_shutdown(&c->conn);
        close_h2c(c);
        return;
    }
    if (c->goaway && c->n_streams == 0 && c->out.len == 0) {
        weir__conn_shutdown(&c->conn);
        close_h2c(c);
    }
}

static void kicked(void *arg)
{
    weir_h2c *c = arg;
    c->kick_armed = false;
    if (c->closed)
        return;
    run_io(c);
    if (!c->closed)
        wake_streams(c);
}

/* Schedules a round of work after the current one (off any caller's stack). */
static void kick(weir_h2c *c)
{
    if (c->kick_armed || c->closed)
        return;
    c->kick_armed = true;
    weir__loop_defer(c->conn.loop, kicked, c);
}

static void io_cb(weir_io *io, uint32_t events)
{
    weir_h2c *c = weir_container_of(io, weir_h2c, conn.io);
    weir__conn_on_events(&c->conn, events);
    run_io(c);
    if (!c->closed)
        wake_streams(c);
}

static void idle_timeout(weir_timer *t)
{
    weir_h2c *c = weir_container_of(t, weir_h2c, timer);
    if (c->n_streams > 0)
        return;
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    c->depth++;
    send_frames(c);
    c->depth--;
    weir__conn_shutdown(&c->conn);
    close_h2c(c);
}

/* ---- retiring (see retire_state) ---- */

/* The grace after an age GOAWAY is over: what is still open is reset. */
static void grace_over(weir_timer *t)
{
    weir_h2c *c = weir_container_of(t, weir_h2c, age_timer);
    if (c->closed)
        return;
    uint32_t n = 0;
    for (weir_h2s *s = c->streams; s; s = s->next) {
        if (!s->ng_closed) {
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
            n++;
        }
    }
    const char *ip = c->ip;
    weir_log_info("client %s: HTTP/2 connection past h2_max_connection_age and its grace: "
                  "%u streams still open, reset",
                  ip, n);
    c->depth++;
    send_frames(c);
    c->depth--;
    weir__conn_shutdown(&c->conn);
    close_h2c(c);
}

/* The final GOAWAY: the last stream taken is the highest one nghttp2 has
 * seen; the connection closes when the streams up to it end. */
static void final_goaway(weir_h2c *c)
{
    if (c->retire != RETIRE_NOTICE || c->closed)
        return;
    c->retire = RETIRE_GOAWAY;
    c->goaway = true;
    weir__timer_stop(c->conn.loop, &c->age_timer);
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    if (c->by_age) {
        uint32_t grace = atomic_load_explicit(&c->cfg->h2_age_grace_ms, memory_order_relaxed);
        weir__timer_start(c->conn.loop, &c->age_timer, grace, grace_over);
    }
    kick(c);
}

static void notice_waited(weir_timer *t)
{
    weir_h2c *c = weir_container_of(t, weir_h2c, age_timer);
    if (c->ping_acked || c->notice_min) {
        final_goaway(c);
        return;
    }
    c->notice_min = true;
    weir__timer_start(c->conn.loop, &c->age_timer, NOTICE_MAX_MS - NOTICE_MIN_MS, notice_waited);
}

/* Starts retiring c (once; a later cause changes nothing). */
static void retire(weir_h2c *c, bool by_age)
{
    if (c->retire != RETIRE_NONE || c->goaway || c->closed)
        return;
    c->retire = RETIRE_NOTICE;
    c->by_age = by_age;
    static const uint8_t ping[8] = {'w', 'e', 'i', 'r', 'b', 'y', 'e', 0};
    if (nghttp2_submit_shutdown_notice(c->ng) != 0 ||
        nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, ping) != 0) {
        final_goaway(c);
        return;
    }
    weir__timer_start(c->conn.loop, &c->age_timer, NOTICE_MIN_MS, notice_waited);
    kick(c);
}

static void age_reached(weir_timer *t)
{
    weir_h2c *c = weir_container_of(t, weir_h2c, age_timer);
    const char *ip = c->ip;
    weir_log_debug("client %s: HTTP/2 connection reached h2_max_connection_age: GOAWAY", ip);
    retire(c, true);
}

int weir__h2c_start(weir_conn *from, const struct sockaddr *peer, socklen_t peer_len,
                    const weir_h1s_config *cfg, weir_h2c_list *list)
{
    weir_h2c *c = weir__pool_get(h2c_class);
    if (!c) {
        weir__conn_close(from, true);
        return -ENOMEM;
    }
    memset(c, 0, sizeof(*c));
    c->conn = *from;
    c->conn.io.cb = io_cb;
    weir_loop *loop = from->loop;
    memset(from, 0, sizeof(*from));
    from->io.fd = -1;
    from->loop = loop; /* its owner still defers its own free there */
    int rc = weir__io_mod(c->conn.loop, &c->conn.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
    c->cfg = cfg;
    c->list = list;
    if (peer_len <= sizeof(c->peer))
        memcpy(&c->peer, peer, peer_len);
    c->ip_len = (uint8_t)weir__addr_format_ip(&c->peer.sa, c->ip, sizeof(c->ip));
    c->next = list->head;
    if (c->next)
        c->next->prev = c;
    list->head = c;
    list->n++;
    c->flood_start = weir__loop_now(c->conn.loop);

    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    if (rc < 0 || nghttp2_session_callbacks_new(&cbs) != 0) {
        close_h2c(c);
        return rc < 0 ? rc : -ENOMEM;
    }
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        close_h2c(c);
        return -ENOMEM;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_continuations(opt, 16);
    rc = nghttp2_session_server_new3(&c->ng, cbs, c, opt, weir__h2_mem());
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0) {
        c->ng = NULL;
        close_h2c(c);
        return -ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WEIR_H2_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_header_bytes},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    weir__timer_start(c->conn.loop, &c->timer, cfg->keepalive_timeout_ms, idle_timeout);
    uint32_t age = atomic_load_explicit(&cfg->h2_max_age_ms, memory_order_relaxed);
    if (age)
        weir__timer_start(c->conn.loop, &c->age_timer, weir__jitter_ms(age), age_reached);
    /* Bytes already read (the preface, maybe more) go to nghttp2 first. A
     * connection error here (a wrong preface on an h2c port, handed over by
     * h1_server.c) sends its GOAWAY at once: the client may have closed its
     * side already, and the next read would then close ours first. */
    weir_conn *cn = &c->conn;
    if (cn->rend > cn->rstart) {
        ssize_t used = nghttp2_session_mem_recv(c->ng, (const uint8_t *)cn->rbuf + cn->rstart,
                                                cn->rend - cn->rstart);
        cn->rstart = cn->rend = 0;
        if (used < 0) {
            const char *ip = c->ip;
            weir_log_info("client %s: HTTP/2 connection error: %s", ip,
                          nghttp2_strerror((int)used));
            if (used == NGHTTP2_ERR_FLOODED) {
                close_h2c(c);
                return -EPROTO;
            }
            nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
            c->depth++;
            send_frames(c);
            c->depth--;
        }
    }
    weir__conn_release_rbuf(cn);
    kick(c);
    return 0;
}

void weir__h2c_list_drain(weir_h2c_list *list)
{
    list->draining = true;
    weir__h2c_list_goaway(list);
}

void weir__h2c_list_goaway(weir_h2c_list *list)
{
    for (weir_h2c *c = list->head; c;) {
        weir_h2c *next = c->next;
        retire(c, false);
        c = next;
    }
}

void weir__h2c_list_close_all(weir_h2c_list *list)
{
    while (list->head)
        close_h2c(list->head);
}
