/*
 * pool.c - per-thread free lists (see pool.h).
 */
#include "core/pool.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CLASSES 16

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
} thread_list;

static pool_class classes[MAX_CLASSES];
static int n_classes;
static __thread thread_list lists[MAX_CLASSES];

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
        return;
    }
#endif
    free(obj);
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
