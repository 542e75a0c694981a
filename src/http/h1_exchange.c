/*
 * h1_exchange.c - HTTP/1.1 implementation of the exchange operations.
 *
 * Receive path: the head sits at the start of the connection's buffer and
 * stays there (pinned: the message's header slices point into it) until the
 * exchange ends; body bytes are read after it, handed out as slices, and the
 * region after the head is reused once they are consumed.
 *
 * Send path: the head is serialized into the connection's scratch buffer;
 * body slices are queued by reference between chunk-size lines.
 */
#include "http/h1_exchange.h"

#include <errno.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include "http/h1_parse.h"

#define MAX_TRAILERS (16 * 1024)

const char *weir__h1_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}

/* ---- receiving ---- */

static int read_head(weir_exchange *ex, weir_msg *m)
{
    weir_h1x *x = (weir_h1x *)ex;
    weir_conn *c = x->conn;
    for (;;) {
        if (c->rend > 0) {
            weir_h1_response r = {.headers = m->headers.v};
            uint32_t max = x->max_headers < m->headers.cap ? x->max_headers : m->headers.cap;
            int rc = weir_h1_parse_response(c->rbuf, c->rend, &r, max, &x->scan);
            if (rc == WEIR_H1_E_TOO_MANY_HEADERS && max < x->max_headers) {
                if (weir__headers_reserve(&m->headers, x->max_headers) < 0)
                    return WEIR_ERR_NOMEM;
                r = (weir_h1_response){.headers = m->headers.v};
                rc = weir_h1_parse_response(c->rbuf, c->rend, &r, x->max_headers, &x->scan);
            }
            if (rc < 0)
                return WEIR_EX_E_HEAD;
            if (rc > 0 && r.status < 200 && r.status != 101) {
                /* Interim response (100 Continue, 103 Early Hints): weir
                 * answers Expect itself, so drop it and read the final one. */
                memmove(c->rbuf, c->rbuf + rc, c->rend - (uint32_t)rc);
                c->rend -= (uint32_t)rc;
                x->scan = 0;
                continue;
            }
            if (rc > 0) {
                weir_h1_framing f;
                if (weir_h1_response_framing(&r, x->req_method, &f) < 0)
                    return WEIR_EX_E_FRAMING;
                m->status = r.status;
                m->upgrade = r.status == 101;
                m->reason = r.reason;
                m->version = 10 + r.minor_version;
                m->headers.n = (uint32_t)r.n_headers;
                weir__headers_changed(&m->headers);
                x->in_kind = f.kind;
                x->in_left = f.content_length;
                x->in_done = f.kind == WEIR_H1_BODY_NONE ||
                             (f.kind == WEIR_H1_BODY_LENGTH && f.content_length == 0);
                m->body = f.kind == WEIR_H1_BODY_NONE     ? WEIR_BODY_NONE
                          : f.kind == WEIR_H1_BODY_LENGTH ? WEIR_BODY_KNOWN
                                                          : WEIR_BODY_UNKNOWN;
                m->content_length = f.content_length;
                weir_chunked_init(&x->dec);
                x->in_base = (uint32_t)rc;
                c->rstart = (uint32_t)rc;
                x->x.bytes_in += (uint64_t)rc;
                x->scan = 0;
                /* keep-alive of the upstream connection */
                x->out_keep_alive = f.keep_alive;
                return WEIR_OK;
            }
            if (c->rend >= x->max_head)
                return WEIR_EX_E_HEAD_TOO_LARGE;
        }
        if (c->eof)
            return WEIR_EX_E_CLOSED;
        if (c->error)
            return -c->last_errno;
        if (!c->readable)
            return WEIR_AGAIN;
        if (weir__conn_need_rbuf(c) < 0)
            return WEIR_ERR_NOMEM;
        if (c->rend == c->rcap && weir__conn_grow_rbuf(c, x->max_head) < 0)
            return WEIR_ERR_NOMEM;
        int rc = weir__conn_read(c);
        if (rc == WEIR_AGAIN)
            return WEIR_AGAIN;
        if (rc < 0)
            return rc;
    }
}

/* Makes room after the pinned head: drop consumed bytes. */
static void compact(weir_h1x *x)
{
    weir_conn *c = x->conn;
    if (c->rstart == c->rend) {
        c->rstart = c->rend = x->in_base;
    } else if (c->rend == c->rcap && c->rstart > x->in_base) {
        memmove(c->rbuf + x->in_base, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend = x->in_base + (c->rend - c->rstart);
        c->rstart = x->in_base;
    }
}

/* Reads more body bytes. WEIR_OK if some arrived, else AGAIN/DONE/error. */
static int fill(weir_h1x *x)
{
    weir_conn *c = x->conn;
    compact(x);
    if (c->rend == c->rcap)
        return WEIR_EX_E_FRAMING; /* a framing line larger than the buffer */
    if (c->error)
        return -c->last_errno;
    if (c->eof)
        return WEIR_DONE;
    if (!c->readable)
        return WEIR_AGAIN;
    int rc = weir__conn_read(c);
    return rc == WEIR_DECLINED ? WEIR_EX_E_FRAMING : rc;
}

static int save_trailers(weir_h1x *x, weir_str t)
{
    if (x->trailers_len + t.len > MAX_TRAILERS)
        return WEIR_EX_E_FRAMING;
    if (!x->trailers) {
        x->trailers = weir__arena_alloc(x->arena, MAX_TRAILERS);
        if (!x->trailers)
            return WEIR_ERR_NOMEM;
    }
    memcpy(x->trailers + x->trailers_len, t.ptr, t.len);
    x->trailers_len += (uint32_t)t.len;
    return WEIR_OK;
}

static int read_body(weir_exchange *ex, weir_str *segs, size_t max, size_t *n, weir_str *trailers)
{
    weir_h1x *x = (weir_h1x *)ex;
    weir_conn *c = x->conn;
    *n = 0;
    if (x->expect_continue) {
        /* The client waits for this before sending its body (RFC 9110
         * 10.1.1); it goes out ahead of anything else on the connection. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        x->expect_continue = false;
        if (!x->in_done && weir__conn_queue(c, cont, sizeof(cont) - 1) == WEIR_OK && c->writable)
            weir__conn_flush(c);
    }
    for (;;) {
        if (x->in_done) {
            *trailers = (weir_str){x->trailers, x->trailers_len};
            return WEIR_DONE;
        }
        if (c->rbuf == NULL) {
            if (weir__conn_need_rbuf(c) < 0)
                return WEIR_ERR_NOMEM;
            c->rstart = c->rend = x->in_base = 0;
        }
        uint32_t avail = c->rend - c->rstart;
        if (avail > 0) {
            const char *p = c->rbuf + c->rstart;
            if (x->in_kind == WEIR_H1_BODY_LENGTH) {
                uint64_t take = avail < x->in_left ? avail : x->in_left;
                segs[0] = (weir_str){p, (size_t)take};
                *n = 1;
                x->in_peek_end = c->rstart + (uint32_t)take;
                x->in_left -= take;
                if (x->in_left == 0)
                    x->in_done = true;
            } else if (x->in_kind == WEIR_H1_BODY_CLOSE) {
                segs[0] = (weir_str){p, avail};
                *n = 1;
                x->in_peek_end = c->rend;
            } else {
                weir_chunk_seg cs[16];
                size_t ncs = 0;
                size_t lim = max < 16 ? max : 16;
                ssize_t used = weir_chunked_decode(&x->dec, p, avail, cs, lim, &ncs);
                if (used < 0)
                    return WEIR_EX_E_FRAMING;
                for (size_t i = 0; i < ncs; i++) {
                    if (cs[i].kind == WEIR_CHUNK_DATA) {
                        segs[(*n)++] = cs[i].bytes;
                    } else {
                        int rc = save_trailers(x, cs[i].bytes);
                        if (rc < 0)
                            return rc;
                    }
                }
                x->in_peek_end = c->rstart + (uint32_t)used;
                if (x->dec.done)
                    x->in_done = true;
                if (*n == 0) {
                    /* Only framing: consume it and go on. */
                    c->rstart = x->in_peek_end;
                    if (!x->in_done && (size_t)used == avail)
                        compact(x);
                    if ((size_t)used == 0 && !x->in_done)
                        goto need_more;
                    continue;
                }
            }
            size_t bytes = 0;
            for (size_t i = 0; i < *n; i++)
                bytes += segs[i].len;
            x->in_total += bytes;
            x->x.bytes_in += bytes;
            if (x->in_limit && x->in_total > x->in_limit)
                return WEIR_EX_E_TOO_LARGE;
            return WEIR_OK;
        }
    need_more:;
        int rc = fill(x);
        if (rc == WEIR_OK)
            continue;
        if (rc == WEIR_DONE) {
            if (x->in_kind == WEIR_H1_BODY_CLOSE) {
                x->in_done = true;
                continue;
            }
            return WEIR_EX_E_CLOSED;
        }
        return rc;
    }
}

static void consume_body(weir_exchange *ex)
{
    weir_h1x *x = (weir_h1x *)ex;
    weir_conn *c = x->conn;
    if (x->in_peek_end > c->rstart)
        c->rstart = x->in_peek_end;
    if (c->rstart == c->rend && !x->in_done)
        c->rstart = c->rend = x->in_base;
}

/* ---- sending ---- */

/* Most strings of a head are a few bytes: copied in at most two moves of
 * a word (overlapping), where memcpy's call costs more than the copy. */
static inline size_t put(char *p, const char *s, size_t len)
{
    if (len > 16) {
        memcpy(p, s, len);
    } else if (len >= 8) {
        memcpy(p, s, 8);
        memcpy(p + len - 8, s + len - 8, 8);
    } else if (len >= 4) {
        memcpy(p, s, 4);
        memcpy(p + len - 4, s + len - 4, 4);
    } else if (len >= 2) {
        memcpy(p, s, 2);
        memcpy(p + len - 2, s + len - 2, 2);
    } else if (len == 1) {
        *p = *s;
    }
    return len;
}

static size_t put_hex(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* True if the field must not be forwarded: hop-by-hop, framing we redo, or
 * nominated by the Connection header. */
/* The lengths of the names skip_field() drops without a Connection field
 * (the hop-by-hop ones, Upgrade, Content-Length): any other is written
 * without a look. */
#define SKIP_LENGTHS                                                                               \
    ((1u << 2) | (1u << 7) | (1u << 10) | (1u << 14) | (1u << 16) | (1u << 17) | (1u << 18) |      \
     (1u << 19))

static bool skip_field(const weir_msg *m, weir_str name, bool has_conn_hdr)
{
    /* An upgrade carries its Upgrade field across (Connection is ours). */
    if (m->upgrade && name.len == 7 && weir_h1_name_is(name, "upgrade"))
        return false;
    if (weir__is_hop_by_hop(name))
        return true;
    if (name.len == 14 && weir_h1_name_is(name, "content-length"))
        return m->body != WEIR_BODY_NONE;
    /* Fields the Connection header names (only when there is one: this
     * loop per field was most of serializing a head). */
    for (uint32_t i = 0; has_conn_hdr && i < m->headers.n; i++) {
        const weir_header *h = &m->headers.v[i];
        if (h->name.len == 10 && weir_h1_name_is(h->name, "connection")) {
            char tmp[64];
            if (name.len >= sizeof(tmp))
                continue;
            memcpy(tmp, name.ptr, name.len);
            tmp[name.len] = '\0';
            if (weir_h1_list_has_token(h->value, tmp))
                return true;
        }
    }
    return false;
}

static int write_head(weir_exchange *ex, const weir_msg *m)
{
    weir_h1x *x = (weir_h1x *)ex;
    bool has_conn_hdr = weir__headers_find(&m->headers, "connection", 0) >= 0;
    /* Size: start line + fields + our framing/connection fields. */
    size_t need = 64 + m->method.len + m->target.len + m->reason.len + 128;
    for (uint32_t i = 0; i < m->headers.n; i++)
        need += m->headers.v[i].name.len + m->headers.v[i].value.len + 4;
    if (need > UINT32_MAX / 2)
        return WEIR_ERR_INVAL;
    char *p = weir__conn_obuf_reserve(x->conn, (uint32_t)need);
    if (!p)
        return WEIR_ERR_NOMEM;
    char *start = p;
    if (x->upstream) {
        p += put(p, m->method.ptr, m->method.len);
        *p++ = ' ';
        p += put(p, m->target.ptr, m->target.len);
        p += put(p, " HTTP/1.1\r\n", 11);
    } else {
        const char *reason = m->reason.len ? NULL : weir__h1_reason(m->status);
        p += put(p, x->out_minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
        p += weir__put_dec(p, (uint64_t)m->status); /* 100..999: always 3 digits */
        *p++ = ' ';
        if (reason)
            p += put(p, reason, strlen(reason));
        else
            p += put(p, m->reason.ptr, m->reason.len);
        p += put(p, "\r\n", 2);
    }
    for (uint32_t i = 0; i < m->headers.n; i++) {
        const weir_header *h = &m->headers.v[i];
        if (has_conn_hdr || (h->name.len < 32 && (SKIP_LENGTHS >> h->name.len & 1))) {
            if (skip_field(m, h->name, has_conn_hdr))
                continue;
        }
        p += put(p, h->name.ptr, h->name.len);
        *p++ = ':';
        *p++ = ' ';
        p += put(p, h->value.ptr, h->value.len);
        p += put(p, "\r\n", 2);
    }
    x->out_chunked = false;
    x->out_no_body = m->body == WEIR_BODY_NONE;
    if (m->close)
        x->out_keep_alive = false;
    if (m->body == WEIR_BODY_KNOWN) {
        p += put(p, "Content-Length: ", 16);
        p += weir__put_dec(p, m->content_length);
        p += put(p, "\r\n", 2);
    } else if (m->body == WEIR_BODY_UNKNOWN) {
        if (x->upstream || x->out_minor >= 1) {
            x->out_chunked = true;
            p += put(p, "Transfer-Encoding: chunked\r\n", 28);
        } else {
            /* HTTP/1.0 client: the body ends when the connection closes. */
            x->out_keep_alive = false;
        }
    }
    if (m->upgrade) {
        p += put(p, "Connection: upgrade\r\n", 21);
    } else if (!x->upstream) {
        if (!x->out_keep_alive)
            p += put(p, "Connection: close\r\n", 19);
        else if (x->out_minor == 0)
            p += put(p, "Connection: keep-alive\r\n", 24);
    }
    p += put(p, "\r\n", 2);
    /* Give back the unused part of the reservation. */
    x->conn->olen -= (uint32_t)(need - (size_t)(p - start));
    x->x.bytes_out += (uint64_t)(p - start);
    return weir__conn_queue(x->conn, start, (size_t)(p - start));
}

static int write_body(weir_exchange *ex, const weir_str *segs, size_t n)
{
    weir_h1x *x = (weir_h1x *)ex;
    weir_conn *c = x->conn;
    if (x->out_no_body)
        return WEIR_OK;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += segs[i].len;
    if (total == 0)
        return WEIR_OK;
    if (weir__conn_queue_room(c) < (int)n + 2) {
        if (c->oq_head == c->oq_n)
            c->oq_head = c->oq_n = 0;
        if (weir__conn_queue_room(c) < (int)n + 2)
            return WEIR_ERR_NOMEM;
    }
    if (x->out_chunked) {
        char *p = weir__conn_obuf_reserve(c, 20);
        if (!p)
            return WEIR_ERR_NOMEM;
        size_t len = put_hex(p, total);
        p[len++] = '\r';
        p[len++] = '\n';
        c->olen -= 20 - (uint32_t)len;
        weir__conn_queue(c, p, (size_t)len);
    }
    for (size_t i = 0; i < n; i++)
        weir__conn_queue(c, segs[i].ptr, segs[i].len);
    if (x->out_chunked)
        weir__conn_queue(c, "\r\n", 2);
    x->out_total += total;
    x->x.bytes_out += total;
    return WEIR_OK;
}

static int write_end(weir_exchange *ex, weir_str trailers)
{
    weir_h1x *x = (weir_h1x *)ex;
    if (!x->out_chunked || x->out_no_body)
        return WEIR_OK;
    int rc = weir__conn_queue(x->conn, "0\r\n", 3);
    if (rc == WEIR_OK && trailers.len)
        rc = weir__conn_queue(x->conn, trailers.ptr, trailers.len);
    if (rc == WEIR_OK)
        rc = weir__conn_queue(x->conn, "\r\n", 2);
    return rc;
}

static int flush(weir_exchange *ex)
{
    weir_h1x *x = (weir_h1x *)ex;
    weir_conn *c = x->conn;
    if (weir__conn_queue_empty(c))
        return WEIR_OK;
    if (c->error)
        return -c->last_errno;
    if (!c->writable)
        return WEIR_AGAIN;
    return weir__conn_flush(c);
}

static int send_file(weir_exchange *ex, int fd, uint64_t *off, uint64_t *len)
{
    weir_h1x *x = (weir_h1x *)ex;
    weir_conn *c = x->conn;
    if (c->ssl || x->out_chunked || x->out_no_body)
        return WEIR_DECLINED;
    int rc = flush(ex); /* the head first */
    if (rc != WEIR_OK)
        return rc;
    while (*len) {
        off_t o = (off_t)*off;
        size_t want = *len > (1u << 30) ? (1u << 30) : (size_t)*len;
        ssize_t n = sendfile(c->io.fd, fd, &o, want);
        if (n > 0) {
            *off += (uint64_t)n;
            *len -= (uint64_t)n;
            x->out_total += (uint64_t)n;
            x->x.bytes_out += (uint64_t)n;
            c->bytes_out += (uint64_t)n;
            continue;
        }
        if (n == 0)
            return -EIO; /* the file is shorter than promised */
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            c->writable = false;
            return WEIR_AGAIN;
        }
        c->error = true;
        c->last_errno = errno;
        return -errno;
    }
    return WEIR_OK;
}

static bool peer_gone(weir_exchange *ex)
{
    weir_h1x *x = (weir_h1x *)ex;
    weir_conn *c = x->conn;
    if (c->eof || c->error)
        return true;
    if (!c->hup)
        return false;
    /* epoll saw a close: confirm it is not just a half-close with a
     * pipelined request still to read. */
    char b;
    ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        c->eof = true;
        return true;
    }
    return false;
}

static void tunnel(weir_exchange *ex)
{
    weir_h1x *x = (weir_h1x *)ex;
    x->in_kind = WEIR_H1_BODY_CLOSE;
    x->in_done = false;
    x->in_limit = 0;
    x->out_chunked = false;
    x->out_no_body = false;
    x->out_keep_alive = false;
}

static const weir_exchange_ops h1_ops = {
    .read_head = read_head,
    .read_body = read_body,
    .consume_body = consume_body,
    .write_head = write_head,
    .write_body = write_body,
    .write_end = write_end,
    .flush = flush,
    .send_file = send_file,
    .peer_gone = peer_gone,
    .tunnel = tunnel,
};

void weir__h1x_init_upstream(weir_h1x *x, weir_conn *conn, weir_arena *arena, uint32_t max_head)
{
    memset(x, 0, sizeof(*x));
    x->x.ops = &h1_ops;
    x->conn = conn;
    x->arena = arena;
    x->upstream = true;
    x->max_head = max_head;
    x->max_headers = 100;
    x->out_minor = 1;
}

void weir__h1x_init_downstream(weir_h1x *x, weir_conn *conn, weir_arena *arena,
                               const weir_h1_framing *f, uint32_t head_len, int minor_version,
                               uint64_t limit)
{
    memset(x, 0, sizeof(*x));
    x->x.ops = &h1_ops;
    x->conn = conn;
    x->arena = arena;
    x->in_kind = f->kind;
    x->in_left = f->content_length;
    x->in_limit = limit;
    x->in_done =
        f->kind == WEIR_H1_BODY_NONE || (f->kind == WEIR_H1_BODY_LENGTH && f->content_length == 0);
    weir_chunked_init(&x->dec);
    x->in_base = head_len;
    conn->rstart = head_len;
    x->x.bytes_in = head_len;
    x->out_minor = minor_version;
    x->out_keep_alive = f->keep_alive;
}
