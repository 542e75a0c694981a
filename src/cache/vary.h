/*
 * vary.h - variants of a stored response (vary.c, RFC 9111 4.1).
 *
 * A response with Vary is stored once per combination of the named
 * request fields: under its primary key (scheme, host, path, query) the
 * store keeps the list of names, and each variant under a key made of the
 * primary key and the request's normalized values of those fields. Two
 * requests whose values mean the same (another order of an Accept-*
 * list, other case where the field is case-insensitive, other spacing,
 * the values split over several lines) get the same variant.
 */
#ifndef WEIR_CACHE_VARY_H
#define WEIR_CACHE_VARY_H

#include <stdbool.h>
#include <stddef.h>

#include "weir/headers.h"

/*
 * The field names of h's Vary fields, lower case, sorted, each once,
 * joined with ','; "" when there is none. Returns the length, or -1 for
 * Vary: * (the response never matches another request), a name that is
 * not a token, or more than cap bytes.
 */
long weir__vary_names(const weir_headers *h, char *out, size_t cap);

/*
 * The key of the variant of request h for the Vary names `names` (from
 * weir__vary_names) under `primary`: the primary key, then per name a
 * line "\nname:value" with the value normalized, or "\nname" alone when
 * the request lacks the field (absent and empty differ). Returns the
 * length, or -1 when it does not fit in cap.
 */
long weir__vary_key(const char *primary, size_t primary_len, const char *names, size_t names_len,
                    const weir_headers *h, char *out, size_t cap);

#endif
