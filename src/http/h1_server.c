/*
 * h1_server.c - downstream HTTP/1.x connections (see h1_server.h).
 */
#include "http/h1_server.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/jitter.h"
#include "net/proxy_proto.h"
#include "core/log.h"
#include "core/pool.h"
#include "net/sock.h"
#include "http/h2_server.h"
#include "net/tls.h"

static weir_pool_class h1s_class;

__attribute__((constructor)) static void register_class(void)
{
    h1s_class = weir__pool_register("h1s", sizeof(weir_h1s), 4096);
}

static const char *state_name(weir_h1s_state s)
{
    switch (s) {
    case WEIR_H1S_PROXY:
        return "proxy";
    case WEIR_H1S_HANDSHAKE:
        return "handshake";
    case WEIR_H1S_IDLE:
        return "idle";
    case WEIR_H1S_HEAD:
        return "head";
    case WEIR_H1S_ACTIVE:
        return "active";
    case WEIR_H1S_LINGER:
        return "linger";
    case WEIR_H1S_CLOSED:
        return "closed";
    }
    return "?";
}

static void set_state(weir_h1s *h, weir_h1s_state to)
{
    /* Legal moves: proxy->handshake/head, handshake->head, idle<->head,
     * head->active, active->idle/head, any->closed. */
    assert(to == WEIR_H1S_CLOSED || h->state != WEIR_H1S_CLOSED);
    assert(to != WEIR_H1S_ACTIVE || h->state == WEIR_H1S_HEAD);
    weir_log_debug("h1s %p: %s -> %s", (void *)h, state_name(h->state), state_name(to));
    h->state = to;
}

static void free_h1s(void *p)
{
    weir__pool_put(h1s_class, p);
}

static void close_conn(weir_h1s *h, bool reset)
{
    if (h->state == WEIR_H1S_CLOSED)
        return;
    if (h->stream) {
        /* Only a stream that never started can be here (a started one ends
         * through weir__h1s_stream_done). */
        h->cfg->handler->stream_drop(h->stream);
        h->stream = NULL;
        h->req = NULL;
    }
    set_state(h, WEIR_H1S_CLOSED);
    weir__timer_stop(h->conn.loop, &h->timer);
    weir__conn_close(&h->conn, reset);
    if (h->prev)
        h->prev->next = h->next;
    else
        h->list->head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->list->n--;
    weir__loop_defer(h->conn.loop, free_h1s, h);
}

/* Writes a canned error response and closes (framing is in doubt). */
static void reject(weir_h1s *h, int status, const char *why)
{
    const char *ip = h->ip;
    weir_log_warn("client %s: %d %s: %s", ip, status, weir__h1_reason(status), why);
    char buf[512];
    int body_len = snprintf(buf, 128, "%d %s\n", status, weir__h1_reason(status));
    char resp[768];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\nServer: weir\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                     status, weir__h1_reason(status), body_len, buf);
    /* Best effort, one write: the connection is closing anyway. */
    weir__conn_write_now(&h->conn, resp, (size_t)n);
    /* Let the client read the answer: stop reading, then close. A lingering
     * close is not worth it here; the shutdown lets the FIN follow. */
    weir__conn_shutdown(&h->conn);
    close_conn(h, false);
}

static void stream_done(void *owner, bool reuse);

/*
 * A request the codec refuses (bad syntax or framing, too large, too
 * slow): answered like any other request's failure, by a session that
 * runs no phase but error_while_proxy, response_filter and logging, so it
 * has an access-log line and a request id, as in nginx. `r` is the parsed
 * head when there is one (its method, target and fields are shown), or
 * NULL. What the client sent beyond is not read; the connection closes.
 */
static void refuse(weir_h1s *h, int status, const char *why, const weir_h1_request *r)
{
    weir_conn *c = &h->conn;
    if (!h->stream || !h->req || !h->cfg->handler->stream_refuse) {
        reject(h, status, why);
        return;
    }
    weir_msg *m = h->req;
    m->method = r ? r->method : WEIR_STR_NULL;
    m->target = r ? r->target : WEIR_STR_NULL;
    m->version = r ? 10 + r->minor_version : 11;
    m->headers.n = r ? (uint32_t)r->n_headers : 0;
    weir__headers_changed(&m->headers);
    m->body = WEIR_BODY_NONE;
    m->content_length = 0;
    m->close = true;
    weir_h1_framing f = {.kind = WEIR_H1_BODY_NONE};
    weir__h1x_init_downstream(&h->x, c, m->headers.arena, &f, c->rend, r ? r->minor_version : 1, 0);
    h->close_after = true;
    weir__timer_stop(c->loop, &h->timer);
    set_state(h, WEIR_H1S_ACTIVE);
    h->req = NULL;
    weir_stream_origin o = {.owner = h,
                            .done = stream_done,
                            .peer = &h->peer.sa,
                            .peer_ip = {h->ip, h->ip_len},
                            .ssl = c->ssl,
                            .conn = c->ssl ? NULL : c,
                            .fd = c->io.fd};
    h->cfg->handler->stream_refuse(h->stream, &h->x.x, status, why, &o);
}

static void handshake_failed(weir_h1s *h, const char *why)
{
    const char *ip = h->ip;
    if (h->conn.ssl && BIO_number_read(SSL_get_rbio(h->conn.ssl)) == 0 &&
        h->conn.last_errno == ECONNRESET) {
        /* Connected and closed without a byte: a port check, not a
         * failed handshake. */
        weir_log_debug("client %s: closed before the TLS handshake", ip);
        close_conn(h, false);
        return;
    }
    weir__tls_count(WEIR_TLS_FAILURE);
    weir_log_info("client %s: TLS handshake failed: %s", ip, why);
    if (strcmp(why, "http request") == 0) {
        /* Plain HTTP on the TLS port: say so in plain HTTP, as nginx does. */
        static const char resp[] = "HTTP/1.1 400 Bad Request\r\nServer: weir\r\n"
                                   "Content-Type: text/plain\r\nContent-Length: 48\r\n"
                                   "Connection: close\r\n\r\n"
                                   "400 Bad Request: plain HTTP sent to a TLS port\n\n";
        char sink[4096]; /* the rest of the request: unread, the close would reset */
        while (read(h->conn.io.fd, sink, sizeof(sink)) > 0)
            ;
        ssize_t w = write(h->conn.io.fd, resp, sizeof(resp) - 1);
        (void)w;
        shutdown(h->conn.io.fd, SHUT_WR);
    }
    close_conn(h, false);
}

static void header_timeout(weir_timer *t)
{
    weir_h1s *h = weir_container_of(t, weir_h1s, timer);
    if (h->state == WEIR_H1S_PROXY) {
        weir_log_info("client %s: no PROXY header in time: closed", h->ip);
        close_conn(h, false);
    } else if (h->state == WEIR_H1S_HANDSHAKE)
        handshake_failed(h, "timed out");
    else if (h->state == WEIR_H1S_HEAD && h->conn.rend > 0)
        refuse(h, 408, "request head not received in time", NULL);
    else
        close_conn(h, false); /* keep-alive or linger timeout, or nothing sent */
}

/* Reads and drops what the client still sends after we answered without
 * reading its whole body, so that closing does not reset the connection
 * (which could destroy the response before the client read it). */
static void linger(weir_h1s *h)
{
    if (weir__conn_discard(&h->conn) == WEIR_DONE)
        close_conn(h, false);
}

static void start_linger(weir_h1s *h)
{
    set_state(h, WEIR_H1S_LINGER);
    weir__conn_shutdown(&h->conn);
    weir__timer_start(h->conn.loop, &h->timer, 2000, header_timeout);
    linger(h);
}

static void try_head(weir_h1s *h);
static void try_proxy(weir_h1s *h);

/* The connection goes on as HTTP/2: h2_server takes the socket over. */
static void switch_to_h2(weir_h1s *h)
{
    weir__timer_stop(h->conn.loop, &h->timer);
    socklen_t len = h->peer.sa.sa_family == AF_INET6 ? sizeof(h->peer.v6) : sizeof(h->peer.v4);
    weir__h2c_start(&h->conn, &h->peer.sa, len, h->cfg, h->list->h2);
    close_conn(h, false); /* closes nothing: the connection moved */
}

static void try_handshake(weir_h1s *h)
{
    weir_conn *c = &h->conn;
    int rc = weir__conn_handshake(c);
    if (rc == WEIR_AGAIN)
        return;
    if (rc < 0) {
        handshake_failed(h, weir__conn_tls_error());
        return;
    }
    weir__tls_count(WEIR_TLS_HANDSHAKE);
    if (SSL_session_reused(c->ssl))
        weir__tls_count(WEIR_TLS_RESUMED);
    weir_str proto = weir__tls_alpn(c->ssl);
    if (proto.len == 2 && memcmp(proto.ptr, "h2", 2) == 0 && h->list->h2) {
        switch_to_h2(h);
        return;
    }
    weir__timer_stop(c->loop, &h->timer);
    set_state(h, WEIR_H1S_HEAD);
    weir__timer_start(c->loop, &h->timer, h->cfg->header_timeout_ms, header_timeout);
    /* Request bytes may already sit in OpenSSL's buffer: try a read. */
    c->readable = true;
    try_head(h);
}

static void io_cb(weir_io *io, uint32_t events)
{
    weir_h1s *h = weir_container_of(io, weir_h1s, conn.io);
    weir__conn_on_events(&h->conn, events);
    if (h->state == WEIR_H1S_PROXY) {
        if (h->conn.readable || h->conn.eof || h->conn.error)
            try_proxy(h);
    } else if (h->state == WEIR_H1S_HANDSHAKE) {
        if (h->conn.readable || h->conn.writable)
            try_handshake(h);
    } else if (h->state == WEIR_H1S_ACTIVE)
        h->cfg->handler->stream_wake(h->stream);
    else if (h->state == WEIR_H1S_LINGER)
        linger(h);
    else if (h->state != WEIR_H1S_CLOSED && h->conn.readable)
        try_head(h);
}

static const char *parse_error(int rc)
{
    return weir_h1_strerror(rc);
}

/* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host field; none or
 * several is a 400 (backends disagreeing on which Host counts is a
 * routing-confusion vector). HTTP/1.0 may omit it. */
static const char *check_host(const weir_h1_request *r)
{
    int n = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (r->headers[i].name.len == 4 && weir_h1_name_is(r->headers[i].name, "host"))
            n++;
    }
    if (n > 1)
        return "several Host fields";
    if (n == 0 && r->minor_version >= 1)
        return "missing Host field";
    return NULL;
}

/*
 * An absolute-form target ("http://host:port/path?q", RFC 9112 3.2.2)
 * becomes origin-form, and its authority replaces the Host field's value,
 * which the target overrides. Slices stay in the read buffer; only a
 * target without a path ("http://h?q") needs arena memory for its '/'.
 * Returns NULL or why the target is invalid.
 */
static const char *absolute_form(weir_msg *m)
{
    weir_str t = m->target;
    size_t skip;
    if (t.len >= 7 && strncasecmp(t.ptr, "http://", 7) == 0)
        skip = 7;
    else if (t.len >= 8 && strncasecmp(t.ptr, "https://", 8) == 0)
        skip = 8;
    else
        return NULL; /* origin-form, or "*" / authority-form: left as sent */
    const char *auth = t.ptr + skip, *end = t.ptr + t.len, *p = auth;
    while (p < end && *p != '/' && *p != '?' && *p != '#')
        p++;
    weir_str authority = {auth, (size_t)(p - auth)};
    if (authority.len == 0 || memchr(authority.ptr, '@', authority.len))
        return "invalid authority in an absolute-form target";
    if (p == end) {
        m->target = WEIR_STR("/");
    } else if (*p == '/') {
        m->target = (weir_str){p, (size_t)(end - p)};
    } else {
        char *nt = weir__arena_alloc(m->headers.arena, (size_t)(end - p) + 1);
        if (!nt)
            return "out of memory";
        nt[0] = '/';
        memcpy(nt + 1, p, (size_t)(end - p));
        m->target = (weir_str){nt, (size_t)(end - p) + 1};
    }
    long i = weir__headers_find(&m->headers, "host", 0);
    if (i >= 0)
        m->headers.v[i].value = authority;
    else if (weir__headers_push(&m->headers, WEIR_STR("Host"), authority) < 0)
        return "out of memory";
    return NULL;
}

static void stream_done(void *owner, bool reuse)
{
    weir__h1s_stream_done(owner, reuse);
}

/*
 * Connection aging, at the start of each request: true if this one is the
 * connection's last (nginx's keepalive_requests and keepalive_time). It is
 * served normally with Connection: close: ending a connection between
 * requests would race with the request its client may be sending.
 */
static bool last_request(weir_h1s *h)
{
    uint32_t max = atomic_load_explicit(&h->cfg->keepalive_requests, memory_order_relaxed);
    uint32_t time_ms = atomic_load_explicit(&h->cfg->keepalive_time_ms, memory_order_relaxed);
    h->n_requests++;
    if (max && max != WEIR_UNLIMITED && h->n_requests >= max)
        return true;
    if (!time_ms || time_ms == WEIR_UNLIMITED)
        return false;
    uint64_t age = weir__loop_now(h->conn.loop) - h->born_ms;
    return age >= weir__jitter_ms_with(time_ms, h->jitter);
}

/* Reads and parses a request head; starts the stream when complete. */
static void try_head(weir_h1s *h)
{
    weir_conn *c = &h->conn;
    for (;;) {
        bool h2c = h->cfg->h2c && !c->ssl && h->list->h2;
        if (c->rend > 0 && h2c && c->rbuf[0] == 'P') {
            /* HTTP/2 with prior knowledge starts with its preface. */
            uint32_t n = c->rend < WEIR_H2_PREFACE_LEN ? c->rend : WEIR_H2_PREFACE_LEN;
            if (memcmp(c->rbuf, WEIR_H2_PREFACE, n) == 0) {
                if (n == WEIR_H2_PREFACE_LEN) {
                    switch_to_h2(h);
                    return;
                }
                if (c->eof || c->error) {
                    close_conn(h, false);
                    return;
                }
                if (!c->readable)
                    return;
                goto read_more;
            }
        }
        if (c->rend > 0) {
            if (!h->stream) {
                h->stream = h->cfg->handler->stream_new(h->cfg->svc, c->loop, &h->req);
                if (!h->stream) {
                    reject(h, 503, "out of memory");
                    return;
                }
                h->scan = 0;
            }
            if (h->state == WEIR_H1S_IDLE) {
                set_state(h, WEIR_H1S_HEAD);
                weir__timer_start(c->loop, &h->timer, h->cfg->header_timeout_ms, header_timeout);
            }
            weir_headers *hdrs = &h->req->headers;
            weir_h1_request r = {.headers = hdrs->v};
            uint32_t max = h->cfg->max_headers < hdrs->cap ? h->cfg->max_headers : hdrs->cap;
            int rc = weir_h1_parse_request(c->rbuf, c->rend, &r, max, &h->scan);
            if (rc == WEIR_H1_E_TOO_MANY_HEADERS && max < h->cfg->max_headers) {
                /* More fields than the inline table holds: parse again into
                 * a table of the configured size (rare, so paid only here). */
                if (weir__headers_reserve(hdrs, h->cfg->max_headers) < 0) {
                    reject(h, 503, "out of memory");
                    return;
                }
                r = (weir_h1_request){.headers = hdrs->v};
                rc = weir_h1_parse_request(c->rbuf, c->rend, &r, h->cfg->max_headers, &h->scan);
            }
            if (rc == WEIR_H1_E_TOO_MANY_HEADERS) {
                refuse(h, 431, "too many header fields", NULL);
                return;
            }
            if (rc == WEIR_H1_E_VERSION && h2c) {
                /* Neither HTTP/1.0 nor 1.1 on a port that also speaks HTTP/2
                 * with prior knowledge: a wrong HTTP/2 preface ("PRI *
                 * HTTP/2.0" with the rest wrong; h2spec sends "INVALID
                 * CONNECTION PREFACE"). nghttp2 answers it with
                 * GOAWAY(PROTOCOL_ERROR) (RFC 9113 3.4), which such a client
                 * reads, where a 505 would be taken for a garbled frame. */
                switch_to_h2(h);
                return;
            }
            if (rc == WEIR_H1_E_VERSION) {
                refuse(h, 505, "unsupported HTTP version", NULL);
                return;
            }
            if (rc < 0) {
                refuse(h, 400, parse_error(rc), NULL);
                return;
            }
            if (rc > 0) {
                if ((uint32_t)rc > h->cfg->max_header_bytes) {
                    refuse(h, 431, "request head too large", NULL);
                    return;
                }
                weir_h1_framing f;
                int frc = weir_h1_request_framing(&r, &f);
                if (frc < 0) {
                    refuse(h, frc == WEIR_H1_E_TE_UNSUPPORTED ? 501 : 400, parse_error(frc), &r);
                    return;
                }
                const char *host_err = check_host(&r);
                if (host_err) {
                    refuse(h, 400, host_err, &r);
                    return;
                }
                if (h->cfg->max_body_bytes && f.kind == WEIR_H1_BODY_LENGTH &&
                    f.content_length > h->cfg->max_body_bytes) {
                    refuse(h, 413, "request body over the limit", &r);
                    return;
                }
                weir_msg *m = h->req;
                m->method = r.method;
                m->target = r.target;
                m->version = 10 + r.minor_version;
                m->headers.n = (uint32_t)r.n_headers;
                weir__headers_changed(&m->headers);
                m->body = f.kind == WEIR_H1_BODY_NONE                              ? WEIR_BODY_NONE
                          : f.kind == WEIR_H1_BODY_LENGTH && f.content_length == 0 ? WEIR_BODY_NONE
                          : f.kind == WEIR_H1_BODY_LENGTH                          ? WEIR_BODY_KNOWN
                                                          : WEIR_BODY_UNKNOWN;
                m->content_length = f.content_length;
                m->upgrade = f.upgrade;
                const char *target_err = absolute_form(m);
                if (target_err) {
                    refuse(h, 400, target_err, &r);
                    return;
                }
                if (last_request(h) || h->list->draining)
                    f.keep_alive = false;
                weir__h1x_init_downstream(&h->x, c, m->headers.arena, &f, (uint32_t)rc,
                                          r.minor_version, h->cfg->max_body_bytes);
                h->x.expect_continue = f.expect_continue && r.minor_version >= 1;
                h->close_after = !f.keep_alive;
                weir__timer_stop(c->loop, &h->timer);
                set_state(h, WEIR_H1S_ACTIVE);
                h->req = NULL;
                weir_stream_origin o = {.owner = h,
                                        .done = stream_done,
                                        .peer = &h->peer.sa,
                                        .peer_ip = {h->ip, h->ip_len},
                                        .ssl = c->ssl,
                                        .conn = c->ssl ? NULL : c,
                                        .tls_conn = c->ssl ? c : NULL,
                                        .fd = c->io.fd};
                h->cfg->handler->stream_start(h->stream, &h->x.x, (uint32_t)rc, &o);
                return;
            }
            if (c->rend >= h->cfg->max_header_bytes) {
                refuse(h, 431, "request head too large", NULL);
                return;
            }
        }
        if (c->eof || c->error) {
            /* Closed between requests (normal) or mid-head (nothing to answer). */
            close_conn(h, false);
            return;
        }
        if (!c->readable)
            return;
    read_more:
        if (weir__conn_need_rbuf(c) < 0) {
            reject(h, 503, "out of memory");
            return;
        }
        if (c->rend == c->rcap) {
            uint32_t cap = h->cfg->max_header_bytes + 1024;
            if (weir__conn_grow_rbuf(c, cap) < 0) {
                reject(h, 503, "out of memory");
                return;
            }
        }
        int rc = weir__conn_read(c);
        if (rc == WEIR_AGAIN) {
            if (c->rend == 0) {
                /* Spurious wake-up on an idle connection: hold no buffer. */
                weir__conn_release_rbuf(c);
            }
            return;
        }
        if (rc < 0 && rc != WEIR_DONE) {
            close_conn(h, false);
            return;
        }
    }
}

/* After the accept (and the PROXY header): the TLS handshake, or the
 * first request head with the header timeout from the accept on. */
static int start_conn(weir_h1s *h)
{
    weir_loop *loop = h->conn.loop;
    if (h->cfg->tls) {
        SSL *ssl = weir__tls_server_ssl(h->cfg->tls);
        if (!ssl) {
            close_conn(h, true);
            return -ENOMEM;
        }
        weir__conn_set_tls(&h->conn, ssl);
        h->state = WEIR_H1S_HANDSHAKE;
        weir__timer_stop(loop, &h->timer);
        weir__timer_start(loop, &h->timer, h->cfg->handshake_timeout_ms, header_timeout);
        if (h->conn.readable)
            try_handshake(h);
        return 0;
    }
    if (h->state == WEIR_H1S_PROXY) {
        set_state(h, WEIR_H1S_HEAD);
        if (h->conn.readable)
            try_head(h);
        return 0;
    }
    set_state(h, WEIR_H1S_HEAD);
    weir__timer_start(loop, &h->timer, h->cfg->header_timeout_ms, header_timeout);
    return 0;
}

/*
 * The PROXY header, peeked and then consumed exactly (whatever follows is
 * the client's: TLS or HTTP, read by their own code). Its client address
 * replaces the peer's for everything after: logs, X-Forwarded-For, hashing.
 * A connection without a valid one is closed with a log line.
 */
static void try_proxy(weir_h1s *h)
{
    weir_pp_header pp;
    int r = weir__pp_take(h->conn.io.fd, &pp);
    if (r == WEIR_PP_MORE) {
        h->conn.readable = false; /* more comes with the next edge */
        return;
    }
    if (r == WEIR_PP_CLOSED) {
        weir_log_debug("client %s: closed before its PROXY header", h->ip);
        close_conn(h, false);
        return;
    }
    if (r == WEIR_PP_INVALID) {
        weir_log_info("client %s: not a valid PROXY header (or one for a datagram): closed", h->ip);
        close_conn(h, false);
        return;
    }
    if (pp.has_addrs) {
        memcpy(&h->peer, &pp.src, pp.src_len);
        h->ip_len = (uint8_t)weir__addr_format_ip(&h->peer.sa, h->ip, sizeof(h->ip));
    }
    /* What came with the header (bytes, or the FIN, whose edge was
     * reported with it) is read next: a read that finds nothing costs
     * one EAGAIN. */
    h->conn.readable = true;
    start_conn(h);
}

int weir__h1s_accept(weir_loop *loop, int fd, bool proxy_done, const struct sockaddr *peer,
                     socklen_t peer_len, const weir_h1s_config *cfg, weir_h1s_list *list)
{
    weir_h1s *h = weir__pool_get(h1s_class);
    if (!h) {
        close(fd);
        return -ENOMEM;
    }
    int rc = weir__conn_init(&h->conn, loop, fd, io_cb);
    if (rc < 0) {
        close(fd);
        weir__pool_put(h1s_class, h);
        return rc;
    }
    h->cfg = cfg;
    h->list = list;
    h->state = WEIR_H1S_IDLE;
    h->n_requests = 0;
    h->jitter = weir__rand32();
    h->born_ms = weir__loop_now(loop);
    if (peer_len <= sizeof(h->peer))
        memcpy(&h->peer, peer, peer_len);
    h->ip_len = (uint8_t)weir__addr_format_ip(&h->peer.sa, h->ip, sizeof(h->ip));
    h->next = list->head;
    if (h->next)
        h->next->prev = h;
    list->head = h;
    list->n++;
    if (proxy_done) {
        /* Handed over (TLS passthrough declined it): what the client sent
         * waits in the socket, and its readiness was seen by the owner
         * before. */
        h->conn.readable = true;
    } else if (cfg->proxy_protocol) {
        /* The PROXY header comes first, before TLS; the header timeout
         * bounds it. */
        h->state = WEIR_H1S_PROXY;
        weir__timer_start(loop, &h->timer, cfg->header_timeout_ms, header_timeout);
        h->conn.readable = true; /* it may be here already */
        try_proxy(h);
        return 0;
    }
    return start_conn(h);
}

static void resume_head(void *arg)
{
    weir_h1s *h = arg;
    if (h->state == WEIR_H1S_IDLE)
        try_head(h);
}

/* How long an idle keep-alive connection is kept: keepalive_timeout, or
 * while draining at most DRAIN_IDLE_MS, so that an idle client does not
 * hold a stopping process for its whole grace period. (A client that was
 * sending requests back to back has sent its next one long before.) */
#define DRAIN_IDLE_MS 1000
static uint32_t idle_ms(const weir_h1s *h)
{
    uint32_t ms = h->cfg->keepalive_timeout_ms;
    return h->list->draining && ms > DRAIN_IDLE_MS ? DRAIN_IDLE_MS : ms;
}

/* Bytes the client sent that nobody read: pipelined requests in the
 * buffer, or in the socket (a peek, only on the way to a close). */
static bool unread_input(weir_conn *c)
{
    if (c->rbuf && c->rend > c->rstart)
        return true;
    if (!c->readable)
        return false;
    if (c->ssl && SSL_pending(c->ssl) > 0)
        return true;
    char b;
    return recv(c->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void weir__h1s_stream_done(weir_h1s *h, bool reuse)
{
    weir_conn *c = &h->conn;
    h->stream = NULL;
    if (h->state == WEIR_H1S_CLOSED)
        return;
    if (c->error) {
        close_conn(h, false);
        return;
    }
    if (!reuse) {
        /* The response is incomplete: a reset, so that a client reading
         * until close can never take a truncated body for a whole one. */
        close_conn(h, true);
        return;
    }
    if (!h->x.in_done && !c->eof) {
        start_linger(h);
        return;
    }
    /* Closed only when the response said so: a response that went out
     * with keep-alive before a drain began leaves the client free to send
     * its next request at once, so the connection waits for it (and
     * answers it with Connection: close) instead of closing under it. */
    if (h->close_after || !h->x.out_keep_alive || c->eof) {
        if (!c->eof && unread_input(c)) {
            /* Requests pipelined behind the last one (keepalive_requests
             * reached, a drain) are not answered: read and drop them
             * before closing, or the close would reset the connection and
             * could destroy the response before the client read it. */
            start_linger(h);
            return;
        }
        weir__conn_shutdown(c);
        close_conn(h, false);
        return;
    }
    /* Keep-alive: move pipelined bytes to the start of the buffer. */
    if (c->rbuf) {
        uint32_t left = c->rend - c->rstart;
        if (left > 0)
            memmove(c->rbuf, c->rbuf + c->rstart, left);
        c->rstart = 0;
        c->rend = left;
        if (left == 0)
            weir__conn_release_rbuf(c);
    }
    set_state(h, WEIR_H1S_IDLE);
    weir__timer_start(c->loop, &h->timer, idle_ms(h), header_timeout);
    if (c->rend > 0 || c->readable) {
        /* Pipelined request or bytes that arrived meanwhile: go on, but off
         * this stack (the stream that called us is unwinding). */
        weir__loop_defer(c->loop, resume_head, h);
    }
}

void weir__h1s_list_drain(weir_h1s_list *list)
{
    bool first = !list->draining; /* the drain check calls again every 20 ms */
    list->draining = true;
    /*
     * No connection is closed here. Closing an idle keep-alive connection
     * races with the request its client may be sending on it right now
     * (every wrk connection lost one across a binary upgrade). Instead
     * each connection is told: its next response, or the one still to
     * come, carries Connection: close, and it closes after that. Idle
     * connections whose client sends nothing more close after
     * DRAIN_IDLE_MS (or their keep-alive timeout, if shorter).
     */
    for (weir_h1s *h = list->head; h; h = h->next) {
        if (h->state == WEIR_H1S_ACTIVE && h->x.x.bytes_out == 0) {
            h->x.out_keep_alive = false; /* the response head is not out yet */
            h->close_after = true;
        } else if (h->state == WEIR_H1S_IDLE && first) {
            weir__timer_start(h->conn.loop, &h->timer, idle_ms(h), header_timeout);
        }
    }
}

void weir__h1s_list_close_all(weir_h1s_list *list)
{
    weir_h1s *h = list->head;
    while (h) {
        weir_h1s *next = h->next;
        if (h->state == WEIR_H1S_ACTIVE && h->stream) {
            void *stream = h->stream;
            h->stream = NULL;
            h->cfg->handler->stream_abort(stream);
        }
        close_conn(h, false);
        h = next;
    }
}
