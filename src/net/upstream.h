/*
 * upstream.h - connections to backends and the per-worker keep-alive pool.
 *
 * A pooled idle connection stays registered on its loop, so a close or
 * stray bytes from the backend are seen at once and the connection is
 * dropped; it is never handed out after that. A connection goes back to the
 * pool only after a complete, well-framed exchange.
 *
 * The pool is per worker thread here (key: backend address, TLS flag, SNI);
 * each key keeps at most `max_idle` connections and each connection at
 * most its idle timeout. Loop thread only.
 */
#ifndef WEIR_NET_UPSTREAM_H
#define WEIR_NET_UPSTREAM_H

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
    uint32_t sni_hash;
    bool connected;     /* the TCP handshake completed */
    uint32_t n_used;    /* exchanges completed on it */

    /* while in use */
    void *owner;
    weir_upconn_wake_cb wake;

    /* while idle in the pool */
    weir_upconn *next, *prev;
    uint32_t bucket;
    weir_timer idle_timer;
};

/* Takes an idle connection for peer from this worker's pool, or NULL. The
 * connection's events go to wake(owner) from now on. */
weir_upconn *weir__upool_take(weir_loop *loop, const weir_peer *peer, void *owner,
                              weir_upconn_wake_cb wake);
/* Starts a new connection to peer (non-blocking). Returns NULL and sets
 * *err (-errno) on immediate failure. */
weir_upconn *weir__upconn_connect(weir_loop *loop, const weir_peer *peer, void *owner,
                                  weir_upconn_wake_cb wake, int *err);
/* Checks a connect in progress: WEIR_OK (connected), WEIR_AGAIN, or -errno. */
int weir__upconn_connect_result(weir_upconn *u);
/* Gives a connection back after a clean exchange: pooled if there is room
 * and idle_timeout_ms > 0, else closed. */
void weir__upool_put(weir_upconn *u, uint32_t idle_timeout_ms, uint32_t max_idle);
/* Closes and frees a connection that is not in the pool. */
void weir__upconn_close(weir_upconn *u, bool reset);
/* Closes every idle pooled connection of this worker (shutdown). */
void weir__upool_close_all(weir_loop *loop);

#endif
