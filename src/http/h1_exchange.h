/*
 * h1_exchange.h - one side of an exchange over an HTTP/1.1 connection
 * (see exchange.h): decodes the body it receives (Content-Length, chunked
 * or until close) in place from the connection's read buffer, and encodes
 * what it sends (head serialization, Content-Length or chunked framing).
 *
 * Owner: the session using it; loop thread only. It does not own the conn.
 */
#ifndef WEIR_HTTP_H1_EXCHANGE_H
#define WEIR_HTTP_H1_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "http/exchange.h"
#include "http/h1_parse.h"
#include "net/conn.h"

typedef struct weir_h1x {
    weir_exchange x;
    weir_conn *conn;
    weir_arena *arena; /* trailers, response header growth */
    bool upstream;     /* sends requests, receives responses */

    /* receiving a response head (upstream side) */
    size_t scan;
    uint32_t max_head;
    uint32_t max_headers;
    weir_str req_method; /* method of the request sent, for response framing */

    /* receiving a body */
    enum weir_h1_body_kind in_kind;
    uint64_t in_left;  /* WEIR_H1_BODY_LENGTH: bytes still to come */
    uint64_t in_limit; /* max body bytes, 0 = none */
    uint64_t in_total; /* body bytes delivered */
    weir_chunked_decoder dec;
    uint32_t in_base;     /* body bytes restart here when the buffer drains */
    uint32_t in_peek_end; /* rstart after consume_body */
    bool in_done;
    bool expect_continue; /* send "100 Continue" before the first body read */
    char *trailers;       /* arena copy of received trailer fields */
    uint32_t trailers_len;

    /* sending */
    bool out_chunked;    /* chunked framing of the body */
    bool out_no_body;    /* body suppressed (HEAD response, 204, 304) */
    bool out_keep_alive; /* downstream: the connection stays open after */
    int out_minor;       /* downstream: client's minor version */
    uint64_t out_total;  /* body bytes queued */
} weir_h1x;

/* Sets up x for sending requests / receiving responses on conn. */
void weir__h1x_init_upstream(weir_h1x *x, weir_conn *conn, weir_arena *arena, uint32_t max_head);
/*
 * Sets up x for receiving a request whose head (head_len bytes at the
 * start of conn's buffer, framing `f`) has been parsed, and sending its
 * response. `limit` is the request body limit (0 = none).
 */
void weir__h1x_init_downstream(weir_h1x *x, weir_conn *conn, weir_arena *arena,
                               const weir_h1_framing *f, uint32_t head_len, int minor_version,
                               uint64_t limit);

/* The standard reason phrase of a status, or "" */
const char *weir__h1_reason(int status);

#endif
