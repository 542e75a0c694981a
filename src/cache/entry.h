/*
 * entry.h - the stored head of a cached response (entry.c): what of a
 * response head a cache keeps (RFC 9111 3.1), how a 304 updates it
 * (3.2), and its bytes on disk or in memory, checked when read back.
 *
 * The encoding is one flat buffer: a magic, a version, the status, the
 * request and response times, the fields (each name and value with its
 * length), and a CRC-32 of everything before it. Decoding checks every
 * length against the buffer and the CRC: a torn or corrupt entry is
 * refused (a miss), never read past or served wrong.
 */
#ifndef WEIR_CACHE_ENTRY_H
#define WEIR_CACHE_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "weir/headers.h"

typedef struct weir_centry {
    int status;
    time_t request_time, response_time; /* for the age (RFC 9111 4.2.3) */
    weir_header *fields;                /* into buf */
    size_t n_fields;
    char *buf; /* the encoding (malloc'd); fields point into it */
    size_t len;
} weir_centry;

/*
 * The head to store of a response: its fields but the hop-by-hop ones
 * (Connection and the fields it names, Keep-Alive, Proxy-Connection, TE,
 * Transfer-Encoding, Upgrade, Trailer) and Age (recomputed on every use).
 * Returns 0, or WEIR_ERR_NOMEM.
 */
int weir__centry_make(weir_centry *e, int status, const weir_headers *h, time_t request_time,
                      time_t response_time);

/*
 * The stored head refreshed by a 304 (RFC 9111 3.2): every field of the
 * 304 replaces the stored fields of that name, but the excepted ones
 * above, Content-Length, and what describes the stored body
 * (Content-Encoding, Content-Type, Content-Range), which a 304 cannot
 * change under it. The times become the 304's. Returns 0, or
 * WEIR_ERR_NOMEM (e unchanged).
 */
int weir__centry_update(weir_centry *e, const weir_headers *h304, time_t request_time,
                        time_t response_time);

/* Reads an encoding back (copied); WEIR_ERR_INVAL if it is torn, corrupt
 * or of another version, WEIR_ERR_NOMEM. */
int weir__centry_decode(weir_centry *e, const void *buf, size_t len);

/* The first field named name (case-insensitive), or NULL. */
const weir_str *weir__centry_field(const weir_centry *e, const char *name);

void weir__centry_free(weir_centry *e);

#endif
