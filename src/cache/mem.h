/*
 * mem.h - the cache's memory tier (mem.c): stored responses by key,
 * bounded in bytes, shared by every worker.
 *
 * An object is immutable once put: a reader holds a reference and streams
 * its body without a copy or a lock, while a newer version replaces it in
 * the index or eviction drops it. The index is split into shards, each
 * with its own mutex, held for a lookup; a hit takes no other lock.
 *
 * Eviction is S3-FIFO (Yang et al., SOSP 2023): a new object enters a
 * small FIFO (a tenth of the bytes); one read again before it leaves moves
 * to the main FIFO, one never read again is dropped and its key kept in a
 * ghost FIFO, so that it goes straight to the main FIFO if it comes back.
 * The main FIFO gives objects read since their last pass another round
 * (a 2-bit counter), like CLOCK. A scan of one-time keys therefore flows
 * through the small FIFO without evicting what is read often. Puts and
 * evictions take the one eviction lock; hits only bump the counter.
 *
 * Any thread.
 */
#ifndef WEIR_CACHE_MEM_H
#define WEIR_CACHE_MEM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weir_cmem weir_cmem;

/* A stored response: the key's digest and text, what the caller keeps
 * (the head, serialized, and the body), and the bookkeeping. */
typedef struct weir_cobj {
    _Atomic long refs;
    uint8_t digest[32]; /* SHA-256 of the key */
    char *key;          /* the key's text (purges by prefix) */
    void *head;         /* the caller's (freed with free_head) */
    void (*free_head)(void *head);
    char *body;
    size_t body_len;
    size_t size; /* what it counts for against the limit */
    /* eviction (under the eviction lock, but freq) */
    _Atomic uint8_t freq;
    uint8_t queue; /* 0 none, 1 small, 2 main */
    bool removed;  /* out of the index (replaced, purged or evicted) */
    struct weir_cobj *qnext, *qprev;
    struct weir_cobj *hnext; /* in its shard's bucket */
} weir_cobj;

/* A new object of key (copied) with body (copied) and head (taken: the
 * object frees it with free_head); one reference, the caller's. NULL on
 * out of memory (head is then freed). */
weir_cobj *weir__cobj_new(const char *key, size_t key_len, void *head,
                          void (*free_head)(void *head), size_t head_size, const void *body,
                          size_t body_len);
/* The same with a body already in malloc'd memory (taken: freed with the
 * object, or at once on failure). */
weir_cobj *weir__cobj_adopt(const char *key, size_t key_len, void *head,
                            void (*free_head)(void *head), size_t head_size, char *body,
                            size_t body_len);
weir_cobj *weir__cobj_ref(weir_cobj *o);
void weir__cobj_unref(weir_cobj *o);

/* A store of at most max_bytes; NULL on out of memory. */
weir_cmem *weir__cmem_new(size_t max_bytes);
/* Frees the store; objects readers still hold live until they let go. */
void weir__cmem_free(weir_cmem *m);

/* The object stored under key, with a reference for the caller, or NULL. */
weir_cobj *weir__cmem_get(weir_cmem *m, const char *key, size_t key_len);

/*
 * Stores o under its key, replacing what was there; takes the caller's
 * reference. An object larger than an eighth of the store is refused
 * (false; o is released): it would flush the rest. Evicts as needed to
 * stay within the bytes.
 */
bool weir__cmem_put(weir_cmem *m, weir_cobj *o);

/* Removes key (true if it was there), or every key starting with prefix
 * (the count). */
bool weir__cmem_remove(weir_cmem *m, const char *key, size_t key_len);
size_t weir__cmem_remove_prefix(weir_cmem *m, const char *prefix, size_t len);

typedef struct weir_cmem_stats {
    uint64_t hits, misses, puts, evictions, refused;
    uint64_t objects, bytes, max_bytes;
} weir_cmem_stats;

void weir__cmem_stats(weir_cmem *m, weir_cmem_stats *out);

#endif
