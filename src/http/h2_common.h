/*
 * h2_common.h - pieces both HTTP/2 sides (h2_server.c, h2_client.c) share:
 * field-name casing, body queues between an exchange and nghttp2's data
 * provider, trailers in both directions.
 */
#ifndef WEIR_HTTP_H2_COMMON_H
#define WEIR_HTTP_H2_COMMON_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "net/conn.h"
#include "weir/types.h"

#define WEIR_H2_WINDOW 65535 /* per-stream receive window */
#define WEIR_H2_OUT_SEGS 16

/* The allocator nghttp2 sessions use (h2_mem.c): small blocks from the
 * worker's pooled free lists. */
nghttp2_mem *weir__h2_mem(void);

/* Lower-cased copy of name into buf (HTTP/2 field names are lower case);
 * returns name.len. */
size_t weir__h2_lower(char *buf, weir_str name);

/* Body bytes received on a stream, waiting to be passed on. The window
 * keeps them under WEIR_H2_WINDOW. */
typedef struct weir_h2_inbuf {
    char *buf;
    uint32_t len, handed; /* handed: given out by the last read, not consumed yet */
    uint64_t total;
    char *trailers; /* received trailer fields as "name: value\r\n" lines */
    uint32_t trailers_len;
} weir_h2_inbuf;

/* Appends received data; WEIR_ERR_NOMEM, or WEIR_ERR_INVAL beyond the window. */
int weir__h2_in_add(weir_h2_inbuf *in, const uint8_t *data, size_t len);
/* Appends a received trailer field (at most max bytes of them). */
int weir__h2_in_trailer(weir_h2_inbuf *in, const uint8_t *name, size_t nlen, const uint8_t *value,
                        size_t vlen, uint32_t max);
/* read_body of an exchange on a stream: WEIR_OK with one slice of what
 * arrived, WEIR_DONE once `end` (the peer's END_STREAM) and everything is
 * handed out (*trailers: the raw trailer lines), else WEIR_AGAIN. */
int weir__h2_in_read(weir_h2_inbuf *in, bool end, weir_str *segs, size_t *n, weir_str *trailers);
/* Drops what the last read handed out; returns how many bytes that was. */
uint32_t weir__h2_in_consume(weir_h2_inbuf *in);
void weir__h2_in_free(weir_h2_inbuf *in);

/* Body slices queued by an exchange for nghttp2's data provider. */
typedef struct weir_h2_outq {
    weir_str seg[WEIR_H2_OUT_SEGS];
    int head, n;
    bool end;      /* the end was queued */
    bool eof_sent; /* the provider produced it */
    bool deferred; /* the provider waits for more */
    bool sized;    /* the body's length is known: it ends with its last byte */
    uint64_t left; /* bytes still to produce when sized */
    nghttp2_nv *trailers;
    size_t n_trailers;
    char *trailer_mem;
} weir_h2_outq;

/* Queues slices by reference; WEIR_ERR_NOMEM when full. */
int weir__h2_out_add(weir_h2_outq *q, const weir_str *segs, size_t n, uint64_t *bytes);
/* Marks the end, with raw "Name: value\r\n" trailers (may be empty). */
int weir__h2_out_end(weir_h2_outq *q, weir_str raw_trailers);
/* write_body / write_end of an exchange on stream `id` (0: not submitted
 * yet): queue, and wake nghttp2's data provider if it was waiting. */
int weir__h2_out_write(weir_h2_outq *q, nghttp2_session *ng, int32_t id, const weir_str *segs,
                       size_t n, uint64_t *bytes);
int weir__h2_out_finish(weir_h2_outq *q, nghttp2_session *ng, int32_t id, weir_str trailers);
/* True while slices or the end are still to be produced. */
bool weir__h2_out_pending(const weir_h2_outq *q);
/* The data provider's work: copies into buf; sets EOF (and submits the
 * trailers) at the end; NGHTTP2_ERR_DEFERRED when nothing is queued.
 * *moved is set when slices were consumed. */
ssize_t weir__h2_out_read(weir_h2_outq *q, nghttp2_session *ng, int32_t id, uint8_t *buf,
                          size_t len, uint32_t *flags, bool *moved);
void weir__h2_out_free(weir_h2_outq *q);

/* True for fields HTTP/2 does not carry (connection-specific, RFC 9113
 * 8.2.2) or that it carries as pseudo-headers (host). "te: trailers" is
 * kept: keep_te. */
bool weir__h2_skip_field(weir_str name, weir_str value, bool keep_te);

/* Frames nghttp2 produced that the socket has not taken yet. */
typedef struct weir_h2_out {
    char *buf;
    size_t len, cap;
} weir_h2_out;

/* Writes what nghttp2 has to send through conn (at most 64 KiB gathered
 * before a write; the rest when the socket takes it). Returns false if
 * the connection broke. Never call it from an nghttp2 callback. */
bool weir__h2_send(nghttp2_session *ng, weir_conn *conn, weir_h2_out *o);

/* Only produces frames into o (no write): a caller that wants its data
 * copied out now and the write batched with other streams' at the end of
 * the loop round. Returns false on an nghttp2 error. */
bool weir__h2_gather(nghttp2_session *ng, weir_conn *conn, weir_h2_out *o);

/* Reads what conn has (a bounded number of reads) and feeds nghttp2.
 * WEIR_OK, WEIR_DONE (the peer closed or the socket failed), or an nghttp2
 * error code (< 0) from mem_recv. */
int weir__h2_recv(nghttp2_session *ng, weir_conn *conn);

struct weir_headers;
struct weir_arena;
/* Room for the nghttp2 fields of a head with h's fields plus `extra`
 * pseudo-headers, and for their lower-cased names (*names), in the
 * session's arena: no allocation per request beyond it. NULL when out of
 * memory. */
nghttp2_nv *weir__h2_nv_room(struct weir_arena *a, const struct weir_headers *h, size_t extra,
                             char **names);
/* True if a Connection field of h names `name` (a hop-by-hop field of the
 * HTTP/1 message, RFC 9110 7.6.1). */
bool weir__h2_nominated(const struct weir_headers *h, weir_str name);

#endif
