/*
 * h2_mem.c - nghttp2's memory (see h2_common.h): small blocks from the
 * worker's pooled free lists (core/pool.h) instead of malloc.
 *
 * nghttp2 allocates and frees several blocks per stream (the stream, its
 * outbound items, the copied header list, received header buffers). Each
 * block carries a header with its size class, since nghttp2's free does
 * not say the size; blocks over the largest class go to malloc.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/pool.h"
#include "http/h2_common.h"

#define N_CLASSES 6
#define HDR 16 /* the class, padded so blocks keep malloc's alignment */
#define MAX_FREE 128

static const size_t class_size[N_CLASSES] = {64, 128, 256, 512, 1024, 2048};
static weir_pool_class classes[N_CLASSES];

__attribute__((constructor)) static void register_classes(void)
{
    static const char *const names[N_CLASSES] = {"h2mem64",  "h2mem128",  "h2mem256",
                                                 "h2mem512", "h2mem1024", "h2mem2048"};
    for (int i = 0; i < N_CLASSES; i++)
        classes[i] = weir__pool_register_raw(names[i], class_size[i] + HDR, MAX_FREE);
}

static void *mem_malloc(size_t size, void *user)
{
    (void)user;
    uint32_t c = 0;
    while (c < N_CLASSES && size > class_size[c])
        c++;
    if (c == N_CLASSES && size > SIZE_MAX - HDR)
        return NULL;
    unsigned char *p = c < N_CLASSES ? weir__pool_get(classes[c]) : malloc(size + HDR);
    if (!p)
        return NULL;
    memcpy(p, &c, sizeof(c));
    return p + HDR;
}

static uint32_t class_of(const void *ptr)
{
    uint32_t c;
    memcpy(&c, (const unsigned char *)ptr - HDR, sizeof(c));
    return c;
}

static void mem_free(void *ptr, void *user)
{
    (void)user;
    if (!ptr)
        return;
    uint32_t c = class_of(ptr);
    unsigned char *p = (unsigned char *)ptr - HDR;
    if (c < N_CLASSES)
        weir__pool_put(classes[c], p);
    else
        free(p);
}

static void *mem_calloc(size_t n, size_t size, void *user)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = mem_malloc(n * size, user);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *mem_realloc(void *ptr, size_t size, void *user)
{
    if (!ptr)
        return mem_malloc(size, user);
    uint32_t c = class_of(ptr);
    if (c < N_CLASSES) {
        if (size <= class_size[c])
            return ptr;
        void *q = mem_malloc(size, user);
        if (q) {
            memcpy(q, ptr, class_size[c]);
            mem_free(ptr, user);
        }
        return q;
    }
    if (size > SIZE_MAX - HDR)
        return NULL;
    unsigned char *q = realloc((unsigned char *)ptr - HDR, size + HDR);
    return q ? q + HDR : NULL;
}

nghttp2_mem *weir__h2_mem(void)
{
    static nghttp2_mem mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};
    return &mem;
}
