/*
 * h2_common.c - see h2_common.h.
 */
#include "http/h2_common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/ascii.h"
#include "core/pool.h"
#include "http/h1_parse.h"
#include "http/msg.h"

size_t weir__h2_lower(char *buf, weir_str name)
{
    /* Words at a time (core/ascii.h), the last one overlapping the ones
     * before; stores stay inside buf[0, len) (buf may be name.ptr). */
    size_t len = name.len;
    const char *s = name.ptr;
    if (len >= 8) {
        uint64_t last = weir__lower64(weir__load64(s + len - 8));
        for (size_t i = 0; i + 8 < len; i += 8) {
            uint64_t x = weir__lower64(weir__load64(s + i));
            memcpy(buf + i, &x, 8);
        }
        memcpy(buf + len - 8, &last, 8);
    } else if (len >= 4) {
        uint64_t x = weir__lower64(weir__load_short(s, len));
        uint32_t lo = (uint32_t)x, hi = (uint32_t)(x >> ((len - 4) * 8));
        memcpy(buf, &lo, 4);
        memcpy(buf + len - 4, &hi, 4);
    } else {
        for (size_t i = 0; i < len; i++)
            buf[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 32) : s[i];
    }
    return len;
}

bool weir__h2_skip_field(weir_str name, weir_str value, bool keep_te)
{
    if (name.len == 0)
        return true;
    if (name.len == 2 && weir_h1_name_is(name, "te"))
        return !(keep_te && value.len == 8 && strncasecmp(value.ptr, "trailers", 8) == 0);
    return weir__is_hop_by_hop(name) || (name.len == 4 && weir_h1_name_is(name, "host"));
}

/* A stream's receive buffer (one window) comes from the worker's pool:
 * every stream with a body needs one, for as long as the body lasts. */
static weir_pool_class inbuf_class;

__attribute__((constructor)) static void register_inbuf_class(void)
{
    inbuf_class = weir__pool_register_raw("h2in", WEIR_H2_WINDOW, 16);
}

int weir__h2_in_add(weir_h2_inbuf *in, const uint8_t *data, size_t len)
{
    if (!in->buf && !(in->buf = weir__pool_get(inbuf_class)))
        return WEIR_ERR_NOMEM;
    if (in->len + len > WEIR_H2_WINDOW)
        return WEIR_ERR_INVAL;
    memcpy(in->buf + in->len, data, len);
    in->len += (uint32_t)len;
    in->total += len;
    return WEIR_OK;
}

int weir__h2_in_trailer(weir_h2_inbuf *in, const uint8_t *name, size_t nlen, const uint8_t *value,
                        size_t vlen, uint32_t max)
{
    size_t add = nlen + vlen + 4;
    if (in->trailers_len + add > max)
        return WEIR_ERR_INVAL;
    char *nt = realloc(in->trailers, in->trailers_len + add);
    if (!nt)
        return WEIR_ERR_NOMEM;
    in->trailers = nt;
    char *p = nt + in->trailers_len;
    memcpy(p, name, nlen);
    memcpy(p + nlen, ": ", 2);
    memcpy(p + nlen + 2, value, vlen);
    memcpy(p + nlen + 2 + vlen, "\r\n", 2);
    in->trailers_len += (uint32_t)add;
    return WEIR_OK;
}

uint32_t weir__h2_in_consume(weir_h2_inbuf *in)
{
    uint32_t n = in->handed;
    if (n) {
        memmove(in->buf, in->buf + n, in->len - n);
        in->len -= n;
        in->handed = 0;
    }
    return n;
}

void weir__h2_in_free(weir_h2_inbuf *in)
{
    weir__pool_put(inbuf_class, in->buf);
    free(in->trailers);
    in->buf = in->trailers = NULL;
}

int weir__h2_out_add(weir_h2_outq *q, const weir_str *segs, size_t n, uint64_t *bytes)
{
    if (q->head > 0 && q->head == q->n)
        q->head = q->n = 0;
    if (WEIR_H2_OUT_SEGS - q->n < (int)n && q->head > 0) {
        memmove(q->seg, q->seg + q->head, (size_t)(q->n - q->head) * sizeof(q->seg[0]));
        q->n -= q->head;
        q->head = 0;
    }
    if (WEIR_H2_OUT_SEGS - q->n < (int)n)
        return WEIR_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (segs[i].len == 0)
            continue;
        q->seg[q->n++] = segs[i];
        *bytes += segs[i].len;
    }
    return WEIR_OK;
}

int weir__h2_out_end(weir_h2_outq *q, weir_str raw)
{
    q->end = true;
    size_t lines = 0;
    for (size_t i = 0; i < raw.len; i++)
        lines += raw.ptr[i] == '\n';
    if (lines == 0)
        return WEIR_OK;
    q->trailers = calloc(lines, sizeof(*q->trailers));
    q->trailer_mem = malloc(raw.len);
    if (!q->trailers || !q->trailer_mem)
        return WEIR_ERR_NOMEM;
    memcpy(q->trailer_mem, raw.ptr, raw.len);
    char *p = q->trailer_mem, *end = p + raw.len;
    while (p < end) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        char *colon = memchr(p, ':', (size_t)(eol - p));
        char *line_end = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        if (colon && colon > p) {
            char *v = colon + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            weir_str name = {p, (size_t)(colon - p)};
            weir__h2_lower(p, name);
            weir_str value = {v, (size_t)(line_end - v)};
            if (!weir__h2_skip_field(name, value, false))
                q->trailers[q->n_trailers++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)v, name.len,
                                                            value.len, NGHTTP2_NV_FLAG_NONE};
        }
        p = eol + 1;
    }
    return WEIR_OK;
}

bool weir__h2_out_pending(const weir_h2_outq *q)
{
    return q->head < q->n || (q->end && !q->eof_sent);
}

ssize_t weir__h2_out_read(weir_h2_outq *q, nghttp2_session *ng, int32_t id, uint8_t *buf,
                          size_t len, uint32_t *flags, bool *moved)
{
    size_t n = 0;
    while (n < len && q->head < q->n) {
        weir_str *seg = &q->seg[q->head];
        size_t take = seg->len < len - n ? seg->len : len - n;
        memcpy(buf + n, seg->ptr, take);
        n += take;
        seg->ptr += take;
        seg->len -= take;
        if (seg->len == 0)
            q->head++;
    }
    *moved = n > 0;
    if (q->sized) {
        q->left -= n < q->left ? n : q->left;
        if (q->left == 0)
            q->end = true; /* the last byte: end now, even at a zero window */
    }
    if (q->head == q->n && q->end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (q->n_trailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_submit_trailer(ng, id, q->trailers, q->n_trailers);
        }
        q->eof_sent = true;
        *moved = true;
        return (ssize_t)n;
    }
    if (n == 0) {
        q->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

void weir__h2_out_free(weir_h2_outq *q)
{
    free(q->trailers);
    free(q->trailer_mem);
    q->trailers = NULL;
    q->trailer_mem = NULL;
}

bool weir__h2_nominated(const weir_headers *h, weir_str name)
{
    for (long i = weir__headers_find(h, "connection", 0); i >= 0;
         i = weir__headers_find(h, "connection", (size_t)i + 1)) {
        weir_str v = h->v[i].value;
        size_t k = 0;
        while (k < v.len) {
            while (k < v.len && (v.ptr[k] == ' ' || v.ptr[k] == '\t' || v.ptr[k] == ','))
                k++;
            size_t start = k;
            while (k < v.len && v.ptr[k] != ',' && v.ptr[k] != ' ' && v.ptr[k] != '\t')
                k++;
            if (k - start == name.len && name.len &&
                strncasecmp(v.ptr + start, name.ptr, name.len) == 0)
                return true;
        }
    }
    return false;
}

bool weir__h2_gather(nghttp2_session *ng, weir_conn *conn, weir_h2_out *o)
{
    /* Only while nothing of o->buf is queued on the connection: growing
     * it would move bytes the queue points at. */
    if (o->len > 0 && !weir__conn_queue_empty(conn))
        return true;
    while (o->len < 64 * 1024) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(ng, &data);
        if (n < 0)
            return false;
        if (n == 0)
            break;
        if (o->len + (size_t)n > o->cap) {
            size_t cap = o->cap ? o->cap : 16384;
            while (cap < o->len + (size_t)n)
                cap *= 2;
            char *nb = realloc(o->buf, cap);
            if (!nb)
                return false;
            o->buf = nb;
            o->cap = cap;
        }
        memcpy(o->buf + o->len, data, (size_t)n);
        o->len += (size_t)n;
    }
    return true;
}

bool weir__h2_send(nghttp2_session *ng, weir_conn *conn, weir_h2_out *o)
{
    for (;;) {
        if (o->len > 0) {
            /* The queue points into o->buf, which must not move until the
             * write is done. */
            if (weir__conn_queue_empty(conn) && weir__conn_queue(conn, o->buf, o->len) < 0)
                return false;
            if (!conn->writable)
                return true;
            int rc = weir__conn_flush(conn);
            if (rc == WEIR_AGAIN)
                return true;
            if (rc < 0)
                return false;
            o->len = 0;
        }
        if (!weir__h2_gather(ng, conn, o))
            return false;
        if (o->len == 0)
            return true;
    }
}

int weir__h2_recv(nghttp2_session *ng, weir_conn *conn)
{
    int result = WEIR_OK;
    for (int rounds = 0; conn->readable && rounds < 16; rounds++) {
        if (weir__conn_need_rbuf(conn) < 0)
            return WEIR_DONE;
        conn->rstart = conn->rend = 0;
        int rc = weir__conn_read(conn);
        if (rc == WEIR_AGAIN || rc == WEIR_DECLINED)
            break;
        if (rc != WEIR_OK) /* WEIR_DONE (EOF) or an error */
            return WEIR_DONE;
        ssize_t used = nghttp2_session_mem_recv(ng, (const uint8_t *)conn->rbuf, conn->rend);
        conn->rstart = conn->rend = 0;
        if (used < 0) {
            result = (int)used;
            break;
        }
    }
    weir__conn_release_rbuf(conn);
    return result;
}

int weir__h2_in_read(weir_h2_inbuf *in, bool end, weir_str *segs, size_t *n, weir_str *trailers)
{
    *n = 0;
    if (in->len > 0) {
        segs[0] = (weir_str){in->buf, in->len};
        in->handed = in->len;
        *n = 1;
        return WEIR_OK;
    }
    if (end) {
        *trailers = (weir_str){in->trailers ? in->trailers : "", in->trailers_len};
        return WEIR_DONE;
    }
    return WEIR_AGAIN;
}

static void resume(weir_h2_outq *q, nghttp2_session *ng, int32_t id)
{
    if (q->deferred && id > 0) {
        q->deferred = false;
        nghttp2_session_resume_data(ng, id);
    }
}

int weir__h2_out_write(weir_h2_outq *q, nghttp2_session *ng, int32_t id, const weir_str *segs,
                       size_t n, uint64_t *bytes)
{
    int rc = weir__h2_out_add(q, segs, n, bytes);
    if (rc == WEIR_OK)
        resume(q, ng, id);
    return rc;
}

int weir__h2_out_finish(weir_h2_outq *q, nghttp2_session *ng, int32_t id, weir_str trailers)
{
    if (q->end)
        return WEIR_OK;
    if (weir__h2_out_end(q, trailers) < 0)
        return WEIR_ERR_NOMEM;
    resume(q, ng, id);
    return WEIR_OK;
}

nghttp2_nv *weir__h2_nv_room(weir_arena *a, const weir_headers *h, size_t extra, char **names)
{
    size_t bytes = 1;
    for (uint32_t i = 0; i < h->n; i++)
        bytes += h->v[i].name.len;
    nghttp2_nv *nv = weir__arena_alloc(a, (h->n + extra) * sizeof(*nv));
    *names = nv ? weir__arena_alloc(a, bytes) : NULL;
    return *names ? nv : NULL;
}
