/*
 * session_gen.c - the body of a response weir generates, as a source the
 * response pump reads like an upstream: a copied body
 * (weir_session_respond), an application's producer
 * (weir_session_respond_stream) or a file (weir_session_respond_file).
 * So response_body_filter (compression, sub_filter) and the client side's
 * back-pressure and flow control work the same for them as for proxied
 * bodies: one buffer per response, filled only when the client has taken
 * the previous piece.
 *
 * A file larger than one buffer on a plain HTTP/1.1 connection with no
 * filter at work skips the pump: sendfile(2) moves it from the page cache
 * (weir__gen_sendfile), as nginx's sendfile on. A smaller one is read and
 * written with its head in one writev.
 *
 * Owner: the session; loop thread only.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/pool.h"
#include "proxy/session-t.h"

static size_t chunk_of(const gen_source *g)
{
    return g->chunk ? g->chunk : WEIR_BUF_SIZE;
}

static bool need_buf(gen_source *g)
{
    if (g->buf)
        return true;
    g->buf = chunk_of(g) == WEIR_BUF_SIZE ? weir__buf_get() : malloc(chunk_of(g));
    return g->buf != NULL;
}

static int gen_read_body(weir_exchange *x, weir_str *segs, size_t max, size_t *n,
                         weir_str *trailers)
{
    gen_source *g = (gen_source *)x;
    weir_session *s = g->s;
    (void)max;
    *trailers = WEIR_STR_NULL;
    if (g->have) { /* handed out, not consumed yet: the same again */
        segs[0] = (weir_str){g->buf, g->have};
        *n = 1;
        return WEIR_OK;
    }
    switch (g->kind) {
    case GEN_MEMORY:
        if (g->given || !s->gen_body.len)
            break;
        g->given = true;
        segs[0] = s->gen_body;
        *n = 1;
        return WEIR_OK;
    case GEN_FILE: {
        if (!g->left)
            break;
        if (!need_buf(g))
            return WEIR_ERR_NOMEM;
        size_t want = g->left < chunk_of(g) ? (size_t)g->left : chunk_of(g);
        ssize_t r;
        do
            r = pread(g->fd, g->buf, want, (off_t)g->off);
        while (r < 0 && errno == EINTR);
        if (r <= 0)
            return r == 0 ? -EIO : -errno; /* shorter than promised, or unreadable */
        g->off += (uint64_t)r;
        g->left -= (uint64_t)r;
        g->have = (uint32_t)r;
        segs[0] = (weir_str){g->buf, g->have};
        *n = 1;
        return WEIR_OK;
    }
    case GEN_STREAM:
        while (!g->end) {
            if (!need_buf(g))
                return WEIR_ERR_NOMEM;
            size_t len = 0;
            g->waiting = false;
            int rc = g->prod.produce(s, g->prod.ctx, g->buf, chunk_of(g), &len);
            if (rc < 0)
                return rc;
            if (rc == WEIR_AGAIN) {
                g->waiting = true;
                return WEIR_AGAIN;
            }
            if (len > chunk_of(g) || (rc == WEIR_OK && len == 0))
                return WEIR_ERR_INVAL; /* (nothing and more to come: it would spin) */
            g->produced += len;
            if (g->prod.length >= 0 && g->produced > (uint64_t)g->prod.length)
                return WEIR_ERR_INVAL; /* more than its Content-Length */
            if (rc == WEIR_DONE) {
                g->end = true;
                if (g->prod.length >= 0 && g->produced != (uint64_t)g->prod.length)
                    return WEIR_ERR_INVAL; /* less: the client would wait forever */
            }
            if (len) {
                g->have = (uint32_t)len;
                segs[0] = (weir_str){g->buf, g->have};
                *n = 1;
                return WEIR_OK;
            }
        }
        break;
    case GEN_NONE:
        break;
    }
    g->complete = true;
    return WEIR_DONE;
}

static void gen_consume_body(weir_exchange *x)
{
    ((gen_source *)x)->have = 0;
}

static const weir_exchange_ops gen_ops = {
    .read_body = gen_read_body,
    .consume_body = gen_consume_body,
};

void weir__gen_start(weir_session *s)
{
    s->gen.x.ops = &gen_ops;
    s->gen.s = s;
    s->resp_pump = (pump){.src = &s->gen.x, .dst = s->down};
}

int weir__gen_sendfile(weir_session *s)
{
    gen_source *g = &s->gen;
    const weir_exchange_ops *d = s->down->ops;
    if (g->kind != GEN_FILE || g->no_sendfile || !d->send_file || s->resp_pump.n_avail ||
        (s->svc->ops->response_body_filter && !s->no_resp_body_filter))
        return WEIR_DECLINED;
    /* A file that fits one buffer is read and goes out with the head in
     * one write (one packet), where sendfile would send the head alone
     * first: on small files that second segment is most of the cost. */
    if (g->left <= chunk_of(g)) {
        g->no_sendfile = true;
        return WEIR_DECLINED;
    }
    int rc = d->send_file(s->down, g->fd, &g->off, &g->left);
    if (rc == WEIR_DECLINED) {
        g->no_sendfile = true;
        return WEIR_DECLINED;
    }
    if (rc == WEIR_OK) {
        d->write_end(s->down, WEIR_STR_NULL);
        g->complete = true;
        s->resp_pump.done = true;
        return WEIR_DONE;
    }
    if (rc == WEIR_AGAIN)
        s->resp_pump.queued = true; /* for the send timeout */
    if (rc < 0) {
        s->resp_pump.err = rc;
        s->resp_pump.err_src = rc == -EIO;
    }
    return rc;
}

void weir__gen_release(weir_session *s)
{
    gen_source *g = &s->gen;
    if (g->kind == GEN_STREAM && g->prod.done)
        g->prod.done(s, g->prod.ctx, g->complete);
    if (g->kind == GEN_FILE)
        close(g->fd);
    if (g->buf) {
        if (chunk_of(g) == WEIR_BUF_SIZE)
            weir__buf_put(g->buf);
        else
            free(g->buf);
    }
    uint32_t chunk = g->chunk;
    *g = (gen_source){.chunk = chunk};
}

/* ---- the public calls ---- */

int weir_session_set_body_chunk(weir_session *s, size_t bytes)
{
    if (bytes < 1024 || bytes > 1048576 || s->gen.buf)
        return WEIR_ERR_INVAL;
    s->gen.chunk = (uint32_t)bytes;
    return WEIR_OK;
}

void weir_session_body_ready(weir_session *s)
{
    if (s->gen.kind == GEN_STREAM && s->gen.waiting && s->state == SS_RESP_BODY) {
        s->gen.waiting = false;
        weir__session_run(s);
    }
}

int weir_session_respond_stream(weir_session *s, int status, const weir_header *headers,
                                size_t n_headers, const weir_body_producer *producer)
{
    if (!producer || !producer->produce || status < 100 || status > 999 || s->resp_started) {
        if (producer && producer->done)
            producer->done(s, producer->ctx, false);
        return WEIR_ERR_INVAL;
    }
    /* Replaces (releases) an earlier generated response's source. */
    int rc = weir__session_set_generated_head(s, status, headers, n_headers,
                                              producer->length < 0 ? -1 : producer->length);
    /* Kept even without a body (HEAD): done runs when the session ends. */
    s->gen.kind = GEN_STREAM;
    s->gen.prod = *producer;
    if (rc < 0)
        weir__gen_release(s);
    return rc;
}

int weir_session_respond_file(weir_session *s, int status, const weir_header *headers,
                              size_t n_headers, int fd, uint64_t offset, uint64_t length)
{
    if (fd < 0)
        return WEIR_ERR_INVAL;
    if (status < 100 || status > 999 || length > INT64_MAX || s->resp_started) {
        close(fd);
        return WEIR_ERR_INVAL;
    }
    int rc = weir__session_set_generated_head(s, status, headers, n_headers, (int64_t)length);
    s->gen.kind = GEN_FILE;
    s->gen.fd = fd;
    s->gen.off = offset;
    s->gen.left = s->resp.body == WEIR_BODY_KNOWN ? length : 0;
    if (rc < 0)
        weir__gen_release(s);
    return rc;
}
