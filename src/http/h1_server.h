/*
 * h1_server.h - a downstream HTTP/1.x connection: reads request heads,
 * hands each request to a stream (the proxy session) through the exchange
 * interface, and keeps the connection alive between requests.
 *
 * Requests are served one at a time in order; pipelined requests wait in
 * the read buffer until the previous response is complete. Malformed heads
 * are answered here (400/431/408/505) and the connection closed.
 *
 * Life cycle (one thread, the worker that accepted it):
 *   HANDSHAKE --TLS done--> HEAD (TLS listeners only)
 *   IDLE --bytes--> HEAD --complete--> ACTIVE --stream_done--> IDLE
 *   ACTIVE --stream_done with unread body--> LINGER --EOF/timeout--> closed
 *   any --error/timeout/shutdown--> closed (freed at the end of the round)
 */
#ifndef WEIR_HTTP_H1_SERVER_H
#define WEIR_HTTP_H1_SERVER_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "http/h1_exchange.h"
#include "http/msg.h"
#include "http/stream.h"
#include "net/conn.h"

typedef struct weir_h1s weir_h1s;

typedef struct weir_h1s_config {
    const weir_stream_handler *handler;
    void *svc;
    struct weir_tls_server *tls; /* TLS listener; NULL = plain */
    uint32_t handshake_timeout_ms;
    bool h2c;                /* accept HTTP/2 with prior knowledge on a plain listener */
    bool proxy_protocol;     /* connections start with a PROXY header (v1/v2) */
    uint32_t h2_max_streams; /* concurrent streams per HTTP/2 connection */
    uint32_t header_timeout_ms;
    uint32_t keepalive_timeout_ms;
    uint32_t max_header_bytes;
    uint32_t max_headers;
    uint64_t max_body_bytes;
    /*
     * Connection aging (weir_proxy_options, defaults filled in;
     * WEIR_UNLIMITED = off). Written by the main thread while workers read
     * them (weir_server_update_aging): each is a value on its own, so
     * relaxed loads. HTTP/1 reads both at each request; HTTP/2 reads the
     * count at each stream and the age and grace when the connection
     * starts and when it retires.
     */
    _Atomic uint32_t keepalive_requests;
    _Atomic uint32_t keepalive_time_ms;
    _Atomic uint32_t h2_max_age_ms; /* 0 = off */
    _Atomic uint32_t h2_age_grace_ms;
} weir_h1s_config;

typedef enum weir_h1s_state {
    WEIR_H1S_PROXY,     /* reading the PROXY header: header timer */
    WEIR_H1S_HANDSHAKE, /* TLS handshake in progress: handshake timer */
    WEIR_H1S_IDLE,      /* between requests: no buffer, keep-alive timer */
    WEIR_H1S_HEAD,      /* reading a request head: header timer */
    WEIR_H1S_ACTIVE,    /* a stream owns the exchange */
    WEIR_H1S_LINGER,    /* response sent, unread request bytes being drained before close */
    WEIR_H1S_CLOSED,    /* closed, freed at the end of the loop round */
} weir_h1s_state;

/* One list of live connections per worker, for graceful shutdown. */
typedef struct weir_h1s_list {
    struct weir_h2c_list *h2; /* where connections switching to HTTP/2 go */
    weir_h1s *head;
    _Atomic uint32_t n; /* written by the owner, read by stats from any thread */
    bool draining;      /* no new requests start; idle connections close */
} weir_h1s_list;

struct weir_h1s {
    weir_conn conn;
    weir_h1x x;
    weir_h1s_state state;
    const weir_h1s_config *cfg;
    weir_h1s_list *list;
    weir_h1s *next, *prev;
    weir_timer timer;
    void *stream;  /* current stream, or NULL */
    weir_msg *req; /* its message while the head is read */
    size_t scan;
    bool close_after;    /* close when the current stream is done */
    uint32_t n_requests; /* requests started on it (keepalive_requests) */
    uint32_t jitter;     /* random, fixed per connection: spreads keepalive_time */
    uint64_t born_ms;    /* loop clock at accept (keepalive_time) */
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } peer;
    char ip[48]; /* the peer's address as text, formatted once at accept */
    uint8_t ip_len;
};

/* Takes over an accepted socket. proxy_done: the PROXY header, if the
 * listener expects one, was read already (peer is its client). Returns 0,
 * or -errno (fd closed). */
int weir__h1s_accept(weir_loop *loop, int fd, bool proxy_done, const struct sockaddr *peer,
                     socklen_t peer_len, const weir_h1s_config *cfg, weir_h1s_list *list);

/*
 * The stream is over and will not touch the exchange again. With `reuse`
 * its response went out whole: the connection serves the next request, or
 * closes gracefully (client asked, draining), or lingers first if the
 * request body was not read to its end. Without `reuse` the response is
 * incomplete and the connection is reset.
 */
void weir__h1s_stream_done(weir_h1s *h, bool reuse);

/* Starts draining: idle connections close now, busy ones after their
 * current request. */
void weir__h1s_list_drain(weir_h1s_list *list);
/* Closes every connection at once (streams are dropped by the caller first). */
void weir__h1s_list_close_all(weir_h1s_list *list);

#endif
