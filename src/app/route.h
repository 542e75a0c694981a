/*
 * route.h - choosing a location for a request by host and path.
 *
 * A router is built once from a list of route specs (one per location) and
 * is then immutable: any number of threads may match against it at once.
 *
 * Rules, in order:
 *   1. Host narrows first. Locations whose host list matches the request's
 *      host are tried before locations without a host list. Host patterns:
 *      exact ("example.com"), wildcard ("*.example.com": any name ending in
 *      ".example.com"), regex ("~^api[0-9]+\.example\.com$"). Among host
 *      patterns, exact beats wildcard (longest suffix first) beats regex
 *      (config order), as nginx's server_name does. Hosts compare without
 *      case, port and trailing dot.
 *   2. Within that set, by path: exact ("=/login") before regex
 *      ("~^/api/v[0-9]+/") before prefix ("/static/") before catch-all
 *      (empty path). Among prefixes the longest wins; among regexes the
 *      first in config order.
 *   3. Rule 2 is a rank: exact 3000 + length, regex 2000 - config index,
 *      prefix 1000 + length, catch-all 0 (lengths and indexes capped at
 *      999). An explicit weight replaces the rank of its location, so a
 *      weight of 5000 beats every computed rank and 1500 sits between
 *      regexes and prefixes. Highest rank wins; ties go to the location
 *      first in config order.
 *
 * Cost does not grow with the number of locations except for regexes:
 * exact paths are a hash lookup, prefixes one hash probe per distinct
 * prefix length, hosts a hash lookup per label suffix. Regexes are
 * precompiled with the PCRE2 JIT.
 */
#ifndef WEIR_APP_ROUTE_H
#define WEIR_APP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/types.h"

typedef struct weir_route_spec {
    const char *const *hosts; /* patterns as above; n_hosts 0 = any host */
    size_t n_hosts;
    const char *path; /* "=exact", "~regex", "/prefix" or "" (any) */
    bool has_weight;  /* weight below replaces the computed rank */
    int64_t weight;
    void *data; /* what weir__router_match returns (the location) */
} weir_route_spec;

typedef struct weir_router weir_router;

/*
 * Builds a router. On error returns NULL and writes "location N: message"
 * (N the 0-based spec index, message e.g. the PCRE2 compile error with its
 * offset) into err. The specs' strings are copied.
 */
weir_router *weir__router_new(const weir_route_spec *specs, size_t n, char *err, size_t err_len);
void weir__router_free(weir_router *r);

/* The data of the best location for host (may include ":port") and path
 * (without the query), or NULL if none matches. Any thread. */
void *weir__router_match(const weir_router *r, weir_str host, weir_str path);

/* Capture pairs of the per-thread match data (enough for rewrites). */
#define WEIR_MAX_CAPTURES 64

/* This thread's PCRE2 match data (created on first use, freed at thread
 * exit); the returned pointer is a pcre2_match_data_8 *. */
struct pcre2_real_match_data_8 *weir__thread_match_data(void);

/* The rank a spec gets without an explicit weight (exposed for tests). */
int64_t weir__route_rank(const char *path, size_t config_index);

#endif
