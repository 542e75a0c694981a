/*
 * conn.c - buffered non-blocking connection (see conn.h).
 */
#include "net/conn.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/pool.h"
#include "net/tls.h"
#include "weir/types.h"

/* Iovecs at least this long are handed to OpenSSL as they are; shorter
 * ones are gathered into a record-sized buffer first. */
#define TLS_DIRECT_MIN 4096

static void closed_cb(weir_io *io, uint32_t events) {}

void weir__conn_on_events(weir_conn *c, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hup = true;
    /* TLS can need the other direction: a read may have to send (a key
     * update), a write may have to receive. */
    if (c->tls_read_needs_out && (events & EPOLLOUT)) {
        c->tls_read_needs_out = false;
        c->readable = true;
    }
    if (c->tls_write_needs_in && (events & EPOLLIN)) {
        c->tls_write_needs_in = false;
        c->writable = true;
    }
}

void weir__conn_set_tls(weir_conn *c, struct ssl_st *ssl)
{
    c->ssl = ssl;
    SSL_set_fd(ssl, c->io.fd);
}

static __thread char tls_error[256];

const char *weir__conn_tls_error(void)
{
    return tls_error;
}

/* Maps an OpenSSL failure to our convention; records readiness for the
 * WANT cases. `reading` says which direction the call was. */
static int tls_fail(weir_conn *c, int r, bool reading)
{
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (reading) {
            c->readable = false;
        } else {
            c->writable = false;
            c->tls_write_needs_in = true;
        }
        return WEIR_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        if (reading) {
            c->readable = false;
            c->tls_read_needs_out = true;
        } else {
            c->writable = false;
        }
        return WEIR_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return WEIR_DONE;
    default: {
        int err = errno;
        weir__tls_describe(c->ssl, e, tls_error, sizeof(tls_error));
        c->tls_failed = true;
        c->error = true;
        c->last_errno = e == SSL_ERROR_SYSCALL && err ? err : EPROTO;
        return -c->last_errno;
    }
    }
}

int weir__conn_handshake(weir_conn *c)
{
    ERR_clear_error();
    if (!c->tls_start_us)
        c->tls_start_us = weir__loop_now_us(c->loop);
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_ready = true;
        /* From its first step to its end: round trips included. */
        uint64_t took = weir__loop_now_us(c->loop) - c->tls_start_us;
        c->tls_handshake_us = took > UINT32_MAX ? UINT32_MAX : (uint32_t)took;
        weir__tls_observe_handshake(SSL_is_server(c->ssl), took);
        return WEIR_OK;
    }
    int rc = tls_fail(c, r, !SSL_want_write(c->ssl));
    if (rc == WEIR_AGAIN && SSL_want_write(c->ssl)) {
        /* The handshake waits to send: the next EPOLLOUT resumes it. */
        c->tls_read_needs_out = false;
        c->writable = false;
    }
    if (rc == WEIR_DONE) {
        snprintf(tls_error, sizeof(tls_error), "peer closed the connection during the handshake");
        c->error = true;
        c->last_errno = ECONNRESET;
        return -ECONNRESET;
    }
    return rc;
}

void weir__conn_write_now(weir_conn *c, const void *p, size_t len)
{
    if (c->ssl) {
        size_t w;
        ERR_clear_error();
        if (c->tls_ready && !c->tls_failed && SSL_write_ex(c->ssl, p, len, &w) != 1)
            ERR_clear_error();
        return;
    }
    ssize_t n = write(c->io.fd, p, len);
    (void)n;
}

void weir__conn_shutdown(weir_conn *c)
{
    if (c->ssl && c->tls_ready && !c->tls_failed) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* best effort: sends our close_notify if it can */
        ERR_clear_error();
    }
    shutdown(c->io.fd, SHUT_WR);
}

int weir__conn_discard(weir_conn *c)
{
    char sink[4096];
    for (;;) {
        if (c->ssl) {
            size_t n;
            ERR_clear_error();
            if (SSL_read_ex(c->ssl, sink, sizeof(sink), &n) == 1)
                continue;
            int rc = tls_fail(c, 0, true);
            return rc == WEIR_AGAIN ? WEIR_AGAIN : WEIR_DONE;
        }
        ssize_t n = read(c->io.fd, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            c->readable = false;
            return WEIR_AGAIN;
        }
        return WEIR_DONE;
    }
}

int weir__conn_init(weir_conn *c, weir_loop *loop, int fd, weir_io_cb cb)
{
    memset(c, 0, sizeof(*c));
    c->io.fd = fd;
    c->io.cb = cb;
    c->loop = loop;
    return weir__io_add(loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
}

static weir_pool_class oq_class = -1;

__attribute__((constructor)) static void register_oq_class(void)
{
    oq_class = weir__pool_register_raw("oq", WEIR_OQ_MAX * sizeof(struct iovec), 1024);
}

static void free_oq(weir_conn *c)
{
    weir__pool_put(oq_class, c->oq);
    c->oq = NULL;
    c->oq_head = c->oq_n = 0;
}

static void free_rbuf(weir_conn *c)
{
    if (!c->rbuf)
        return;
    if (c->rcap == WEIR_BUF_SIZE)
        weir__buf_put(c->rbuf);
    else
        free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = c->rstart = c->rend = 0;
}

static void free_obuf(weir_conn *c)
{
    if (!c->obuf)
        return;
    if (c->ocap == WEIR_BUF_SIZE)
        weir__buf_put(c->obuf);
    else
        free(c->obuf);
    c->obuf = NULL;
    c->ocap = c->olen = 0;
}

static void free_tls(weir_conn *c)
{
    if (c->tls_wbuf) {
        weir__buf_put(c->tls_wbuf);
        c->tls_wbuf = NULL;
    }
    c->tls_wlen = c->tls_woff = 0;
    if (c->ssl) {
        /* A peer that closed without close_notify (or a close before ours)
         * must not cost the session: OpenSSL drops sessions of connections
         * that did not shut down, from its cache and for resumption. */
        if (c->tls_ready && !c->tls_failed)
            SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
}

void weir__conn_close(weir_conn *c, bool reset)
{
    free_tls(c);
    if (c->io.fd >= 0) {
        /* close() takes an unshared socket out of the epoll set: no
         * EPOLL_CTL_DEL, one syscall less per connection. */
        if (c->shared)
            weir__io_del(c->loop, &c->io);
        if (reset) {
            struct linger lg = {1, 0};
            setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(c->io.fd);
        c->io.fd = -1;
    }
    c->io.cb = closed_cb;
    free_rbuf(c);
    free_obuf(c);
    free_oq(c);
}

int weir__conn_detach_fd(weir_conn *c)
{
    int fd = c->io.fd;
    if (fd >= 0)
        weir__io_del(c->loop, &c->io);
    c->io.fd = -1;
    c->io.cb = closed_cb;
    free_tls(c);
    free_rbuf(c);
    free_obuf(c);
    free_oq(c);
    return fd;
}

int weir__conn_need_rbuf(weir_conn *c)
{
    if (c->rbuf)
        return WEIR_OK;
    c->rbuf = weir__buf_get();
    if (!c->rbuf)
        return WEIR_ERR_NOMEM;
    c->rcap = WEIR_BUF_SIZE;
    c->rstart = c->rend = 0;
    return WEIR_OK;
}

int weir__conn_grow_rbuf(weir_conn *c, uint32_t cap)
{
    if (c->rbuf && c->rcap >= cap)
        return WEIR_OK;
    char *nb = malloc(cap);
    if (!nb)
        return WEIR_ERR_NOMEM;
    if (c->rbuf) {
        memcpy(nb, c->rbuf, c->rend);
        if (c->rcap == WEIR_BUF_SIZE)
            weir__buf_put(c->rbuf);
        else
            free(c->rbuf);
    }
    c->rbuf = nb;
    c->rcap = cap;
    return WEIR_OK;
}

void weir__conn_detach_rbuf(weir_conn *c, char **buf, uint32_t *cap)
{
    *buf = c->rbuf;
    *cap = c->rcap;
    c->rbuf = NULL;
    c->rcap = c->rstart = c->rend = 0;
}

void weir__rbuf_free(char *buf, uint32_t cap)
{
    if (!buf)
        return;
    if (cap == WEIR_BUF_SIZE)
        weir__buf_put(buf);
    else
        free(buf);
}

void weir__conn_release_rbuf(weir_conn *c)
{
    if (c->rbuf && c->rstart == c->rend)
        free_rbuf(c);
}

static int tls_read(weir_conn *c)
{
    size_t n;
    ERR_clear_error();
    if (SSL_read_ex(c->ssl, c->rbuf + c->rend, c->rcap - c->rend, &n) == 1) {
        c->rend += (uint32_t)n;
        c->bytes_in += n;
        return WEIR_OK;
    }
    int rc = tls_fail(c, 0, true);
    if (rc == WEIR_DONE) {
        c->eof = true;
        c->readable = false;
    } else if (rc < 0) {
        c->readable = false;
    }
    return rc;
}

int weir__conn_read(weir_conn *c)
{
    if (c->rend == c->rcap)
        return WEIR_DECLINED;
    if (c->ssl)
        return tls_read(c);
    for (;;) {
        ssize_t n = read(c->io.fd, c->rbuf + c->rend, c->rcap - c->rend);
        if (n > 0) {
            /* A short read drained the socket: the next data or close comes
             * with a new edge, so skip the read that would say EAGAIN. A
             * close already reported stays visible through `hup`. */
            if ((size_t)n < c->rcap - c->rend && !c->hup)
                c->readable = false;
            c->rend += (uint32_t)n;
            c->bytes_in += (uint64_t)n;
            return WEIR_OK;
        }
        if (n == 0) {
            c->eof = true;
            c->readable = false;
            return WEIR_DONE;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            c->readable = false;
            return WEIR_AGAIN;
        }
        c->error = true;
        c->last_errno = errno;
        c->readable = false;
        return -errno;
    }
}

char *weir__conn_obuf_reserve(weir_conn *c, uint32_t len)
{
    if (!c->obuf) {
        if (len <= WEIR_BUF_SIZE) {
            c->obuf = weir__buf_get();
            c->ocap = WEIR_BUF_SIZE;
        } else {
            c->obuf = malloc(len);
            c->ocap = len;
        }
        if (!c->obuf)
            return NULL;
        c->olen = 0;
    }
    if (c->ocap - c->olen < len) {
        /* Queued iovecs point into obuf, so it cannot move while they are
         * pending. Heads are serialized before anything else is queued, so
         * growth happens only on an empty queue in practice. */
        if (!weir__conn_queue_empty(c))
            return NULL;
        uint32_t cap = c->olen + len;
        char *nb = malloc(cap);
        if (!nb)
            return NULL;
        memcpy(nb, c->obuf, c->olen);
        if (c->ocap == WEIR_BUF_SIZE)
            weir__buf_put(c->obuf);
        else
            free(c->obuf);
        c->obuf = nb;
        c->ocap = cap;
    }
    char *p = c->obuf + c->olen;
    c->olen += len;
    return p;
}

int weir__conn_queue(weir_conn *c, const void *ptr, size_t len)
{
    if (len == 0)
        return WEIR_OK;
    if (!c->oq && !(c->oq = weir__pool_get(oq_class)))
        return WEIR_ERR_NOMEM;
    if (c->oq_n == WEIR_OQ_MAX) {
        if (c->oq_head == 0)
            return WEIR_ERR_NOMEM;
        memmove(c->oq, c->oq + c->oq_head, (size_t)(c->oq_n - c->oq_head) * sizeof(c->oq[0]));
        c->oq_n -= c->oq_head;
        c->oq_head = 0;
    }
    c->oq[c->oq_n++] = (struct iovec){(void *)ptr, len};
    return WEIR_OK;
}

/* Drops n bytes from the front of the queue. */
static void queue_advance(weir_conn *c, size_t left)
{
    while (left > 0) {
        struct iovec *v = &c->oq[c->oq_head];
        if (left >= v->iov_len) {
            left -= v->iov_len;
            c->oq_head++;
        } else {
            v->iov_base = (char *)v->iov_base + left;
            v->iov_len -= left;
            left = 0;
        }
    }
}

/*
 * The TLS flush. A large iovec goes to SSL_write as it is; small ones are
 * first copied together into tls_wbuf so that a head and the start of a
 * body make one record, not several. After WANT_WRITE OpenSSL needs the
 * same bytes again: the staged buffer stays as it is, and a direct iovec
 * is only advanced by what was written.
 */
static int tls_flush(weir_conn *c)
{
    for (;;) {
        const char *p;
        size_t len;
        bool staged = c->tls_woff < c->tls_wlen;
        if (!staged) {
            if (c->oq_head == c->oq_n)
                break;
            struct iovec *v = &c->oq[c->oq_head];
            if (v->iov_len >= TLS_DIRECT_MIN) {
                p = v->iov_base;
                len = v->iov_len;
            } else {
                if (!c->tls_wbuf && !(c->tls_wbuf = weir__buf_get()))
                    return WEIR_ERR_NOMEM;
                uint32_t n = 0;
                while (c->oq_head < c->oq_n && n < WEIR_BUF_SIZE) {
                    struct iovec *q = &c->oq[c->oq_head];
                    size_t take = q->iov_len < WEIR_BUF_SIZE - n ? q->iov_len : WEIR_BUF_SIZE - n;
                    memcpy(c->tls_wbuf + n, q->iov_base, take);
                    n += (uint32_t)take;
                    queue_advance(c, take);
                }
                c->tls_woff = 0;
                c->tls_wlen = n;
                staged = true;
            }
        }
        if (staged) {
            p = c->tls_wbuf + c->tls_woff;
            len = c->tls_wlen - c->tls_woff;
        }
        size_t w;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, p, len, &w) != 1) {
            int rc = tls_fail(c, 0, false);
            return rc == WEIR_DONE ? -EPIPE : rc;
        }
        c->bytes_out += w;
        if (staged) {
            c->tls_woff += (uint32_t)w;
            if (c->tls_woff == c->tls_wlen)
                c->tls_woff = c->tls_wlen = 0;
        } else {
            queue_advance(c, w);
        }
    }
    if (c->tls_wbuf) {
        weir__buf_put(c->tls_wbuf);
        c->tls_wbuf = NULL;
    }
    free_oq(c);
    free_obuf(c);
    return WEIR_OK;
}

int weir__conn_flush(weir_conn *c)
{
    if (c->ssl)
        return tls_flush(c);
    while (c->oq_head < c->oq_n) {
        ssize_t n = writev(c->io.fd, c->oq + c->oq_head, c->oq_n - c->oq_head);
        if (n < 0) {
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
        c->bytes_out += (uint64_t)n;
        queue_advance(c, (size_t)n);
    }
    /* Drained: the scratch buffer can be reused from its start, and an
     * idle connection gives it and the queue back. */
    free_oq(c);
    free_obuf(c);
    return WEIR_OK;
}
