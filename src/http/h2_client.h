/*
 * h2_client.h - HTTP/2 to backends (nghttp2): requests of many sessions
 * multiplexed over few connections.
 *
 * Each worker keeps its HTTP/2 connections by backend (address, TLS key);
 * a new request goes on an open connection to its backend that has room
 * under the backend's SETTINGS_MAX_CONCURRENT_STREAMS, else on a new one.
 * A connection with no streams closes after the peer's idle timeout; one
 * that got GOAWAY takes no new streams and closes when its streams end.
 *
 * An upstream stream is an exchange (sends the request, receives the
 * response) plus a readiness check for the connection under it, so the
 * proxy session drives it the way it drives an HTTP/1 connection.
 *
 * Loop thread only.
 */
#ifndef WEIR_HTTP_H2_CLIENT_H
#define WEIR_HTTP_H2_CLIENT_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/loop.h"
#include "http/exchange.h"
#include "http/msg.h"
#include "net/conn.h"
#include "weir/peer.h"

typedef struct weir_h2us weir_h2us;

/*
 * A stream to peer for one request. The response's header fields go into
 * resp as they arrive, copied into arena. wake(owner) is called when the
 * stream may progress. *reused tells whether the connection was already
 * open. NULL with *err (-errno) on failure.
 */
weir_h2us *weir__h2u_open(weir_loop *loop, const weir_peer *peer, weir_arena *arena, weir_msg *resp,
                          void *owner, void (*wake)(void *owner), int *err, bool *reused);
/*
 * Like weir__h2u_open, on conn: a connection to peer already through TCP
 * and TLS whose ALPN chose h2 (an upstream offering "h2,http/1.1"). The
 * connection moves into the HTTP/2 client (conn is left empty, for its
 * owner to free) and stays for later requests to that backend.
 */
weir_h2us *weir__h2u_adopt(weir_conn *conn, const weir_peer *peer, weir_arena *arena,
                           weir_msg *resp, void *owner, void (*wake)(void *owner), int *err);
/* True if this worker has an HTTP/2 connection to peer with room for a
 * stream (so a peer that may speak either protocol goes to it). */
bool weir__h2u_usable(const weir_peer *peer);

/* The connection under s: WEIR_OK when ready for the request (TCP, TLS and
 * the HTTP/2 preface done), WEIR_AGAIN, or -errno (-EPROTO: TLS or ALPN). */
int weir__h2u_ready(weir_h2us *s);
/* The exchange of s. */
weir_exchange *weir__h2u_exchange(weir_h2us *s);
/* The session lets go of s; a stream not finished both ways is reset. */
void weir__h2u_release(weir_h2us *s);
/* Worker shutdown: idle connections close now, busy ones when their
 * streams end. */
void weir__h2u_shutdown(weir_loop *loop);
/* This worker's HTTP/2 connections take no new streams: idle ones close
 * (GOAWAY), busy ones when their streams end (a reload). */
void weir__h2u_goaway_all(void);
/* Idle HTTP/2 connections taken over by another worker (all workers). */
uint64_t weir__h2u_migrations(void);
/* Frees the worker's record at its exit, after its last shutdown. */
void weir__h2u_thread_exit(void);

#endif
