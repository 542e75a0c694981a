/*
 * stream.h - how a downstream connection (HTTP/1 or HTTP/2) hands each
 * request to the layer above (the proxy session), whatever the protocol.
 */
#ifndef WEIR_HTTP_STREAM_H
#define WEIR_HTTP_STREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "http/exchange.h"
#include "http/msg.h"

/* Where a request came from, given when it starts. */
typedef struct weir_stream_origin {
    void *owner; /* the HTTP/1 connection or the HTTP/2 stream */
    /* The stream is over and will not touch the exchange again; `reuse`
     * when its response went out whole (see weir__h1s_stream_done). */
    void (*done)(void *owner, bool reuse);
    const struct sockaddr *peer; /* the client's address */
    weir_str peer_ip;            /* it as text, formatted once per connection */
    struct ssl_st *ssl;          /* the client connection's TLS, or NULL */
    struct weir_conn *conn;      /* a plain HTTP/1 client socket (tunnels may splice), or NULL */
    struct weir_conn *tls_conn;  /* the client connection when it is TLS (during stream_start) */
    int fd;                      /* the client's socket (its local address), any protocol */
} weir_stream_origin;

/* The layer above as a connection sees it. */
typedef struct weir_stream_handler {
    /* Allocates a stream for the next request and returns its message, whose
     * header table the codec fills. NULL if out of memory. */
    void *(*stream_new)(void *svc, weir_loop *loop, weir_msg **req);
    /* The head is complete and valid: run the stream on exchange x. */
    void (*stream_start)(void *stream, weir_exchange *x, uint32_t head_len,
                         const weir_stream_origin *origin);
    /* Readiness changed on the client side of the stream. */
    void (*stream_wake)(void *stream);
    /* Instead of stream_start, for a request the codec refused: answer
     * `status` (`reason` for the log) on x, which sends it and closes. */
    void (*stream_refuse)(void *stream, weir_exchange *x, int status, const char *reason,
                          const weir_stream_origin *origin);
    /* Frees a stream that never started. */
    void (*stream_drop)(void *stream);
    /* Ends a started stream at once (forced shutdown, connection gone): the
     * stream logs, releases its upstream and calls origin->done(owner, false). */
    void (*stream_abort)(void *stream);
} weir_stream_handler;

#endif
