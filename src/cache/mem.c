/*
 * mem.c - the cache's memory tier: a sharded index and S3-FIFO eviction
 * (see mem.h).
 *
 * Locks: the eviction lock, then a shard's lock, never the other way. A
 * get takes its shard's lock alone; the index holds one reference to each
 * object it has, a reader another.
 */
#include "cache/mem.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define N_SHARDS 64
#define OBJ_OVERHEAD 256 /* what an object costs besides its key, head and body */

typedef struct shard {
    pthread_mutex_t lock;
    weir_cobj **buckets;
    size_t n_buckets, count;
} shard;

typedef struct fifo {
    weir_cobj *head, *tail; /* in at the head, out at the tail */
    size_t bytes;
} fifo;

/* Keys recently dropped from the small FIFO: a ring in drop order and an
 * open-addressed set of the same hashes (0 = empty, 1 = deleted). */
typedef struct ghost {
    uint64_t *ring;
    size_t cap, pos, n;
    uint64_t *set;
    size_t set_cap, tombs; /* deleted slots: the set is rebuilt past a quarter */
} ghost;

struct weir_cmem {
    size_t max_bytes, small_target;
    shard shards[N_SHARDS];
    pthread_mutex_t evict_lock;
    fifo small, main;
    ghost g;
    _Atomic uint64_t hits, misses;
    uint64_t puts, evictions, refused, objects;
};

static EVP_MD *sha256;
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void fetch_sha(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static bool digest_of(const char *key, size_t len, uint8_t out[32])
{
    pthread_once(&sha_once, fetch_sha);
    unsigned int n = 0;
    return sha256 && EVP_Digest(key, len, out, &n, sha256, NULL) == 1 && n == 32;
}

static uint64_t hash_of(const uint8_t d[32])
{
    uint64_t h;
    memcpy(&h, d, sizeof(h));
    return h < 2 ? h + 2 : h; /* 0 and 1 mark the ghost set's empty and deleted slots */
}

/* ---- objects ---- */

weir_cobj *weir__cobj_new(const char *key, size_t key_len, void *head,
                          void (*free_head)(void *head), size_t head_size, const void *body,
                          size_t body_len)
{
    char *b = malloc(body_len ? body_len : 1);
    if (!b) {
        if (free_head)
            free_head(head);
        return NULL;
    }
    if (body_len)
        memcpy(b, body, body_len);
    return weir__cobj_adopt(key, key_len, head, free_head, head_size, b, body_len);
}

weir_cobj *weir__cobj_adopt(const char *key, size_t key_len, void *head,
                            void (*free_head)(void *head), size_t head_size, char *body,
                            size_t body_len)
{
    weir_cobj *o = calloc(1, sizeof(*o));
    char *k = o ? malloc(key_len + 1) : NULL;
    char *b = body;
    if (!k || !digest_of(key, key_len, o->digest)) {
        free(o);
        free(k);
        free(b);
        if (free_head)
            free_head(head);
        return NULL;
    }
    memcpy(k, key, key_len);
    k[key_len] = '\0';
    o->key = k;
    o->head = head;
    o->free_head = free_head;
    o->body = b;
    o->body_len = body_len;
    o->size = OBJ_OVERHEAD + key_len + head_size + body_len;
    atomic_init(&o->refs, 1);
    return o;
}

weir_cobj *weir__cobj_ref(weir_cobj *o)
{
    if (o)
        atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    return o;
}

void weir__cobj_unref(weir_cobj *o)
{
    if (!o || atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (o->free_head)
        o->free_head(o->head);
    free(o->key);
    free(o->body);
    free(o);
}

/* ---- the ghost ---- */

static bool ghost_init(ghost *g, size_t cap)
{
    g->cap = cap;
    g->set_cap = 1;
    while (g->set_cap < cap * 2)
        g->set_cap <<= 1;
    g->ring = calloc(cap, sizeof(*g->ring));
    g->set = calloc(g->set_cap, sizeof(*g->set));
    return g->ring && g->set;
}

static size_t ghost_find(const ghost *g, uint64_t h)
{
    size_t mask = g->set_cap - 1;
    for (size_t i = h & mask, n = 0; n < g->set_cap; i = (i + 1) & mask, n++) {
        if (g->set[i] == h)
            return i;
        if (g->set[i] == 0)
            return SIZE_MAX;
    }
    return SIZE_MAX;
}

static void set_insert(ghost *g, uint64_t h)
{
    size_t mask = g->set_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        if (g->set[i] == h)
            return;
        if (g->set[i] <= 1) {
            if (g->set[i] == 1)
                g->tombs--;
            g->set[i] = h;
            return;
        }
    }
}

/* Deleted slots make misses walk far: past a quarter of the set it is
 * made again from the ring (the hashes still in it). */
static void ghost_delete_at(ghost *g, size_t i)
{
    g->set[i] = 1;
    if (++g->tombs <= g->set_cap / 4)
        return;
    memset(g->set, 0, g->set_cap * sizeof(*g->set));
    g->tombs = 0;
    for (size_t k = 0; k < g->n; k++) {
        uint64_t h = g->ring[(g->pos + g->cap - g->n + k) % g->cap];
        if (h)
            set_insert(g, h);
    }
}

/* True (and forgotten: its ring slot is cleared) if h was dropped
 * recently. */
static bool ghost_take(ghost *g, uint64_t h)
{
    size_t i = ghost_find(g, h);
    if (i == SIZE_MAX)
        return false;
    for (size_t k = 0; k < g->n; k++) {
        size_t r = (g->pos + g->cap - g->n + k) % g->cap;
        if (g->ring[r] == h) {
            g->ring[r] = 0;
            break;
        }
    }
    ghost_delete_at(g, i);
    return true;
}

static void ghost_add(ghost *g, uint64_t h)
{
    if (g->cap == 0)
        return;
    if (g->n == g->cap) { /* the oldest goes */
        uint64_t old = g->ring[g->pos];
        size_t i = old ? ghost_find(g, old) : SIZE_MAX;
        g->ring[g->pos] = 0;
        g->n--;
        if (i != SIZE_MAX)
            ghost_delete_at(g, i);
    }
    g->ring[g->pos] = h;
    g->pos = (g->pos + 1) % g->cap;
    g->n++;
    set_insert(g, h);
}

/* ---- queues ---- */

static void fifo_push(fifo *q, weir_cobj *o)
{
    o->qprev = NULL;
    o->qnext = q->head;
    if (q->head)
        q->head->qprev = o;
    q->head = o;
    if (!q->tail)
        q->tail = o;
    q->bytes += o->size;
}

static void fifo_unlink(fifo *q, weir_cobj *o)
{
    if (o->qprev)
        o->qprev->qnext = o->qnext;
    else
        q->head = o->qnext;
    if (o->qnext)
        o->qnext->qprev = o->qprev;
    else
        q->tail = o->qprev;
    o->qnext = o->qprev = NULL;
    q->bytes -= o->size;
}

/* ---- the index ---- */

static shard *shard_of(weir_cmem *m, const uint8_t d[32])
{
    return &m->shards[d[8] % N_SHARDS];
}

static weir_cobj **bucket_of(shard *s, const uint8_t d[32])
{
    return &s->buckets[hash_of(d) & (s->n_buckets - 1)];
}

static void grow(shard *s)
{
    size_t n = s->n_buckets * 2;
    weir_cobj **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < s->n_buckets; i++) {
        for (weir_cobj *o = s->buckets[i], *next; o; o = next) {
            next = o->hnext;
            size_t b = hash_of(o->digest) & (n - 1);
            o->hnext = nb[b];
            nb[b] = o;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->n_buckets = n;
}

/* Unlinks the object of digest d from its shard (locked); it or NULL. */
static weir_cobj *index_take(shard *s, const uint8_t d[32])
{
    for (weir_cobj **p = bucket_of(s, d); *p; p = &(*p)->hnext) {
        if (memcmp((*p)->digest, d, 32) == 0) {
            weir_cobj *o = *p;
            *p = o->hnext;
            o->hnext = NULL;
            s->count--;
            return o;
        }
    }
    return NULL;
}

weir_cmem *weir__cmem_new(size_t max_bytes)
{
    weir_cmem *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->max_bytes = max_bytes;
    m->small_target = max_bytes / 10;
    size_t ghost_cap = max_bytes / 4096 > 1024 ? max_bytes / 4096 : 1024;
    bool ok = ghost_init(&m->g, ghost_cap);
    pthread_mutex_init(&m->evict_lock, NULL);
    for (int i = 0; i < N_SHARDS; i++) {
        pthread_mutex_init(&m->shards[i].lock, NULL);
        m->shards[i].n_buckets = 16;
        m->shards[i].buckets = calloc(16, sizeof(weir_cobj *));
        ok = ok && m->shards[i].buckets;
    }
    if (!ok) {
        weir__cmem_free(m);
        return NULL;
    }
    return m;
}

void weir__cmem_free(weir_cmem *m)
{
    if (!m)
        return;
    for (int i = 0; i < N_SHARDS; i++) {
        shard *s = &m->shards[i];
        for (size_t b = 0; s->buckets && b < s->n_buckets; b++) {
            for (weir_cobj *o = s->buckets[b], *next; o; o = next) {
                next = o->hnext;
                weir__cobj_unref(o);
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    pthread_mutex_destroy(&m->evict_lock);
    free(m->g.ring);
    free(m->g.set);
    free(m);
}

weir_cobj *weir__cmem_get(weir_cmem *m, const char *key, size_t key_len)
{
    uint8_t d[32];
    if (!digest_of(key, key_len, d))
        return NULL;
    shard *s = shard_of(m, d);
    weir_cobj *found = NULL;
    pthread_mutex_lock(&s->lock);
    for (weir_cobj *o = *bucket_of(s, d); o; o = o->hnext) {
        if (memcmp(o->digest, d, 32) == 0) {
            found = weir__cobj_ref(o);
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (!found) {
        atomic_fetch_add_explicit(&m->misses, 1, memory_order_relaxed);
        return NULL;
    }
    atomic_fetch_add_explicit(&m->hits, 1, memory_order_relaxed);
    uint8_t f = atomic_load_explicit(&found->freq, memory_order_relaxed);
    if (f < 3)
        atomic_store_explicit(&found->freq, (uint8_t)(f + 1), memory_order_relaxed);
    return found;
}

/* Drops o from the index and its queue (the eviction lock held). */
static void drop(weir_cmem *m, weir_cobj *o)
{
    shard *s = shard_of(m, o->digest);
    pthread_mutex_lock(&s->lock);
    weir_cobj *got = index_take(s, o->digest);
    pthread_mutex_unlock(&s->lock);
    fifo_unlink(o->queue == 1 ? &m->small : &m->main, o);
    o->queue = 0;
    o->removed = true;
    m->objects--;
    if (got)
        weir__cobj_unref(got);
}

/* One step of S3-FIFO (the eviction lock held). */
static void evict_one(weir_cmem *m)
{
    if (m->small.tail && (m->small.bytes > m->small_target || !m->main.tail)) {
        weir_cobj *o = m->small.tail;
        if (atomic_load_explicit(&o->freq, memory_order_relaxed) > 0) {
            /* read again while in the small FIFO: it stays, in main */
            fifo_unlink(&m->small, o);
            atomic_store_explicit(&o->freq, 0, memory_order_relaxed);
            o->queue = 2;
            fifo_push(&m->main, o);
            return;
        }
        ghost_add(&m->g, hash_of(o->digest));
        m->evictions++;
        drop(m, o);
        return;
    }
    weir_cobj *o = m->main.tail;
    uint8_t f = atomic_load_explicit(&o->freq, memory_order_relaxed);
    if (f > 0) { /* read since its last pass: another round */
        fifo_unlink(&m->main, o);
        atomic_store_explicit(&o->freq, (uint8_t)(f - 1), memory_order_relaxed);
        fifo_push(&m->main, o);
        return;
    }
    m->evictions++;
    drop(m, o);
}

bool weir__cmem_put(weir_cmem *m, weir_cobj *o)
{
    if (o->size > m->max_bytes / 8) {
        pthread_mutex_lock(&m->evict_lock);
        m->refused++;
        pthread_mutex_unlock(&m->evict_lock);
        weir__cobj_unref(o);
        return false;
    }
    pthread_mutex_lock(&m->evict_lock);
    shard *s = shard_of(m, o->digest);
    pthread_mutex_lock(&s->lock);
    weir_cobj *old = index_take(s, o->digest);
    if (s->count >= s->n_buckets * 2)
        grow(s);
    weir_cobj **b = bucket_of(s, o->digest);
    o->hnext = *b;
    *b = o;
    s->count++;
    pthread_mutex_unlock(&s->lock);
    if (old) { /* replaced: out of its queue; readers keep their references */
        fifo_unlink(old->queue == 1 ? &m->small : &m->main, old);
        old->queue = 0;
        old->removed = true;
        m->objects--;
    }
    bool back = ghost_take(&m->g, hash_of(o->digest));
    o->queue = back ? 2 : 1;
    fifo_push(back ? &m->main : &m->small, o);
    m->objects++;
    m->puts++;
    while (m->small.bytes + m->main.bytes > m->max_bytes && (m->small.tail || m->main.tail))
        evict_one(m);
    pthread_mutex_unlock(&m->evict_lock);
    if (old)
        weir__cobj_unref(old);
    return true;
}

bool weir__cmem_remove(weir_cmem *m, const char *key, size_t key_len)
{
    uint8_t d[32];
    if (!digest_of(key, key_len, d))
        return false;
    pthread_mutex_lock(&m->evict_lock);
    shard *s = shard_of(m, d);
    pthread_mutex_lock(&s->lock);
    weir_cobj *o = index_take(s, d);
    pthread_mutex_unlock(&s->lock);
    if (o) {
        fifo_unlink(o->queue == 1 ? &m->small : &m->main, o);
        o->queue = 0;
        o->removed = true;
        m->objects--;
    }
    pthread_mutex_unlock(&m->evict_lock);
    weir__cobj_unref(o);
    return o != NULL;
}

size_t weir__cmem_remove_prefix(weir_cmem *m, const char *prefix, size_t len)
{
    size_t n = 0;
    pthread_mutex_lock(&m->evict_lock);
    for (int i = 0; i < N_SHARDS; i++) {
        shard *s = &m->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->n_buckets; b++) {
            for (weir_cobj **p = &s->buckets[b]; *p;) {
                weir_cobj *o = *p;
                if (strncmp(o->key, prefix, len) != 0) {
                    p = &o->hnext;
                    continue;
                }
                *p = o->hnext;
                o->hnext = NULL;
                s->count--;
                fifo_unlink(o->queue == 1 ? &m->small : &m->main, o);
                o->queue = 0;
                o->removed = true;
                m->objects--;
                weir__cobj_unref(o);
                n++;
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&m->evict_lock);
    return n;
}

void weir__cmem_stats(weir_cmem *m, weir_cmem_stats *out)
{
    pthread_mutex_lock(&m->evict_lock);
    *out = (weir_cmem_stats){
        .hits = atomic_load(&m->hits),
        .misses = atomic_load(&m->misses),
        .puts = m->puts,
        .evictions = m->evictions,
        .refused = m->refused,
        .objects = m->objects,
        .bytes = m->small.bytes + m->main.bytes,
        .max_bytes = m->max_bytes,
    };
    pthread_mutex_unlock(&m->evict_lock);
}
