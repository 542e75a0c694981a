/*
 * msg.h - the HTTP message model shared by every codec: a request or
 * response head with a header table. Names and values are slices of the
 * codec's read buffer until modified; modified strings live in the
 * session's arena.
 */
#ifndef WEIR_HTTP_MSG_H
#define WEIR_HTTP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "weir/headers.h"
#include "weir/types.h"

/* Header fields held in the message itself; more (up to the configured
 * limit) go to the arena. Most requests and responses have fewer. */
#define WEIR_INLINE_HEADERS 32
/* Upper bound of the max_headers setting. */
#define WEIR_MAX_HEADERS 1000

struct weir_headers {
    weir_header *v; /* inline[] until it must grow, then arena memory */
    uint32_t n, cap;
    weir_arena *arena;
    weir_header inline_v[WEIR_INLINE_HEADERS];
};

/* Body length of a message as the codecs see it. */
enum weir_body_len {
    WEIR_BODY_NONE,    /* no body at all */
    WEIR_BODY_KNOWN,   /* content_length bytes */
    WEIR_BODY_UNKNOWN, /* streamed: chunked or until close */
};

typedef struct weir_msg {
    /* request */
    weir_str method;
    weir_str target;
    /* response */
    int status;
    weir_str reason;
    /* both */
    int version; /* 10, 11, 20 */
    enum weir_body_len body;
    uint64_t content_length;
    bool close;           /* the sender closes the connection after this message */
    bool upgrade;         /* a request asking for a protocol upgrade, or its 101 answer */
    weir_headers headers; /* last: its large inline array is left unzeroed */
} weir_msg;

/* Bytes of a weir_msg before the inline header array: what must be zeroed
 * to reset one. */
#define WEIR_MSG_RESET_LEN (offsetof(weir_msg, headers) + offsetof(weir_headers, inline_v))

void weir__headers_init(weir_headers *h, weir_arena *arena);
/* Appends a field by reference (no copy); WEIR_ERR_NOMEM if full and the
 * arena is exhausted. */
int weir__headers_push(weir_headers *h, weir_str name, weir_str value);
/* Makes room for n fields (moving the table to the arena if needed), so a
 * parser can write up to n entries into h->v. WEIR_ERR_NOMEM on failure. */
int weir__headers_reserve(weir_headers *h, uint32_t n);
/* Index of the first field named `name` at or after `from`, or -1. */
long weir__headers_find(const weir_headers *h, const char *name, size_t from);

/* True if `name` is a hop-by-hop field that a proxy never forwards. */
bool weir__is_hop_by_hop(weir_str name);

#endif
