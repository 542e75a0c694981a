/*
 * weir/headers.h - header tables: the fields of a request or a response
 * as phases see and change them (weir_session_req_headers and
 * weir_session_resp_headers in weir/session.h hand them out).
 */
#ifndef WEIR_HEADERS_H
#define WEIR_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_headers weir_headers;

/* Number of fields. */
size_t weir_headers_count(const weir_headers *h);
/* The i-th field (0 <= i < count), in wire order. */
weir_header weir_headers_at(const weir_headers *h, size_t i);
/* The first value of `name` (case-insensitive); .ptr is NULL if absent. */
weir_str weir_headers_get(const weir_headers *h, const char *name);
/*
 * Replaces every field `name` by one field with `value` (appends it if
 * absent). Name and value are copied. Returns WEIR_OK, WEIR_ERR_INVAL
 * (name not a token, or CR/LF/NUL in the value) or WEIR_ERR_NOMEM.
 */
int weir_headers_set(weir_headers *h, const char *name, const char *value);
/* Appends one more field (keeps existing ones). Same returns as set. */
int weir_headers_add(weir_headers *h, const char *name, const char *value);
/*
 * The same as set and add, without copying or checking: name and value are
 * used by reference, so they must stay valid while the session lives
 * (configuration strings of a pinned snapshot, session memory), and the
 * caller vouches that name is a token and value holds no CR, LF or NUL.
 * For code that checked its fields once, at load: the per-request cost is
 * one pass over the table. Returns WEIR_OK or WEIR_ERR_NOMEM.
 */
int weir_headers_set_ref(weir_headers *h, weir_str name, weir_str value);
int weir_headers_add_ref(weir_headers *h, weir_str name, weir_str value);
/* Removes every field `name`; returns how many were removed. */
size_t weir_headers_remove(weir_headers *h, const char *name);

/*
 * Writes t as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes
 * and a NUL) into out, without locale or static buffers. Returns 29, or 0
 * with out "" when the year is outside 0000-9999. Any thread.
 */
size_t weir_http_date(time_t t, char out[30]);

/*
 * Parses an HTTP-date (RFC 9110 5.6.7) in any of its three forms:
 * IMF-fixdate, the obsolete RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT"; a
 * two-digit year more than 50 years ahead is taken from the previous
 * century) and asctime ("Sun Nov  6 08:49:37 1994"). Names are
 * case-sensitive, as the grammar says; surrounding spaces and tabs are
 * skipped. The weekday must be a weekday name but is not checked against
 * the date. A day past the month's end (Feb 29 outside leap years), hour >
 * 23, minute > 59 or second > 60 (a leap second is allowed and counts as
 * the next second) is refused. Returns true with *t, false for anything
 * else; never reads past v.len. Any thread.
 */
bool weir_http_date_parse(weir_str v, time_t *t);

#ifdef __cplusplus
}
#endif
#endif
