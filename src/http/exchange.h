/*
 * exchange.h - what the proxy state machine sees of one side of one HTTP
 * exchange, whatever the protocol. The downstream side receives the request
 * and sends the response; the upstream side sends the request and receives
 * the response. An HTTP/1 connection implements it (h1_exchange.c), and
 * so does an HTTP/2 stream on either side (h2_server.c, h2_client.c).
 *
 * All operations are non-blocking and follow the WEIR_OK / WEIR_AGAIN /
 * WEIR_DONE / negative convention. When one returns WEIR_AGAIN, the side
 * wakes its session when progress may be possible again.
 *
 * Body data is zero-copy: read_body hands out slices of the side's receive
 * buffer, valid until consume_body; write_body queues slices by reference,
 * so the caller consumes the source only once flush returned WEIR_OK.
 */
#ifndef WEIR_HTTP_EXCHANGE_H
#define WEIR_HTTP_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/msg.h"
#include "weir/types.h"

typedef struct weir_exchange weir_exchange;

/* Errors specific to exchanges (negative errno values are used too). */
enum {
    WEIR_EX_E_CLOSED = -2000,    /* the peer closed the connection early */
    WEIR_EX_E_FRAMING = -2001,   /* invalid body framing from the peer */
    WEIR_EX_E_TOO_LARGE = -2002, /* body over the configured limit */
    WEIR_EX_E_HEAD = -2003,      /* malformed response head */
    WEIR_EX_E_HEAD_TOO_LARGE = -2004,
};

typedef struct weir_exchange_ops {
    /* Receiving side: a response head (upstream only). WEIR_OK fills *m. */
    int (*read_head)(weir_exchange *x, weir_msg *m);
    /* Decoded body bytes available now: up to `max` slices. WEIR_OK with
     * *n >= 1, WEIR_AGAIN, WEIR_DONE (no more body; *trailers holds the
     * raw trailer fields, possibly empty), or an error. */
    int (*read_body)(weir_exchange *x, weir_str *segs, size_t max, size_t *n, weir_str *trailers);
    /* Releases everything the last read_body returned. */
    void (*consume_body)(weir_exchange *x);

    /* Sending side: queue the head of the message; decides the framing
     * of the body from m->body / m->content_length. */
    int (*write_head)(weir_exchange *x, const weir_msg *m);
    /* Queue body slices (by reference). WEIR_ERR_NOMEM if the queue is
     * full: flush first. */
    int (*write_body)(weir_exchange *x, const weir_str *segs, size_t n);
    /* Queue the end of the body with optional raw trailer fields. */
    int (*write_end)(weir_exchange *x, weir_str trailers);
    /* Sends what is queued: WEIR_OK (all sent), WEIR_AGAIN, or an error. */
    int (*flush)(weir_exchange *x);

    /* True if the peer has gone (closed its side) while we were not
     * reading from it; used to abort work for a client that left. */
    bool (*peer_gone)(weir_exchange *x);

    /*
     * Optional (NULL: never): after what is queued, sends up to *len bytes
     * of the file fd from *off straight from the kernel (sendfile(2)),
     * advancing both. WEIR_OK when *len reached 0, WEIR_AGAIN when the
     * socket is full, WEIR_DECLINED when this side cannot (TLS, chunked
     * framing, no body), -EIO if the file ended early, or an error.
     */
    int (*send_file)(weir_exchange *x, int fd, uint64_t *off, uint64_t *len);

    /* After a 101 (protocol upgrade): from now on read_body hands out the
     * raw bytes the peer sends until it closes (WEIR_DONE), and write_body
     * sends raw bytes. */
    void (*tunnel)(weir_exchange *x);
} weir_exchange_ops;

struct weir_exchange {
    const weir_exchange_ops *ops;
    uint64_t bytes_in;  /* wire bytes of this message received (head + body) */
    uint64_t bytes_out; /* wire bytes of the message sent (head + body), as queued */
};

#endif
