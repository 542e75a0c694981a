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
#include "core/ascii.h"
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
    /* A filter of the names present, for setting a field without scanning
     * the table: bit weir__header_bit(name) is set for each of v[0..seen).
     * A push keeps it up to date when it was; it is brought up to n when
     * used. Code that drops or reorders fields other than through the
     * functions below calls weir__headers_changed(). */
    uint64_t names;
    uint32_t seen;
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
int weir__headers_grow(weir_headers *h);
/* A name's bit in the filter: from its length and its first and last
 * bytes (their low five bits, the same in both cases of a letter), the
 * bytes that tell most field names apart. */
static inline uint64_t weir__header_bit(weir_str name)
{
    unsigned f = (unsigned char)name.ptr[0] & 31, l = (unsigned char)name.ptr[name.len - 1] & 31;
    return 1ull << ((f ^ l << 1 ^ (unsigned)name.len << 2) & 63);
}

/* Appends a field by reference (no copy); WEIR_ERR_NOMEM if full and the
 * arena is exhausted. */
static inline int weir__headers_push(weir_headers *h, weir_str name, weir_str value)
{
    if (h->n == h->cap && weir__headers_grow(h) < 0)
        return WEIR_ERR_NOMEM;
    if (h->seen == h->n && name.len) { /* the filter was up to date: keep it */
        h->names |= weir__header_bit(name);
        h->seen++;
    }
    h->v[h->n++] = (weir_header){name, value};
    return WEIR_OK;
}

/* Fields were dropped or moved in h->v directly: the name filter starts
 * over. */
static inline void weir__headers_changed(weir_headers *h)
{
    h->names = 0;
    h->seen = 0;
}
/* Makes room for n fields (moving the table to the arena if needed), so a
 * parser can write up to n entries into h->v. WEIR_ERR_NOMEM on failure. */
int weir__headers_reserve(weir_headers *h, uint32_t n);
/* Index of the first field named `name` (len bytes) at or after `from`,
 * or -1; weir__headers_find takes a C string (its length folds to a
 * constant for a literal). */
long weir__headers_find_n(const weir_headers *h, const char *name, size_t len, size_t from);
static inline long weir__headers_find(const weir_headers *h, const char *name, size_t from)
{
    return weir__headers_find_n(h, name, __builtin_strlen(name), from);
}

/* True if `name` is a hop-by-hop field that a proxy never forwards. */
static inline bool weir__is_hop_by_hop(weir_str n)
{
#define WEIR__NAME_IS(lit) weir__ascii_ieq(n.ptr, lit, sizeof(lit) - 1)
    switch (n.len) {
    case 2:
        return WEIR__NAME_IS("te");
    case 7:
        return WEIR__NAME_IS("trailer") || WEIR__NAME_IS("upgrade");
    case 10:
        return WEIR__NAME_IS("connection") || WEIR__NAME_IS("keep-alive");
    case 16:
        return WEIR__NAME_IS("proxy-connection");
    case 17:
        return WEIR__NAME_IS("transfer-encoding");
    case 18:
        return WEIR__NAME_IS("proxy-authenticate");
    case 19:
        return WEIR__NAME_IS("proxy-authorization");
    default:
        return false;
    }
#undef WEIR__NAME_IS
}

#endif
