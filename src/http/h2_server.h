/*
 * h2_server.h - a downstream HTTP/2 connection (nghttp2): each stream is a
 * request run by its own proxy session through the exchange interface, as
 * an HTTP/1 request is.
 *
 * A connection starts as HTTP/1 (h1_server.c) and is handed over here when
 * TLS negotiated "h2" or the client sent the HTTP/2 preface on a listener
 * that accepts h2c (prior knowledge).
 *
 * Flow control follows back-pressure: a stream's request body is buffered
 * up to its window and WINDOW_UPDATE is sent only as the session passes
 * bytes on, so a slow upstream slows that stream, not the connection. A
 * response body is copied into DATA frames as the client's windows allow;
 * until then the session waits (flush says WEIR_AGAIN).
 *
 * Abuse (CVE-2023-44487 rapid reset, SETTINGS/PING floods, empty frames) is
 * counted per connection per second; past a limit the connection ends with
 * GOAWAY(ENHANCE_YOUR_CALM).
 *
 * One thread: the worker the connection was accepted on.
 */
#ifndef WEIR_HTTP_H2_SERVER_H
#define WEIR_HTTP_H2_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "http/h1_server.h"
#include "net/conn.h"

typedef struct weir_h2c weir_h2c;

/* One list of live HTTP/2 connections per worker, for graceful shutdown. */
typedef struct weir_h2c_list {
    weir_h2c *head;
    _Atomic uint32_t n; /* written by the owner, read by stats from any thread */
    bool draining;
} weir_h2c_list;

/* The client preface of HTTP/2 (RFC 9113 3.4). */
#define WEIR_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define WEIR_H2_PREFACE_LEN 24

/*
 * Takes over `from` (socket, TLS, buffered bytes, readiness) as an HTTP/2
 * connection; `from` is left empty (its owner closes nothing). Returns 0,
 * or -errno after closing the connection.
 */
int weir__h2c_start(weir_conn *from, const struct sockaddr *peer, socklen_t peer_len,
                    const weir_h1s_config *cfg, weir_h2c_list *list);

/* Starts draining: GOAWAY to every connection; each closes once its streams
 * are done. */
void weir__h2c_list_drain(weir_h2c_list *list);
/* GOAWAY to every connection: the streams it has finish, new requests
 * come on new connections (a reload); each closes when its streams end. */
void weir__h2c_list_goaway(weir_h2c_list *list);
/* Aborts every stream and closes every connection at once. */
void weir__h2c_list_close_all(weir_h2c_list *list);

#endif
