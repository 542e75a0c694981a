/*
 * upool.h - connections to backends and the keep-alive pool shared by
 * all workers.
 *
 * One pool of idle connections for every worker (DESIGN.md), keyed by
 * backend address, TLS flag, SNI and TLS client settings (which fix the
 * verification, ALPN and client certificate); each key keeps at most `max_idle`
 * connections in all, each at most its idle timeout. A pooled connection
 * stays registered on the loop of the worker that put it there (its home),
 * so a close or stray bytes from the backend are seen at once and it is
 * dropped. A worker takes its own idle connections first; when it has none
 * it takes another worker's: the socket is dup()ed onto a new connection
 * object registered on the taker's loop, and the home worker is told to
 * deregister and free the old one. Only a complete, well-framed exchange
 * puts a connection back.
 *
 * Locking: one mutex guards the buckets (held for a list walk, never for
 * I/O). Every other function runs on the connection's own loop thread.
 */
#ifndef WEIR_NET_UPOOL_H
#define WEIR_NET_UPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "net/conn.h"
#include "weir/peer.h"

typedef struct weir_upconn weir_upconn;
typedef void (*weir_upconn_wake_cb)(void *owner);

struct weir_upconn {
    weir_conn conn;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    bool tls;
    uint64_t tls_key;              /* hash of SNI and the weir_tls_client's id */
    bool connected;                /* the TCP handshake completed */
    struct weir_conn_limit *limit; /* holds one of its slots until closed, or NULL */
    uint32_t n_used;               /* exchanges completed on it */
    /* Aging (weir_peer's max_requests, max_connection_age_ms), fixed at
     * connect: not reused after max_uses exchanges or from retire_at_ms
     * (loop clock) on; 0 = no limit. */
    uint32_t max_uses;
    uint64_t retire_at_ms;

    uint8_t *pp; /* a PROXY header to send once connected (malloc'd), or NULL */
    uint16_t pp_len;

    /* while in use */
    void *owner;
    weir_upconn_wake_cb wake;

    /* while idle in the pool (guarded by the pool lock) */
    weir_upconn *next, *prev;
    uint32_t bucket;
    bool in_pool;
    bool migrated; /* taken by another worker: the home frees this object */
    struct upool_home *home;
    weir_timer idle_timer; /* on the home loop */
};

/*
 * The PROXY protocol header a connection to a peer with send_proxy starts
 * with (weir__upconn_pp makes it), before TLS; len 0 = none. Such a
 * connection is pooled under its header: only the client connection it
 * names takes it again.
 */
typedef struct weir_upconn_pp {
    uint8_t buf[320]; /* a v2 header with a 255-byte authority fits */
    uint16_t len;
} weir_upconn_pp;

/* Fills *pp for peer->send_proxy (1 or 2) and a client's connection from
 * src to dst (authority: the TLS server name it asked for, or NULL);
 * len 0 when the peer sends none. */
void weir__upconn_pp(weir_upconn_pp *pp, const weir_peer *peer, const struct sockaddr *src,
                     const struct sockaddr *dst, const char *authority);

/* Takes an idle connection for peer (and pp, NULL = none) from this
 * worker's pool, or NULL. The connection's events go to wake(owner) from
 * now on. */
weir_upconn *weir__upool_take(weir_loop *loop, const weir_peer *peer, const weir_upconn_pp *pp,
                              void *owner, weir_upconn_wake_cb wake);
/* Starts a new connection to peer (non-blocking), which sends pp's header
 * first (NULL = none). Returns NULL and sets *err (-errno) on immediate
 * failure. With peer->conn_limit the caller holds a slot of it, which the
 * connection takes over (released when it closes); on failure the slot
 * stays the caller's. */
weir_upconn *weir__upconn_connect(weir_loop *loop, const weir_peer *peer, const weir_upconn_pp *pp,
                                  void *owner, weir_upconn_wake_cb wake, int *err);
/* Checks a connect in progress, then runs the TLS handshake for a TLS
 * peer: WEIR_OK (ready), WEIR_AGAIN, or -errno (-EPROTO: TLS failed). */
int weir__upconn_connect_result(weir_upconn *u);
/* Gives a connection back after a clean exchange: pooled if there is room,
 * idle_timeout_ms > 0 and it is not past its aging limits, else closed.
 * A pooled connection leaves the pool when it reaches its age. */
void weir__upool_put(weir_upconn *u, uint32_t idle_timeout_ms, uint32_t max_idle);
/* Closes and frees a connection that is not in the pool. */
void weir__upconn_close(weir_upconn *u, bool reset);
/* Closes every idle pooled connection this worker owns and stops pooling
 * on it (shutdown). Call from the worker's thread. */
void weir__upool_close_all(weir_loop *loop);

/* Frees the calling worker's pool record; after its last close_all. */
void weir__upool_thread_exit(void);

/* Pool counters (all workers): connections taken from another worker. */
uint64_t weir__upool_migrations(void);
/* Idle connections in the pool now. */
uint64_t weir__upool_idle(void);
/* The addresses of the idle connections (one entry each, in no order):
 * *out malloc'd (free it), their number returned; 0 and NULL when none or
 * out of memory. Any thread (a walk under the pool lock). */
size_t weir__upool_idle_addrs(struct sockaddr_storage **out);

#endif
