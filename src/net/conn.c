/*
 * conn.c - buffered non-blocking connection (see conn.h).
 */
#include "net/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/pool.h"
#include "weir/types.h"

static void closed_cb(weir_io *io, uint32_t events) {}

void weir__conn_on_events(weir_conn *c, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hup = true;
}

int weir__conn_init(weir_conn *c, weir_loop *loop, int fd, weir_io_cb cb)
{
    memset(c, 0, sizeof(*c));
    c->io.fd = fd;
    c->io.cb = cb;
    c->loop = loop;
    return weir__io_add(loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
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

void weir__conn_close(weir_conn *c, bool reset)
{
    if (c->io.fd >= 0) {
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
    c->oq_head = c->oq_n = 0;
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

int weir__conn_read(weir_conn *c)
{
    if (c->rend == c->rcap)
        return 0;
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
            return (int)n;
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

int weir__conn_flush(weir_conn *c)
{
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
        size_t left = (size_t)n;
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
    c->oq_head = c->oq_n = 0;
    /* Drained: the scratch buffer can be reused from its start, and an
     * idle connection gives it back. */
    free_obuf(c);
    return WEIR_OK;
}
