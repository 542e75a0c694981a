/*
 * store.c - a cache store: its tiers, the heads of its objects, its
 * counters and the locks that coalesce misses (see store.h).
 */
#include "cache/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "http/msg.h"

#define LOCK_SHARDS 16

struct weir_clock_entry {
    char *key;
    size_t key_len;
    weir_cwaiter *waiters; /* a list, in arrival order (tail at ->prev of head) */
    struct weir_clock_entry *next;
};

typedef struct lock_shard {
    pthread_mutex_t mu;
    weir_clock_entry *held;
} lock_shard;

struct weir_cache {
    weir_cmem *mem;
    weir_cdisk *disk;
    uint64_t max_object;
    _Atomic uint64_t counts[WEIR_CSTAT_COUNT];
    lock_shard locks[LOCK_SHARDS];
};

/* ---- heads ---- */

static void head_free(void *p)
{
    weir_chead *h = p;
    if (!h)
        return;
    weir__centry_free(&h->e);
    free(h->vary);
    free(h->targeted);
    free(h);
}

static weir_str field_of(const weir_centry *e, const char *name)
{
    const weir_str *v = weir__centry_field(e, name);
    return v ? *v : WEIR_STR_NULL;
}

/* r from the stored fields, as if they had just arrived. */
static void read_policy(weir_chead *h, const char *targeted)
{
    char mem[2048];
    weir_arena a;
    weir__arena_init(&a, mem, sizeof(mem));
    weir_headers hs;
    weir__headers_init(&hs, &a);
    for (size_t i = 0; i < h->e.n_fields; i++)
        if (weir__headers_push(&hs, h->e.fields[i].name, h->e.fields[i].value) < 0)
            break;
    weir__cache_resp_read(&h->r, h->e.status, &hs, targeted, h->e.response_time);
    weir__arena_reset(&a);
    h->etag = field_of(&h->e, "etag");
    h->last_modified = field_of(&h->e, "last-modified");
}

static weir_chead *head_new(weir_centry *e, const char *targeted, const char *vary, size_t vary_len)
{
    weir_chead *h = calloc(1, sizeof(*h));
    char *v = h ? malloc(vary_len + 1) : NULL;
    char *t = v && targeted ? strdup(targeted) : NULL;
    if (!v || (targeted && !t)) {
        free(h);
        free(v);
        weir__centry_free(e);
        return NULL;
    }
    memcpy(v, vary, vary_len);
    v[vary_len] = '\0';
    h->e = *e;
    *e = (weir_centry){0};
    h->vary = v;
    h->vary_len = vary_len;
    h->targeted = t;
    read_policy(h, targeted);
    return h;
}

weir_cobj *weir__cstore_obj_with(const char *key, size_t key_len, weir_centry *e,
                                 const char *targeted, int64_t lifetime, const char *vary,
                                 size_t vary_len, char *body, size_t body_len)
{
    weir_chead *h = head_new(e, targeted, vary, vary_len);
    if (!h) {
        free(body);
        return NULL;
    }
    h->lifetime = lifetime;
    return weir__cobj_adopt(key, key_len, h, head_free, sizeof(*h) + h->e.len + vary_len, body,
                            body_len);
}

weir_cobj *weir__cstore_obj(const char *key, size_t key_len, weir_centry *e, const char *targeted,
                            int64_t heuristic_max, int64_t max_ttl, const char *vary,
                            size_t vary_len, char *body, size_t body_len)
{
    weir_chead *h = head_new(e, targeted, vary, vary_len);
    if (!h) {
        free(body);
        return NULL;
    }
    bool heuristic = false;
    h->lifetime = weir__cache_lifetime(&h->r, heuristic_max, &heuristic);
    if (max_ttl > 0 && h->lifetime > max_ttl)
        h->lifetime = max_ttl;
    return weir__cobj_adopt(key, key_len, h, head_free, sizeof(*h) + h->e.len + vary_len, body,
                            body_len);
}

weir_cobj *weir__cstore_marker(const char *key, size_t key_len, const char *vary, size_t vary_len)
{
    weir_centry e = {0};
    if (weir__centry_make(&e, 200, NULL, 0, 0) < 0)
        return NULL;
    weir_cobj *o = weir__cstore_obj_with(key, key_len, &e, NULL, 0, vary, vary_len, NULL, 0);
    if (o)
        ((weir_chead *)o->head)->marker = true;
    return o;
}

/* ---- the store ---- */

weir_cache *weir_cache_new(const weir_cache_options *o, char *err, size_t err_len)
{
    weir_cache_options d = o ? *o : (weir_cache_options){0};
    if (!d.memory_bytes)
        d.memory_bytes = 64ull << 20;
    if (!d.disk_bytes)
        d.disk_bytes = 1ull << 30;
    if (d.memory_bytes < 64 * 1024) {
        snprintf(err, err_len, "the memory tier must be at least 64 KiB");
        return NULL;
    }
    weir_cache *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->max_object = d.memory_bytes / 8 - 4096;
    if (d.max_object_bytes && d.max_object_bytes < c->max_object)
        c->max_object = d.max_object_bytes;
    for (int i = 0; i < LOCK_SHARDS; i++)
        pthread_mutex_init(&c->locks[i].mu, NULL);
    c->mem = weir__cmem_new((size_t)d.memory_bytes);
    if (!c->mem) {
        snprintf(err, err_len, "out of memory");
        weir_cache_free(c);
        return NULL;
    }
    if (d.disk_dir && *d.disk_dir) {
        c->disk = weir__cdisk_open(d.disk_dir, d.disk_bytes, err, err_len);
        if (!c->disk) {
            weir_cache_free(c);
            return NULL;
        }
    }
    return c;
}

void weir_cache_free(weir_cache *c)
{
    if (!c)
        return;
    weir__cdisk_close(c->disk);
    weir__cmem_free(c->mem);
    for (int i = 0; i < LOCK_SHARDS; i++) {
        for (weir_clock_entry *e = c->locks[i].held, *n; e; e = n) {
            n = e->next;
            free(e->key);
            free(e);
        }
        pthread_mutex_destroy(&c->locks[i].mu);
    }
    free(c);
}

uint64_t weir__cstore_max_object(const weir_cache *c)
{
    return c->max_object;
}

weir_cobj *weir__cstore_get(weir_cache *c, const char *key, size_t key_len)
{
    weir_cobj *o = weir__cmem_get(c->mem, key, key_len);
    if (o || !c->disk)
        return o;
    o = weir__cdisk_get(c->disk, key, key_len);
    if (o)
        weir__cmem_put(c->mem, weir__cobj_ref(o));
    return o;
}

bool weir__cstore_put(weir_cache *c, weir_cobj *o)
{
    if (o->body_len > c->max_object) {
        weir__cobj_unref(o);
        return false;
    }
    if (c->disk)
        weir__cdisk_put(c->disk, o);
    return weir__cmem_put(c->mem, o) || c->disk;
}

bool weir__cstore_remove(weir_cache *c, const char *key, size_t key_len)
{
    char *p = malloc(key_len + 1);
    if (!p)
        return false;
    memcpy(p, key, key_len);
    p[key_len] = '\n';
    bool any = weir__cmem_remove(c->mem, key, key_len);
    any = weir__cmem_remove_prefix(c->mem, p, key_len + 1) > 0 || any;
    if (c->disk) {
        any = weir__cdisk_remove(c->disk, key, key_len) || any;
        any = weir__cdisk_remove_prefix(c->disk, p, key_len + 1) > 0 || any;
    }
    free(p);
    return any;
}

bool weir_cache_purge(weir_cache *c, const char *key, size_t len)
{
    bool any = weir__cstore_remove(c, key, len);
    if (any)
        weir__cstore_count(c, WEIR_CSTAT_INVALIDATION);
    return any;
}

size_t weir_cache_purge_prefix(weir_cache *c, const char *prefix, size_t len)
{
    size_t n = weir__cmem_remove_prefix(c->mem, prefix, len);
    if (c->disk) {
        size_t d = weir__cdisk_remove_prefix(c->disk, prefix, len);
        n = d > n ? d : n;
    }
    if (n)
        atomic_fetch_add_explicit(&c->counts[WEIR_CSTAT_INVALIDATION], n, memory_order_relaxed);
    return n;
}

void weir__cstore_count(weir_cache *c, weir_cstat which)
{
    atomic_fetch_add_explicit(&c->counts[which], 1, memory_order_relaxed);
}

void weir_cache_get_stats(weir_cache *c, weir_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t v[WEIR_CSTAT_COUNT];
    for (int i = 0; i < WEIR_CSTAT_COUNT; i++)
        v[i] = atomic_load_explicit(&c->counts[i], memory_order_relaxed);
    out->hits = v[WEIR_CSTAT_HIT];
    out->misses = v[WEIR_CSTAT_MISS];
    out->stale_served = v[WEIR_CSTAT_STALE];
    out->revalidations = v[WEIR_CSTAT_REVALIDATION];
    out->revalidated = v[WEIR_CSTAT_REVALIDATED];
    out->coalesced = v[WEIR_CSTAT_COALESCED];
    out->stored = v[WEIR_CSTAT_STORED];
    out->invalidations = v[WEIR_CSTAT_INVALIDATION];
    weir_cmem_stats m;
    weir__cmem_stats(c->mem, &m);
    out->mem_objects = m.objects;
    out->mem_bytes = m.bytes;
    out->mem_max_bytes = m.max_bytes;
    out->mem_evictions = m.evictions;
    if (c->disk)
        weir__cdisk_stats(c->disk, out);
}

/* ---- locks ---- */

static lock_shard *lock_shard_of(weir_cache *c, const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return &c->locks[h % LOCK_SHARDS];
}

static weir_clock_entry **find_entry(lock_shard *sh, const char *key, size_t len)
{
    weir_clock_entry **p = &sh->held;
    while (*p && !((*p)->key_len == len && memcmp((*p)->key, key, len) == 0))
        p = &(*p)->next;
    return p;
}

weir_clock_result weir__clock_acquire(weir_cache *c, const char *key, size_t key_len,
                                      weir_cwaiter *w)
{
    lock_shard *sh = lock_shard_of(c, key, key_len);
    pthread_mutex_lock(&sh->mu);
    weir_clock_entry **p = find_entry(sh, key, key_len);
    if (*p) {
        if (!w) {
            pthread_mutex_unlock(&sh->mu);
            return WEIR_CLOCK_BUSY;
        }
        weir_clock_entry *e = *p;
        w->entry = e;
        w->shard = sh;
        w->state = WEIR_CWAIT_WAITING;
        w->stored = false;
        w->next = NULL;
        if (!e->waiters) {
            e->waiters = w;
            w->prev = w;
        } else {
            weir_cwaiter *tail = e->waiters->prev;
            tail->next = w;
            w->prev = tail;
            e->waiters->prev = w;
        }
        pthread_mutex_unlock(&sh->mu);
        return WEIR_CLOCK_WAIT;
    }
    weir_clock_entry *e = calloc(1, sizeof(*e));
    char *k = e ? malloc(key_len ? key_len : 1) : NULL;
    if (k) {
        memcpy(k, key, key_len);
        e->key = k;
        e->key_len = key_len;
        e->next = sh->held;
        sh->held = e;
    } else {
        free(e);
    }
    pthread_mutex_unlock(&sh->mu);
    return WEIR_CLOCK_OWNER;
}

void weir__clock_release(weir_cache *c, const char *key, size_t key_len, bool stored)
{
    lock_shard *sh = lock_shard_of(c, key, key_len);
    pthread_mutex_lock(&sh->mu);
    weir_clock_entry **p = find_entry(sh, key, key_len);
    weir_clock_entry *e = *p;
    if (e)
        *p = e->next;
    for (weir_cwaiter *w = e ? e->waiters : NULL, *n; w; w = n) {
        n = w->next;
        w->state = WEIR_CWAIT_WOKEN;
        w->stored = stored;
        w->entry = NULL;
        if (weir__loop_post(w->loop, w->wake, w->arg) < 0)
            w->wake(w->arg); /* (cannot happen with a live loop) */
    }
    pthread_mutex_unlock(&sh->mu);
    if (e) {
        free(e->key);
        free(e);
    }
}

bool weir__clock_cancel(weir_cache *c, weir_cwaiter *w)
{
    (void)c;
    if (w->state == WEIR_CWAIT_IDLE)
        return true;
    lock_shard *sh = w->shard;
    pthread_mutex_lock(&sh->mu);
    if (w->state != WEIR_CWAIT_WAITING) { /* its wake is posted */
        pthread_mutex_unlock(&sh->mu);
        return false;
    }
    weir_clock_entry *e = w->entry;
    if (e->waiters == w) {
        e->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
    } else {
        w->prev->next = w->next;
        if (w->next)
            w->next->prev = w->prev;
        else
            e->waiters->prev = w->prev;
    }
    w->state = WEIR_CWAIT_IDLE;
    w->entry = NULL;
    pthread_mutex_unlock(&sh->mu);
    return true;
}
