/*
 * store.h - a cache store (store.c): the weir_cache of weir/cache.h, its
 * tiers, the stored objects' heads, and the locks that coalesce misses.
 *
 * A stored object (weir_cobj, mem.h) carries a weir_chead: the stored head
 * (entry.h), what policy.h read of it when it was stored, its lifetime,
 * and its validators. A "variant marker" object stands under the primary
 * key of a response with Vary: it has no body and holds the Vary names;
 * the variants are under the keys vary.h makes.
 *
 * Any thread, but the locks' wakes, which run on the waiter's loop.
 */
#ifndef WEIR_CACHE_STORE_H
#define WEIR_CACHE_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/entry.h"
#include "cache/mem.h"
#include "cache/policy.h"
#include "core/loop.h"
#include "weir/cache.h"

typedef struct weir_chead {
    weir_centry e;
    weir_cache_resp r;            /* read from e when stored or refreshed */
    int64_t lifetime;             /* seconds (max_ttl applied) */
    weir_str etag, last_modified; /* into e.buf; .ptr NULL if none */
    /* A variant marker: names (lower case, sorted, ',') of the Vary of
     * the responses stored under variant keys. */
    bool marker;
    char *vary; /* malloc'd, NUL-terminated ("" for a plain object) */
    size_t vary_len;
    char *targeted; /* the RFC 9213 field r was read with (malloc'd), or NULL */
} weir_chead;

/* A new object: head e (taken), the policy read of it with `targeted`
 * (RFC 9213 field or NULL), its lifetime capped by max_ttl (0: none),
 * vary names (copied; "" for none), and body (taken: malloc'd). NULL on
 * out of memory (everything given is freed). */
weir_cobj *weir__cstore_obj(const char *key, size_t key_len, weir_centry *e, const char *targeted,
                            int64_t heuristic_max, int64_t max_ttl, const char *vary,
                            size_t vary_len, char *body, size_t body_len);
/* The same with the lifetime given (read back from the disk tier). */
weir_cobj *weir__cstore_obj_with(const char *key, size_t key_len, weir_centry *e,
                                 const char *targeted, int64_t lifetime, const char *vary,
                                 size_t vary_len, char *body, size_t body_len);
/* A variant marker for names under key. */
weir_cobj *weir__cstore_marker(const char *key, size_t key_len, const char *vary, size_t vary_len);

static inline const weir_chead *weir__chead(const weir_cobj *o)
{
    return (const weir_chead *)o->head;
}

/* The object under key (a reference), from memory, else from disk (then
 * kept in memory too), or NULL. */
weir_cobj *weir__cstore_get(weir_cache *c, const char *key, size_t key_len);
/* Stores o (takes the reference): memory, and the disk tier behind it.
 * False if it was refused (too large). */
bool weir__cstore_put(weir_cache *c, weir_cobj *o);
/* Removes key and its variants (key "\n..."): true if any was there. */
bool weir__cstore_remove(weir_cache *c, const char *key, size_t key_len);
uint64_t weir__cstore_max_object(const weir_cache *c);

/* Counters (weir_cache_stats) the sessions bump. */
typedef enum weir_cstat {
    WEIR_CSTAT_HIT,
    WEIR_CSTAT_MISS,
    WEIR_CSTAT_STALE,
    WEIR_CSTAT_REVALIDATION,
    WEIR_CSTAT_REVALIDATED,
    WEIR_CSTAT_COALESCED,
    WEIR_CSTAT_STORED,
    WEIR_CSTAT_INVALIDATION,
    WEIR_CSTAT_COUNT
} weir_cstat;

void weir__cstore_count(weir_cache *c, weir_cstat which);

/* ---- coalescing (one miss per key goes upstream) ---- */

typedef struct weir_clock_entry weir_clock_entry;

typedef enum weir_cwait_state {
    WEIR_CWAIT_IDLE,
    WEIR_CWAIT_WAITING, /* in an entry's list */
    WEIR_CWAIT_WOKEN,   /* its wake is posted to its loop */
} weir_cwait_state;

typedef struct weir_cwaiter {
    weir_loop *loop;
    weir_task_cb wake; /* posted to loop with arg when the owner lets go */
    void *arg;
    weir_cwait_state state;
    bool stored;             /* what the owner did: stored a response (look again), or not */
    weir_clock_entry *entry; /* while WAITING, under its shard's mutex */
    void *shard;             /* that shard's */
    struct weir_cwaiter *next, *prev;
} weir_cwaiter;

typedef enum weir_clock_result {
    WEIR_CLOCK_OWNER, /* the caller holds the lock: it goes upstream */
    WEIR_CLOCK_WAIT,  /* another holds it: w waits for its wake */
    WEIR_CLOCK_BUSY,  /* another holds it (try only: w is NULL) */
} weir_clock_result;

/* Takes the lock of key, or queues w behind its holder (w NULL: only
 * tries). Out of memory: OWNER (the request goes upstream on its own). */
weir_clock_result weir__clock_acquire(weir_cache *c, const char *key, size_t key_len,
                                      weir_cwaiter *w);
/* The holder is done: every waiter is woken with `stored`. */
void weir__clock_release(weir_cache *c, const char *key, size_t key_len, bool stored);
/* Takes w out of its queue: true; false if its wake is already on the
 * way (the waiter must wait for it). */
bool weir__clock_cancel(weir_cache *c, weir_cwaiter *w);

/* ---- the disk tier (disk.c) ---- */

typedef struct weir_cdisk weir_cdisk;

weir_cdisk *weir__cdisk_open(const char *dir, uint64_t max_bytes, char *err, size_t err_len);
void weir__cdisk_close(weir_cdisk *d);
/* Queues o for writing (a reference is taken); never blocks on the disk. */
void weir__cdisk_put(weir_cdisk *d, weir_cobj *o);
/* The object under key read back and checked, or NULL (absent, torn or
 * corrupt: a corrupt file is removed). */
weir_cobj *weir__cdisk_get(weir_cdisk *d, const char *key, size_t key_len);
bool weir__cdisk_remove(weir_cdisk *d, const char *key, size_t key_len);
size_t weir__cdisk_remove_prefix(weir_cdisk *d, const char *prefix, size_t len);
void weir__cdisk_stats(weir_cdisk *d, weir_cache_stats *out);
/* Blocks until the queued writes are on disk (tests, shutdown). */
void weir__cdisk_sync(weir_cdisk *d);
/* The encoding of a stored object for the disk: key, head and body, with
 * CRCs; weir__cdisk_decode reads it back (NULL if it does not check). */
char *weir__cdisk_encode(const weir_cobj *o, size_t *len);
weir_cobj *weir__cdisk_decode(const char *buf, size_t len, const char *want_key, size_t want_len);

#endif
