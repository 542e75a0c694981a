/*
 * arena.h - a bump allocator for per-request memory (modified header
 * strings, rewritten targets). Everything is freed at once by reset.
 * Owned by one session; single thread.
 */
#ifndef WEIR_CORE_ARENA_H
#define WEIR_CORE_ARENA_H

#include <stddef.h>

typedef struct weir_arena_chunk weir_arena_chunk;

typedef struct weir_arena {
    weir_arena_chunk *chunks; /* malloc'd, newest first */
    char *cur;
    size_t left;
    char *first; /* caller's inline memory, used before any malloc */
    size_t first_len;
} weir_arena;

/* Starts an arena on caller-owned memory (may be NULL, 0): requests that
 * fit in it never call malloc. */
void weir__arena_init(weir_arena *a, char *first, size_t first_len);

/* Returns len bytes aligned to 8, or NULL when memory is exhausted. */
void *weir__arena_alloc(weir_arena *a, size_t len);
/* Copies len bytes; NULL on exhaustion. */
char *weir__arena_dup(weir_arena *a, const char *s, size_t len);
/* Frees every chunk and starts again on the inline memory. */
void weir__arena_reset(weir_arena *a);

#endif
