/*
 * pool.c - per-thread free lists (see pool.h).
 */
#include "core/pool.h"

#include <assert.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CLASSES 32

typedef struct pool_class {
    const char *name;
    size_t size;
    size_t max_free;
    size_t zero_len; /* bytes zeroed on get; 0 for raw buffers */
} pool_class;

typedef struct free_obj {
    struct free_obj *next;
} free_obj;

typedef struct thread_list {
    free_obj *head;
    size_t n;
    size_t low; /* fewest objects held since the last trim */
} thread_list;

static pool_class classes[MAX_CLASSES];
static int n_classes;
static __thread thread_list lists[MAX_CLASSES];
static __thread void (*trim_hook)(void *);
static __thread void *trim_arg;
static __thread bool trim_due; /* the hook ran and no trim came since */

static weir_pool_class register_class(const char *name, size_t size, size_t max_free,
                                      size_t zero_len)
{
    assert(n_classes < MAX_CLASSES);
    if (size < sizeof(free_obj))
        size = sizeof(free_obj);
    classes[n_classes] = (pool_class){name, size, max_free, zero_len};
    return n_classes++;
}

weir_pool_class weir__pool_register(const char *name, size_t obj_size, size_t max_free)
{
    return register_class(name, obj_size, max_free, obj_size);
}

weir_pool_class weir__pool_register_partial(const char *name, size_t obj_size, size_t max_free,
                                            size_t zero_len)
{
    assert(zero_len > 0 && zero_len <= obj_size);
    return register_class(name, obj_size, max_free, zero_len);
}

void *weir__pool_get(weir_pool_class cls)
{
    const pool_class *pc = &classes[cls];
#ifdef WEIR_DEBUG_NOPOOL
    /* A pooled object's tail is whatever its last user left there, a fresh
     * one's would be calloc's zeros. Poison it instead, so that code reading
     * a field it never set (relying on zeros it is not promised) sees
     * garbage under the sanitizers rather than working by luck. */
    unsigned char *p = malloc(pc->size);
    if (p) {
        memset(p, 0, pc->zero_len);
        memset(p + pc->zero_len, WEIR_POOL_POISON, pc->size - pc->zero_len);
    }
    return p;
#else
    thread_list *tl = &lists[cls];
    if (tl->head) {
        free_obj *o = tl->head;
        tl->head = o->next;
        tl->n--;
        if (tl->n < tl->low)
            tl->low = tl->n;
        if (pc->zero_len)
            memset(o, 0, pc->zero_len);
        return o;
    }
    return pc->zero_len ? calloc(1, pc->size) : malloc(pc->size);
#endif
}

void weir__pool_put(weir_pool_class cls, void *obj)
{
    if (!obj)
        return;
#ifndef WEIR_DEBUG_NOPOOL
    thread_list *tl = &lists[cls];
    if (tl->n < classes[cls].max_free) {
        free_obj *o = obj;
        o->next = tl->head;
        tl->head = o;
        tl->n++;
        if (tl->n > WEIR_POOL_RESERVE && !trim_due && trim_hook) {
            trim_due = true;
            trim_hook(trim_arg);
        }
        return;
    }
#endif
    free(obj);
}

void weir__pool_set_trim_hook(void (*hook)(void *arg), void *arg)
{
    trim_hook = hook;
    trim_arg = arg;
    trim_due = false;
}

/* Gives freed heap pages back to the kernel, at most once a second for the
 * whole process: malloc_trim walks every arena under its lock. */
static void release_heap(void)
{
#ifdef __GLIBC__
    static _Atomic int64_t last_s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t prev = atomic_load_explicit(&last_s, memory_order_relaxed);
    if (prev == ts.tv_sec ||
        !atomic_compare_exchange_strong_explicit(&last_s, &prev, ts.tv_sec, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    malloc_trim(0);
#endif
}

/* Bytes worth a malloc_trim: below that, the pages stay for the next user. */
#define TRIM_RELEASE_BYTES (256 * 1024)

bool weir__pool_trim(void)
{
    bool more = false;
    size_t freed = 0;
    for (int i = 0; i < n_classes; i++) {
        thread_list *tl = &lists[i];
        size_t drop = tl->low > WEIR_POOL_RESERVE ? tl->low - WEIR_POOL_RESERVE : 0;
        if (drop) {
            /* The list is LIFO: the unused objects are at its tail. */
            free_obj **pp = &tl->head;
            for (size_t k = tl->n - drop; k > 0; k--)
                pp = &(*pp)->next;
            free_obj *o = *pp;
            *pp = NULL;
            while (o) {
                free_obj *next = o->next;
                free(o);
                o = next;
            }
            tl->n -= drop;
            freed += drop * classes[i].size;
        }
        tl->low = tl->n;
        if (tl->n > WEIR_POOL_RESERVE)
            more = true;
    }
    trim_due = more;
    if (freed >= TRIM_RELEASE_BYTES)
        release_heap();
    return more;
}

size_t weir__pool_cached_bytes(void)
{
    size_t n = 0;
    for (int i = 0; i < n_classes; i++)
        n += lists[i].n * classes[i].size;
    return n;
}

void weir__pool_thread_release(void)
{
    for (int i = 0; i < n_classes; i++) {
        free_obj *o = lists[i].head;
        while (o) {
            free_obj *next = o->next;
            free(o);
            o = next;
        }
        lists[i] = (thread_list){0};
    }
}

weir_pool_class weir__pool_register_raw(const char *name, size_t obj_size, size_t max_free)
{
    return register_class(name, obj_size, max_free, 0);
}

static weir_pool_class buf_class = -1;

__attribute__((constructor)) static void register_buf_class(void)
{
    buf_class = register_class("buf", WEIR_BUF_SIZE, 128, 0);
}

char *weir__buf_get(void)
{
    return weir__pool_get(buf_class);
}

void weir__buf_put(char *buf)
{
    weir__pool_put(buf_class, buf);
}
