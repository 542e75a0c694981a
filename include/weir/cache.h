/*
 * weir/cache.h - the HTTP cache (RFC 9111 shared cache), for a proxy
 * program built on libweir.
 *
 * A weir_cache is a store (memory, and optionally a directory on disk)
 * shared by every worker and every service that uses it. A request uses it
 * when a phase turns caching on for it (weir_session_cache_enable, from
 * request_filter or request_cache_filter); weir then looks the request up
 * before upstream_peer and, on a hit, answers from the store (response_filter
 * and response_body_filter still run, logging sees the answer). On a miss
 * the request goes upstream as usual; a storable response is stored while it
 * streams to the client. The cache phases of weir_proxy_ops (weir/proxy.h:
 * request_cache_filter, cache_key, cache_hit_filter, response_cache_filter,
 * should_serve_stale) let the program change each decision, as Pingora's do.
 *
 * What weir does by itself, per RFC 9111, RFC 5861, RFC 9211 and RFC 9213,
 * is in docs/cache.md: freshness, validation (a 304 refreshes the stored
 * head), stale-while-revalidate and stale-if-error, Vary, HEAD and Range
 * from a stored GET, invalidation by unsafe methods, the client's own
 * conditional requests, request coalescing, Age and Cache-Status.
 */
#ifndef WEIR_CACHE_H
#define WEIR_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/headers.h"
#include "weir/session.h"
#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_cache weir_cache;

/* A store's sizes; zero fields take the default in brackets. */
typedef struct weir_cache_options {
    uint64_t memory_bytes; /* the memory tier [64 MiB] */
    /* A directory for the disk tier (made if missing), or NULL for none.
     * Entries in it survive a restart. */
    const char *disk_dir;
    uint64_t disk_bytes; /* the disk tier's bound [1 GiB] */
    /* A larger body passes through and is not stored [an eighth of the
     * memory tier, and never more than that]. */
    uint64_t max_object_bytes;
} weir_cache_options;

/* A new store, or NULL with the reason in err. Any thread. */
weir_cache *weir_cache_new(const weir_cache_options *o, char *err, size_t err_len);
/* Frees it: after every service that uses it has stopped. The disk tier's
 * pending writes are finished first. */
void weir_cache_free(weir_cache *c);

/* Removes the response stored under key (all its variants): true if there
 * was one. Any thread. */
bool weir_cache_purge(weir_cache *c, const char *key, size_t len);
/* Removes every response whose key starts with prefix; the count. */
size_t weir_cache_purge_prefix(weir_cache *c, const char *prefix, size_t len);

typedef struct weir_cache_stats {
    uint64_t hits;          /* answered from the store (fresh, or stale when allowed) */
    uint64_t misses;        /* not in the store (or no usable variant) */
    uint64_t stale_served;  /* stale answers: max-stale, stale-while-revalidate, on error */
    uint64_t revalidations; /* conditional requests sent for stored responses */
    uint64_t revalidated;   /* of those, answered 304 (the stored body was reused) */
    uint64_t coalesced;     /* requests that waited for another's miss */
    uint64_t stored;        /* responses stored */
    uint64_t invalidations; /* keys removed by unsafe methods and purges */
    uint64_t mem_objects, mem_bytes, mem_max_bytes, mem_evictions;
    uint64_t disk_objects, disk_bytes, disk_max_bytes, disk_evictions;
    uint64_t disk_errors; /* writes that failed, entries found corrupt */
} weir_cache_stats;

void weir_cache_get_stats(weir_cache *c, weir_cache_stats *out);

/* How one request uses the cache (weir_session_cache_enable); copied.
 * Zero fields take the default in brackets. */
typedef struct weir_cache_settings {
    /* An RFC 9213 targeted field that takes precedence over Cache-Control
     * ["CDN-Cache-Control"; "-" for none]. */
    const char *targeted_field;
    int64_t max_ttl; /* a stored response is fresh for at most this many seconds; 0 = no cap */
    int64_t heuristic_max; /* cap of the heuristic lifetime, seconds [86400] */
    /* Seconds past its freshness a stored response may still answer when
     * the origin fails (5xx, no connection), on top of stale-if-error [0] */
    int64_t stale_on_error;
    bool store_cookies; /* responses with Set-Cookie may be stored (with the cookie) */
    /* Coalescing: concurrent misses of a key wait this long for the first
     * one's response [5000]; no_lock sends each upstream. */
    uint32_t lock_timeout_ms;
    bool no_lock;
    /* A larger body is passed through, not stored [the store's bound] */
    uint64_t max_object_bytes;
} weir_cache_settings;

/*
 * Turns caching on for this request with store c (NULL settings: the
 * defaults). From request_filter or request_cache_filter; the store must
 * outlive the session. Returns WEIR_OK or WEIR_ERR_INVAL (too late).
 */
int weir_session_cache_enable(weir_session *s, weir_cache *c, const weir_cache_settings *settings);

/*
 * The default cache key of the request: scheme "://" host (lower case, the
 * port kept) path ("?" query), with the normalized path. Writes at most cap
 * bytes; returns the length (larger than cap: it did not fit).
 */
size_t weir_session_cache_default_key(weir_session *s, char *out, size_t cap);

/* What cache_hit_filter is told of the stored response it found. */
typedef struct weir_cache_meta {
    int status;
    int64_t age;                /* seconds, as the Age field would say */
    int64_t lifetime;           /* seconds of freshness; age >= lifetime: stale */
    const weir_header *headers; /* the stored fields */
    size_t n_headers;
    uint64_t body_len;
} weir_cache_meta;

/* What response_cache_filter may change about storing a response. */
typedef struct weir_cache_decision {
    bool store;         /* weir's answer from RFC 9111; set false to not store */
    const char *reason; /* why not (for Cache-Status detail), or NULL */
    int64_t lifetime;   /* seconds it will be fresh; may be changed (store must be true) */
} weir_cache_decision;

/* Cache-Status of this request so far ("weir; hit; ttl=12"), or empty. */
weir_str weir_session_cache_status(const weir_session *s);

/* The request waited for another request's fill of its key (a cache
 * lock): true, the wait's start and end on the monotonic clock
 * (microseconds, CLOCK_MONOTONIC; end 0: it still waits) and how it ended
 * ("filled", "timeout", "aborted"). False when it did not wait. */
bool weir_session_cache_lock_wait(const weir_session *s, uint64_t *start_us, uint64_t *end_us,
                                  const char **how);

#ifdef __cplusplus
}
#endif
#endif
