/*
 * conn.h - a non-blocking TCP connection with a read buffer and an output
 * queue, registered edge-triggered on one loop.
 *
 * Readiness is remembered in flags (`readable`, `writable`) because with
 * edge-triggered epoll a socket we chose not to read (back-pressure) will
 * not be reported again: the flag stays set until a read/write returns
 * EAGAIN.
 *
 * The read buffer comes from the 16 KiB pool when needed and goes back when
 * empty (weir__conn_release_rbuf), so an idle connection holds none. It may
 * be replaced by a larger malloc'd one for a big message head.
 *
 * The output queue holds iovecs by reference: the memory they point to
 * must stay valid until the queue drains. `obuf` is the connection's own
 * scratch buffer for serialized heads and chunk framing.
 *
 * Owner: the object embedding it; loop thread only.
 */
#ifndef WEIR_NET_CONN_H
#define WEIR_NET_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/loop.h"

#define WEIR_OQ_MAX 16

typedef struct weir_conn {
    weir_io io;
    weir_loop *loop;
    bool readable;
    bool writable;
    bool eof; /* the peer closed its side (read returned 0) */
    bool hup; /* epoll reported EPOLLRDHUP/EPOLLHUP: a close is pending */
    /* Its socket is also another descriptor's (a pooled connection one
     * worker dup()ed from another; both sides are marked): its close must
     * take it out of the epoll set, which close() alone does only once no
     * descriptor holds the socket. */
    bool shared;
    bool error;     /* a fatal socket error happened */
    int last_errno; /* errno of that error */

    char *rbuf; /* NULL when idle */
    uint32_t rcap;
    uint32_t rstart; /* first unconsumed byte */
    uint32_t rend;   /* end of data */

    /* WEIR_OQ_MAX iovecs while something is queued, NULL once the queue
     * drains: an idle connection holds no queue. */
    struct iovec *oq;
    int oq_head, oq_n; /* pending iovecs are oq[oq_head .. oq_n) */
    char *obuf;        /* scratch for heads/framing; NULL when idle */
    uint32_t olen, ocap;

    uint64_t bytes_in, bytes_out;

    /* TLS (NULL = plain TCP). Reads and writes go through OpenSSL; writes
     * of small iovecs are gathered in tls_wbuf to make full records. */
    struct ssl_st *ssl;
    char *tls_wbuf;
    uint32_t tls_wlen, tls_woff; /* staged bytes tls_wbuf[tls_woff .. tls_wlen) */
    bool tls_ready;              /* handshake done */
    uint64_t tls_start_us;       /* the handshake's first step (loop clock); 0: not yet */
    uint32_t tls_handshake_us;   /* how long it took, once done */
    bool tls_handshake_told;     /* a request on the connection took it (its trace) */
    bool tls_failed;             /* a fatal TLS error: no close_notify */
    bool tls_read_needs_out;     /* a read wants the socket writable */
    bool tls_write_needs_in;     /* a write wants the socket readable */
} weir_conn;

/* Records readiness from epoll event bits. */
void weir__conn_on_events(weir_conn *c, uint32_t events);

/* Sets up c for fd on loop and registers it (EPOLLIN|EPOLLOUT|EPOLLRDHUP).
 * Returns 0 or -errno. */
int weir__conn_init(weir_conn *c, weir_loop *loop, int fd, weir_io_cb cb);
/* Runs TLS on c from now on with ssl (c takes it over). */
void weir__conn_set_tls(weir_conn *c, struct ssl_st *ssl);
/* Advances the TLS handshake: WEIR_OK (done), WEIR_AGAIN, or a negative
 * error (-EPROTO, -ECONNRESET...) with the reason in weir__conn_tls_error(). */
int weir__conn_handshake(weir_conn *c);
/* Why the last handshake failed (per thread). */
const char *weir__conn_tls_error(void);
/* Writes bytes now, best effort, bypassing the queue (canned answers on a
 * connection about to close). */
void weir__conn_write_now(weir_conn *c, const void *p, size_t len);
/* Ends our sending side: TLS close_notify, then a TCP FIN. */
void weir__conn_shutdown(weir_conn *c);
/* Reads and drops whatever arrives: WEIR_AGAIN, or WEIR_DONE at EOF or
 * on an error. */
int weir__conn_discard(weir_conn *c);

/* Deregisters and closes the socket, releases the buffers; the io callback
 * becomes a no-op so a pending event for it in this loop round is harmless.
 * `reset` sends a TCP RST instead of FIN (SO_LINGER 0). */
void weir__conn_close(weir_conn *c, bool reset);

/* Like weir__conn_close without closing the socket: deregistered and
 * returned, for another owner to take over (what is buffered is lost:
 * call it before reading). */
int weir__conn_detach_fd(weir_conn *c);

/* Makes sure an rbuf exists; returns WEIR_ERR_NOMEM on failure. */
int weir__conn_need_rbuf(weir_conn *c);
/* Grows rbuf to at least `cap` bytes (keeps the data). */
int weir__conn_grow_rbuf(weir_conn *c, uint32_t cap);
/* Gives an empty rbuf back to the pool. */
void weir__conn_release_rbuf(weir_conn *c);
/* Takes the read buffer out of c (which is left without one), for a caller
 * whose slices into it must outlive c's use of it; free it with
 * weir__rbuf_free(). */
void weir__conn_detach_rbuf(weir_conn *c, char **buf, uint32_t *cap);
void weir__rbuf_free(char *buf, uint32_t cap);

/*
 * Reads into rbuf[rend .. rcap). Returns WEIR_OK (bytes arrived: rend
 * moved), WEIR_AGAIN (nothing now; readable cleared), WEIR_DONE (EOF; eof
 * set), WEIR_DECLINED if there is no room, or -errno (error set).
 */
int weir__conn_read(weir_conn *c);

/* Scratch space for `len` bytes at the end of obuf (grows it). NULL on
 * exhaustion. Valid until the queue drains. */
char *weir__conn_obuf_reserve(weir_conn *c, uint32_t len);
/* Queues an iovec; returns WEIR_ERR_NOMEM if the queue is full (flush first). */
int weir__conn_queue(weir_conn *c, const void *ptr, size_t len);
static inline bool weir__conn_queue_empty(const weir_conn *c)
{
    return c->oq_head == c->oq_n && c->tls_woff == c->tls_wlen;
}
static inline int weir__conn_queue_room(const weir_conn *c)
{
    return WEIR_OQ_MAX - c->oq_n;
}
/* Writes what is queued. WEIR_OK when all is written, WEIR_AGAIN if some
 * remains (writable cleared), or -errno (error set). */
int weir__conn_flush(weir_conn *c);

#endif
