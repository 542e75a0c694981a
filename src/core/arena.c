/*
 * arena.c - bump allocator (see arena.h).
 */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE 4096

struct weir_arena_chunk {
    weir_arena_chunk *next;
    /* memory follows */
};

void weir__arena_init(weir_arena *a, char *first, size_t first_len)
{
    a->chunks = NULL;
    a->first = first;
    a->first_len = first_len;
    a->cur = first;
    a->left = first_len;
}

void *weir__arena_alloc(weir_arena *a, size_t len)
{
    len = (len + 7) & ~(size_t)7;
    if (len > a->left) {
        size_t size = len > CHUNK_SIZE - sizeof(weir_arena_chunk) ? len + sizeof(weir_arena_chunk)
                                                                  : CHUNK_SIZE;
        weir_arena_chunk *c = malloc(size);
        if (!c)
            return NULL;
        c->next = a->chunks;
        a->chunks = c;
        a->cur = (char *)(c + 1);
        a->left = size - sizeof(*c);
    }
    void *p = a->cur;
    a->cur += len;
    a->left -= len;
    return p;
}

char *weir__arena_dup(weir_arena *a, const char *s, size_t len)
{
    char *p = weir__arena_alloc(a, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

void weir__arena_reset(weir_arena *a)
{
    weir_arena_chunk *c = a->chunks;
    while (c) {
        weir_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->cur = a->first;
    a->left = a->first_len;
}
